"""Evaluate trained SemGIR heads on a labelled manifest (``semgir-engine eval-semgir``).

Detection: accuracy, balanced accuracy, ROC-AUC and AP at the head's threshold, overall, per
source and per generator (that generator's AI images against all real images), each with counts
and 95% bootstrap intervals (:mod:`semgir_engine.metrics`). Attribution (optional): the same
one-vs-rest metrics per generator plus top-1 accuracy and a confusion matrix.

Features are computed exactly as for training: the captioning and regeneration settings and the
noise seed are read from the head's manifest (``--models`` may point the same architecture at
other weights, e.g. when a head trained on one folder is evaluated on a copy). Features come
through the persistent cache, so evaluating the training images again costs only the heads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import SemgirError
from .pipeline import RegenConfig

log = logging.getLogger(__name__)


def _regen_from(components: dict) -> tuple[RegenConfig, int, int, int]:
    r = components.get("regenerator") or {}
    c = components.get("captioner") or {}
    regen = RegenConfig(steps=int(r.get("steps", 4)), guidance_scale=float(r.get("guidance_scale", 1.0)),
                        scheduler=str(r.get("scheduler", "auto")), resolution=r.get("resolution"))
    g = c.get("generation") or {}
    return (regen, int(components.get("noise_seed", 0)), int(g.get("max_length", 21)) - 1,
            int(g.get("num_beams", 1)))


def evaluate_semgir(manifest: str | os.PathLike, head: str | os.PathLike, *, attribution: str | os.PathLike | None = None,
                    models: str | None = None, sources: tuple[str, ...] = (), feature_cache: str | None = "auto",
                    batch_size: int = 8, device: str = "cpu", n_boot: int = 1000, seed: int = 0,
                    progress: bool = True) -> dict:
    """Metrics of a trained detection head (and attribution heads) on ``manifest``."""
    from ..datasets import read_manifest
    from ..metrics import binary_report
    from .attribution import AttributionData, attribution_report, row_generator, torch_attribution
    from .extract import TorchFeatureStages, extract_rows, feature_version_of, open_cache
    from .features import Branch
    from .sources import ModelSource
    from .train import head_probabilities, load_head

    head_model, head_man = load_head(head)
    components = head_man.get("components") or {}
    regen, noise_seed, max_new_tokens, num_beams = _regen_from(components)
    models = models if models is not None else head_man.get("models_arg")
    src = ModelSource.parse(models, seed=0)
    data = read_manifest(manifest)
    rows = data.select(sources or None)
    stages = TorchFeatureStages(src, regen, max_new_tokens, num_beams, device)
    if stages.dim != head_model.dim:
        raise SemgirError(f"the head expects {head_model.dim}-d CLIP embeddings but these models give {stages.dim}")
    version = feature_version_of(stages, noise_seed)
    if head_man.get("feature_key") and head_man["feature_key"] != version.key:
        log.warning("these features (key %s) differ from the ones the head was trained on (%s): other weights, "
                    "library versions or device", version.key[:12], head_man["feature_key"][:12])
    branches = [Branch("detect", version, stages.regenerate)]
    attributor = None
    if attribution is not None:
        attributor = torch_attribution(attribution, device)
        if attributor.base_key != version.base_key():
            log.warning("the attribution heads were trained on other captioner/embedder features")
        branches += attributor.branches(version)
    cache = open_cache(feature_cache, src.random_weights)
    try:
        ext = extract_rows(stages, branches, rows, noise_seed, cache, batch_size=batch_size, progress=progress,
                           need_text=attributor is not None)
    finally:
        if cache is not None:
            cache.close()
    if not ext.rows:
        raise SemgirError(f"no usable images in {manifest} ({len(ext.skipped)} skipped)")
    y = ext.labels()
    p = head_probabilities(head_model, ext.detection(0))
    thr = float(head_man.get("threshold", 0.5))
    rep = lambda yy, pp: binary_report(yy, pp, thr, n_boot=n_boot, seed=seed).to_dict()  # noqa: E731
    det: dict = {"head": str(head), "head_version": head_man.get("version"), "threshold": thr,
                 "feature_key": version.key, "feature_key_matches_head": head_man.get("feature_key") == version.key,
                 "overall": rep(y, p), "per_source": {}, "per_generator": {}}
    src_names = np.array([r.source for r in ext.rows])
    for s in sorted(set(src_names)):
        m = src_names == s
        det["per_source"][s] = rep(y[m], p[m])
    gens = np.array([row_generator(r) or "" for r in ext.rows])
    real = y == 0
    for g in sorted(set(gens[y == 1])):
        m = real | ((y == 1) & (gens == g))
        det["per_generator"][g or "(unnamed)"] = rep(y[m], p[m])
    out = {"manifest": str(data.path), "manifest_sha256": data.sha256, "rows": len(rows), "used": len(ext.rows),
           "skipped": [{"path": a, "reason": b} for a, b in ext.skipped], "detection": det}
    if attributor is not None:
        names = attributor.names
        targets = np.array([names.index(g) if g in names else -1 for g in gens], np.int64)
        d = stages.dim
        adata = AttributionData(
            image=np.stack([f.emb_image for f in ext.features[0]]),
            text=np.stack([f.emb_text for f in ext.features[0]]),
            regen=np.stack([np.stack([f.emb_regen for f in fb]) for fb in ext.features[1:]]).reshape(len(names), -1, d),
            targets=targets, rows=ext.rows, skipped=[])
        out["attribution"] = attribution_report(attributor, adata, attributor.thresholds, n_boot=n_boot,
                                                seed=seed)
    return out


def markdown_summary(result: dict) -> str:
    """A short human-readable table of :func:`evaluate_semgir`'s result."""

    def fmt(r: dict) -> str:
        def ci(k):
            lo, hi = r.get(f"{k}_ci") or (None, None)
            v = r.get(k)
            if v is None:
                return "n/a"
            return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")
        return (f"| {r['n']} | {r['n_real']} | {r['n_ai']} | {ci('accuracy')} | {ci('balanced_accuracy')} | "
                f"{ci('roc_auc')} | {ci('average_precision')} |")

    head = "| set | n | neg | pos | accuracy | balanced acc. | ROC-AUC | AP |\n|---|---|---|---|---|---|---|---|"
    det = result["detection"]
    lines = [f"SemGIR detection ({det['head_version']}, threshold {det['threshold']:.3f}); "
             f"{result['used']} of {result['rows']} images used", "", head, "| all " + fmt(det["overall"])]
    lines += [f"| source {s} " + fmt(r) for s, r in det["per_source"].items()]
    lines += [f"| generator {g} vs real " + fmt(r) for g, r in det["per_generator"].items()]
    if "attribution" in result:
        a = result["attribution"]
        top1 = a.get("top1_accuracy")
        lines += ["", f"SemGIR-A attribution: top-1 accuracy {top1:.3f} on {a['n_attributable']} attributable images"
                  if top1 is not None else "SemGIR-A attribution: no attributable images", "", head]
        lines += [f"| made by {g} " + fmt(r) for g, r in a["per_generator"].items()]
    return "\n".join(lines)


def write_report(result: dict, out_dir: str | os.PathLike) -> Path:
    import json

    from .train import jsonable

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(jsonable(result), indent=2))
    (d / "summary.md").write_text(markdown_summary(result) + "\n")
    return d / "metrics.json"
