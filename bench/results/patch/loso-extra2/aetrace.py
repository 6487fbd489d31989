"""Zero-shot probe (issue 17): can a detector trained only on *real* photos and their reconstructions by a small
autoencoder (4x down to 8 channels, a nearest-upsampling convolutional decoder as in latent-diffusion decoders) find the fakes of
sources it never saw? The idea of "aligned" training data (Rajan et al., ICLR 2025) and AEROBLADE (CVPR 2024), with
a self-trained autoencoder because no latent-diffusion VAE weights are available here.

    python aetrace.py OUT      # about 30 min on 2 cores -> OUT/aetrace.json, per-source AUC

Training uses real_benchmarks only (real photos, no test source's images); every other source is a test source.
Both classes get the same JPEG re-encoding (random quality 65-100, or PNG) before patches are drawn.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from semgir_engine.datasets import read_manifests
from semgir_engine.images import load_image
from semgir_engine.metrics import roc_auc
from semgir_engine.patch.augment import jpeg_roundtrip

MANIFESTS = ["../shared/data/aigi/manifest.csv", "../shared/data/aigi2/manifest.csv"]
P = 64
AE_STEPS, PATCH_STEPS = 800, 1500


class AE(nn.Module):
    def __init__(self, c=(32, 64), z=8):
        super().__init__()
        enc, ch = [], 3
        for co in c:
            enc += [nn.Conv2d(ch, co, 3, 2, 1), nn.SiLU(), nn.Conv2d(co, co, 3, 1, 1), nn.SiLU()]
            ch = co
        self.enc = nn.Sequential(*enc, nn.Conv2d(ch, z, 1))
        dec, ch = [nn.Conv2d(z, c[-1], 3, 1, 1), nn.SiLU()], c[-1]
        for co in reversed(c):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, co, 3, 1, 1), nn.SiLU(),
                    nn.Conv2d(co, co, 3, 1, 1), nn.SiLU()]
            ch = co
        self.dec = nn.Sequential(*dec, nn.Conv2d(ch, 3, 3, 1, 1))

    def forward(self, x):
        return self.dec(self.enc(x))


class PatchNet(nn.Module):
    def __init__(self):
        super().__init__()
        layers, ch = [], 3
        for co, s in ((32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
            layers += [nn.Conv2d(ch, co, 3, s, 1), nn.BatchNorm2d(co), nn.ReLU()]
            ch = co
        self.f = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)

    def forward(self, x):
        return self.head(self.f(x).mean(dim=(2, 3))).squeeze(1)


def to_t(a):
    return torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1).float() / 127.5 - 1


def to_u8(t):
    return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def reencode(a, rng):
    """JPEG at a random quality 65-100 (80%), else PNG, which is lossless: the pixels stay as they are."""
    return jpeg_roundtrip(a, int(rng.integers(65, 101))) if rng.random() < 0.8 else a


def center(a, s=256):
    h, w = a.shape[:2]
    if h < s or w < s:
        a = np.pad(a, ((0, max(0, s - h)), (0, max(0, s - w)), (0, 0)))
        h, w = a.shape[:2]
    return a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]


def main(out: Path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = list(read_manifests(MANIFESTS).rows)
    train_imgs = [load_image(r.path).pixels for r in rows if r.source == "real_benchmarks"]
    print(f"{len(train_imgs)} real training images", flush=True)
    ae, t0 = AE(), time.time()
    opt = torch.optim.Adam(ae.parameters(), 2e-3)
    for step in range(AE_STEPS):
        x = torch.stack([to_t(center(im, 384)[o : o + 128, p : p + 128]) for im, o, p in
                         ((train_imgs[i], *rng.integers(0, 257, 2)) for i in rng.integers(0, len(train_imgs), 16))])
        loss = F.l1_loss(ae(x), x)
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 250 == 0:
            print(f"ae {step} l1 {loss.item():.4f} {time.time() - t0:.0f} s", flush=True)
    ae.eval()
    ae_loss = loss.item()
    # aligned pairs: each real 256 crop and its reconstruction, both re-encoded alike
    pairs = []
    with torch.no_grad():
        for im in train_imgs:
            for _ in range(4):
                h, w = im.shape[:2]
                o, p = rng.integers(0, max(1, h - 255)), rng.integers(0, max(1, w - 255))
                a = center(im[o:, p:], 256)
                r = to_u8(ae(to_t(a)[None])[0])
                s = int(rng.integers(1 << 30))
                pairs.append((reencode(a, np.random.default_rng(s)), reencode(r, np.random.default_rng(s))))
    print(f"{len(pairs)} aligned pairs, {time.time() - t0:.0f} s", flush=True)
    net = PatchNet()
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    for step in range(PATCH_STEPS):
        xs, ys = [], []
        for i in rng.integers(0, len(pairs), 32):
            o, p = rng.integers(0, 256 - P + 1, 2)
            for lab in (0, 1):
                pt = pairs[i][lab][o : o + P, p : p + P]
                xs.append(to_t(pt[:, ::-1] if rng.random() < 0.5 else pt))
                ys.append(lab)
        x, y = torch.stack(xs), torch.tensor(ys, dtype=torch.float32)
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 500 == 0:
            print(f"patch {step} bce {loss.item():.4f} {time.time() - t0:.0f} s", flush=True)
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"ae": ae.state_dict(), "patch": net.state_dict()}, out / "aetrace.pt")
    scores, labels, srcs, unreadable = [], [], [], []
    with torch.no_grad():
        for r in rows:
            if r.source == "real_benchmarks":
                continue
            try:
                a = center(load_image(r.path).pixels, 256)
            except Exception as e:  # counted and reported, never silently dropped
                unreadable.append(f"{r.path}: {e}")
                continue
            x = to_t(a).unfold(1, P, P).unfold(2, P, P).permute(1, 2, 0, 3, 4).reshape(-1, 3, P, P)
            scores.append(float(net(x).mean()))
            labels.append(int(r.label))  # Row.label: 1 = ai
            srcs.append(r.source)
    y, s, src = np.array(labels), np.array(scores), np.array(srcs)
    res = {k: roc_auc(y[src == k], s[src == k]) for k in sorted(set(srcs))}
    res = {"per_source_auc": res, "mean": float(np.mean(list(res.values()))), "worst": float(min(res.values())),
           "train_images": len(train_imgs), "unreadable": unreadable, "ae_l1_last_batch": float(ae_loss), "seconds": time.time() - t0}
    res["scores"] = [{"source": a, "label": int(b), "score": float(c)} for a, b, c in zip(src, y, s)]
    print(json.dumps({k: v for k, v in res.items() if k != "scores"}, indent=1))
    (out / "aetrace.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main(Path(sys.argv[1]))
