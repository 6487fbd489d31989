"""Leave-one-source-out model selection for the default detector (issue 17), on cached views.

    python -m semgir_engine.bench.patch_loso --manifest ../shared/data/aigi/manifest.csv \
        --manifest ../shared/data/aigi2/manifest.csv --cache /tmp/feat17 --out bench/results/patch/loso

Step 1 (``views.build``) decodes every image once, makes the class-blind training views and the
test views and caches frozen EfficientNet-Lite0 features at two scales. Step 2 measures the
metadata leak probe on the original files and on the training views. Step 3 fits candidate heads
(logistic regression on subsets of the frozen features; optionally the patch-shuffle CNN on the
cached crops, and their fusion) and scores each by LOSO; the in-pool random split is reported next
to it. Everything goes to ``OUT/loso.json`` and ``OUT/loso.md``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click
import numpy as np

log = logging.getLogger(__name__)


@click.command()
@click.option("--manifest", "manifests", multiple=True, required=True, type=click.Path(exists=True))
@click.option("--cache", required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--spec", "specs", multiple=True, help="Feature subsets to try (default: a fixed list).")
@click.option("--C", "cs", multiple=True, type=float, default=(0.05,), show_default=True)
@click.option("--n-boot", default=500, show_default=True, type=int)
@click.option("--patch-cnn-steps", default=0, show_default=True, type=int,
              help="Also score the patch-shuffle CNN (tiny preset) by LOSO, trained this many steps per fold.")
@click.option("--probe-only", is_flag=True, help="Only (re)compute the leak probe.")
@click.option("--full/--quick", default=False, show_default=True,
              help="--quick: LOSO only (selection); --full: also the 5%-FPR and JPEG-q75 LOSO and the in-pool split.")
@click.option("--threads", default=2, show_default=True, type=int)
def main(manifests, cache, out_dir, specs, cs, n_boot, patch_cnn_steps, probe_only, full, threads):
    import torch

    from ..datasets import read_manifests
    from ..patch import leaks, selection, views
    from ..patch.backbone import FrozenBackbone
    from ..patch.fused import select as select_columns
    from ..patch.train_fused import FusedTrainConfig, evaluate_config, lr_fitter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(threads)
    m = read_manifests(list(manifests))
    cfg = views.ViewConfig()
    d = views.load(views.build(m, cache, cfg))
    ok, y, src = d["ok"], d["labels"].astype(int), d["sources"].astype(str)
    channels = FrozenBackbone(cfg.backbone, pretrained=False).channels
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "loso.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {}
    res["data"] = {"manifests": [str(p) for p in manifests], "sha256": m.sha256, "counts": m.counts(),
                   "views": cfg.to_dict()}
    # leak probe: the original files vs the first class-blind training view of each image, whose
    # geometry is the crop's (leaks.as_seen: only the crop reaches the network)
    after = d["view_meta"][ok, 0].copy()
    after[:, leaks.FEATURES.index("log_pixels")] = np.log(cfg.neutralise.crop ** 2)
    after[:, leaks.FEATURES.index("aspect")] = 1.0
    res["leak_probe"] = {"before": leaks.probe(d["orig_meta"][ok], y[ok], src[ok]),
                         "after": leaks.probe(after, y[ok], src[ok]),
                         "after_without_bytes_per_pixel": leaks.probe(
                             np.delete(after, leaks.FEATURES.index("bytes_per_pixel"), axis=1), y[ok], src[ok])}
    log.info("leak probe before %s after %s", res["leak_probe"]["before"], res["leak_probe"]["after"])
    if probe_only:
        res_path.write_text(json.dumps(res, indent=1, default=float) + "\n")
        (out / "loso.md").write_text(markdown(res))
        return
    feats = {"global": d["global"], "local": d["local"]}
    specs = specs or ("global:stem-head", "global:head", "global:stem-s3", "global:s4-s7",
                      "local:stem-head", "local:stem-s3", "global:stem-head+local:stem-head")
    cands = res.setdefault("candidates", {})
    for spec in specs:
        x = select_columns(feats, spec, channels)
        for C in cs:
            name = f"lr C={C} {spec}"
            t = time.time()
            fcfg = FusedTrainConfig(feature_spec=spec, C=C, n_boot=n_boot, views=cfg)
            if full:
                r = evaluate_config(d, x, fcfg)
            else:
                r = {"loso": selection.loso(y, src, ok, lr_fitter(x, y, cfg.n_train, cfg.n_train, C), n_boot=n_boot)}
            r["seconds"] = round(time.time() - t, 1)
            cands[name] = r
            lo = r["loso"]
            log.info("%s: LOSO mean %.3f %s worst %.3f (%s) %s", name, lo["mean_auc"], lo["mean_auc_ci"],
                     lo["worst_auc"], lo["worst_source"],
                     {s: round(v["auc"], 3) for s, v in lo["sources"].items() if v["auc"] is not None})
            res_path.write_text(json.dumps(res, indent=1, default=float) + "\n")
    if patch_cnn_steps:
        t = time.time()
        crops = np.load(d["crops_path"], mmap_mode="r")
        fit = patch_cnn_fitter(crops, y, cfg.n_train, cfg.n_train, patch_cnn_steps)
        r = {"loso": selection.loso(y, src, ok, fit, n_boot=n_boot),
             "in_pool": selection.in_pool(y, src, ok, fit, n_boot=n_boot), "seconds": round(time.time() - t, 1)}
        cands[f"patch-shuffle CNN tiny, {patch_cnn_steps} steps x 32"] = r
        log.info("patch CNN: LOSO mean %.3f worst %.3f (%s) | in-pool %.3f", r["loso"]["mean_auc"],
                 r["loso"]["worst_auc"], r["loso"]["worst_source"], r["in_pool"]["auc"])
        res_path.write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / "loso.md").write_text(markdown(res))


def markdown(res: dict) -> str:
    """Selection table (every candidate, sorted by LOSO mean AUC) and the leak probe."""
    cands = res.get("candidates", {})
    srcs = sorted({s for c in cands.values() for s in c["loso"]["sources"]})
    two = [s for s in srcs if any(c["loso"]["sources"].get(s, {}).get("auc") is not None for c in cands.values())]
    one = [s for s in srcs if s not in two]
    lines = ["Candidates scored by leave-one-source-out (ROC-AUC of each held-out source; real-only sources: "
             "FPR at the fold's balanced-accuracy threshold). Mean and worst with bootstrap 95% intervals.", "",
             "| candidate | LOSO mean AUC | worst (source) | " + " | ".join(two) + " | " +
             " | ".join(f"{s} FPR" for s in one) + " | in-pool AUC (not used) |",
             "|---" * (4 + len(two) + len(one)) + "|"]
    for name, c in sorted(cands.items(), key=lambda kv: -kv[1]["loso"]["mean_auc"]):
        lo = c["loso"]
        per = " | ".join(f"{lo['sources'][s]['auc']:.3f}" if s in lo["sources"] else "-" for s in two)
        fpr = " | ".join(f"{lo['sources'][s]['fpr']:.3f}" if s in lo["sources"] else "-" for s in one)
        ip = c.get("in_pool", {}).get("auc")
        lines.append(f"| {name} | {lo['mean_auc']:.3f} [{lo['mean_auc_ci'][0]:.2f}, {lo['mean_auc_ci'][1]:.2f}] | "
                     f"{lo['worst_auc']:.3f} [{lo['worst_auc_ci'][0]:.2f}, {lo['worst_auc_ci'][1]:.2f}] "
                     f"({lo['worst_source']}) | {per} | {fpr} | {'-' if ip is None else f'{ip:.3f}'} |")
    lp = res.get("leak_probe")
    if lp:
        keys = [k for k in ("before", "after", "after_without_bytes_per_pixel") if k in lp]
        lines += ["", "Metadata-only leak probe (5-fold cross-validated ROC-AUC of a logistic regression on "
                  f"{', '.join(lp['before']['features'])}; 0.5 = no leak): original files (before) vs the "
                  "class-blind training views as the network sees them (after).", "",
                  "| source | " + " | ".join(keys) + " |", "|---" * (1 + len(keys)) + "|"]
        for s in list(lp["before"]["per_source"]) + ["pooled"]:
            vals = [lp[k]["pooled"] if s == "pooled" else lp[k]["per_source"].get(s) for k in keys]
            lines.append(f"| {s} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def patch_cnn_fitter(crops, labels, n_train: int, test_view: int, steps: int):
    """A selection fitter that trains the patch-shuffle CNN on the fit rows' class-blind views."""
    import torch

    from ..patch.preprocess import PreprocessConfig, normalize
    from ..patch.train import fit_on_views

    def fit(rows, weights, _cal):
        model = fit_on_views(crops, rows, range(n_train), labels, weights, steps=steps)

        def score(r):
            out = []
            with torch.inference_mode():
                for i in range(0, len(r), 64):
                    x = np.stack([normalize(np.asarray(crops[j, test_view]), PreprocessConfig()) for j in r[i : i + 64]])
                    out.append(model.predict_logits(torch.from_numpy(x)).numpy())
            return np.concatenate(out).astype(np.float64)

        return score

    return fit


if __name__ == "__main__":
    main()
