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
@click.option("--threads", default=2, show_default=True, type=int)
def main(manifests, cache, out_dir, specs, cs, n_boot, threads):
    import torch

    from ..datasets import read_manifests
    from ..patch import leaks, selection, views
    from ..patch.backbone import FrozenBackbone
    from ..patch.fused import select as select_columns
    from ..patch.train_fused import FusedTrainConfig, evaluate_config

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
    # leak probe: the original files vs the first class-blind training view of each image
    res["leak_probe"] = {"before": leaks.probe(d["orig_meta"][ok], y[ok], src[ok]),
                         "after": leaks.probe(d["view_meta"][ok, 0], y[ok], src[ok])}
    log.info("leak probe before %s after %s", res["leak_probe"]["before"], res["leak_probe"]["after"])
    feats = {"global": d["global"], "local": d["local"]}
    specs = specs or ("global:stem-head", "global:head", "global:stem-s3", "global:s4-s7",
                      "local:stem-head", "local:stem-s3", "global:stem-head+local:stem-head")
    cands = res.setdefault("candidates", {})
    for spec in specs:
        x = select_columns(feats, spec, channels)
        for C in cs:
            name = f"lr C={C} {spec}"
            t = time.time()
            r = evaluate_config(d, x, FusedTrainConfig(feature_spec=spec, C=C, n_boot=n_boot, views=cfg))
            r["seconds"] = round(time.time() - t, 1)
            cands[name] = r
            lo = r["loso"]
            log.info("%s: LOSO mean %.3f %s worst %.3f (%s) | in-pool %.3f | jpeg75 mean %.3f", name,
                     lo["mean_auc"], lo["mean_auc_ci"], lo["worst_auc"], lo["worst_source"],
                     r["in_pool"]["auc"], r["loso_jpeg75"]["mean_auc"])
            res_path.write_text(json.dumps(res, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
