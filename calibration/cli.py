"""`semgir-engine calibrate cascade|draw` and `semgir-engine quantize`: thin click layers over
:mod:`.cascade`, :mod:`.calibset` and :mod:`.quantize` (nothing heavy imported at module level).

``calibrate cascade`` fits the cascade's band on labelled images and keeps it beside the models;
``calibrate draw`` writes a versioned calibration set for post-training quantization."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

log = logging.getLogger(__name__)


def score_manifest_rows(rows, patch_model: str | None, batch_size: int = 64, progress: bool = True):
    """Calibrated patch-detector ``p_ai`` (and sha256) of manifest rows, through the scoring path.

    Returns ``(kept_rows, p, sha256s)``; undecodable images are left out with a warning.
    """
    import numpy as np
    from tqdm import tqdm

    from ..scorer import Scorer, ScorerConfig

    kept, ps, shas = [], [], []
    with Scorer(ScorerConfig(method="patch", patch_model=patch_model, batch_size=batch_size)) as scorer:
        results = scorer.iter_scores([str(r.path) for r in rows])
        for row, res in tqdm(zip(rows, results), total=len(rows), disable=not progress, unit="img", desc="stage 1"):
            if not res.ok:
                log.warning("skipping %s: %s", row.path, res.error)
                continue
            kept.append(row)
            ps.append(res.p_ai)
            shas.append(res.sha256)
        version, threshold = scorer.version, scorer.threshold
    return kept, np.array(ps, np.float64), shas, version, threshold


def read_reference(path: str) -> tuple[dict[str, float], float, str]:
    """SemGIR scores by sha256 from a `score --method semgir|cascade` results file, its threshold and version."""
    from ..results import iter_rows

    scores: dict[str, float] = {}
    versions = set()
    for r in iter_rows(path):
        p = r.p_semgir if r.p_semgir is not None else (r.p_ai if r.method == "semgir" else None)
        if r.ok and r.sha256 and p is not None:
            scores[r.sha256] = float(p)
            versions.add(r.model_version.split("+")[-1] if r.model_version else "?")
    if not scores:
        raise click.UsageError(f"{path} has no SemGIR scores (run `score --method semgir` on the calibration images)")
    return scores, 0.5, ",".join(sorted(versions))


@click.group("calibrate")
def calibrate_group():
    """Calibration data kept beside the models: cascade bands and quantization calibration sets."""


@calibrate_group.command("cascade")
@click.option("--manifest", "manifests", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled images (CSV: path,label,source); repeat for several.")
@click.option("--source", "sources", multiple=True, help="Only these sources (all when omitted).")
@click.option("--patch-model", default=None,
              help="The first-stage patch detector: a shipped model's name, a manifest or a folder (default: the "
                   "shipped default). Images it was trained on are left out of the fit.")
@click.option("--semgir-results", type=click.Path(exists=True, dir_okay=False), default=None,
              help="SemGIR scores of the same images (a results file): agreement is then measured against "
                   "always-regenerate itself. Without it the labels stand for a perfect SemGIR.")
@click.option("--criterion", type=click.Choice(["agreement", "balanced_accuracy"]), default="agreement",
              show_default=True)
@click.option("--tolerance", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="agreement: largest share of decisions that may differ from always-regenerate; "
                   "balanced_accuracy: largest loss of balanced accuracy.")
@click.option("--max-regen-fraction", type=click.FloatRange(0, 1), default=None,
              help="Instead of a tolerance: regenerate at most this share, losing as little as possible.")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.3, show_default=True,
              help="Share of images (stratified by source and label) kept out of the fit to report it honestly.")
@click.option("--out", type=click.Path(path_type=str), default=None,
              help="Band file, or a models folder (writes DIR/cascade.json, found by `score --models DIR`); "
                   "default: <model>.cascade.json beside the patch model's manifest.")
@click.option("--force", is_flag=True, help="Replace an existing band file.")
@click.option("--no-progress", is_flag=True)
def calibrate_cascade(manifests, sources, patch_model, semgir_results, criterion, tolerance, max_regen_fraction,
                      holdout, out, force, no_progress):
    """Fit the cascade's uncertainty band so its decisions stay within a tolerance of always-regenerate."""
    import numpy as np

    from ..cascade import band_path_for_patch_model
    from ..datasets import read_manifest, stratified_split
    from .cascade import fit_cascade_band

    from .cascade import BAND_FILE

    target = Path(out) if out else band_path_for_patch_model(patch_model)
    if target.is_dir():
        target = target / BAND_FILE
    if target.exists() and not force:
        raise click.UsageError(f"{target} exists; pass --force to replace it")
    from ..patch.detector import read_model_manifest, resolve_manifest
    from ..patch.evaluate import heldout_rows

    meta = read_model_manifest(resolve_manifest(patch_model))
    rows, data = [], {"manifests": []}
    for m in manifests:
        man = read_manifest(m)
        unseen, _what, _ = heldout_rows(man, meta)  # never fit on the images the detector's weights were fitted on
        sel = [r for r in unseen if not sources or r.source in sources]
        rows += sel
        excluded = len(man.rows) - len(unseen)
        data["manifests"].append({"path": str(man.path), "sha256": man.sha256, "rows": len(sel),
                                  "left_out_as_training_images": excluded})
        if excluded:
            log.info("%s: %d images the patch detector trained on are left out", m, excluded)
    if not rows:
        raise click.UsageError("no images selected")
    kept, p, shas, version, threshold = score_manifest_rows(rows, patch_model, progress=not no_progress)
    labels = np.array([r.label for r in kept], np.int64)
    reference, ref_p, ref_thr = "labels", None, 0.5
    if semgir_results:
        scores, ref_thr, ref_version = read_reference(semgir_results)
        have = np.array([s in scores for s in shas])
        if not have.all():
            log.warning("%d of %d calibration images have no SemGIR score in %s; they are left out",
                        int((~have).sum()), len(shas), semgir_results)
        kept = [r for r, h in zip(kept, have) if h]
        p, labels = p[have], labels[have]
        ref_p = np.array([scores[s] for s, h in zip(shas, have) if h])
        reference = f"semgir:{ref_version}"
    mask = np.zeros(len(kept), bool)
    if holdout > 0:
        _, val = stratified_split(kept, holdout, seed=0)
        held = {str(r.path) for r in val}
        mask = np.array([str(r.path) in held for r in kept])
    data.update(images=len(kept), sources=sorted({r.source for r in kept}), holdout_fraction=holdout)
    band = fit_cascade_band(p, threshold, labels=labels, reference_p=ref_p, reference_threshold=ref_thr,
                            reference=reference, criterion=criterion, tolerance=tolerance,
                            max_regen_fraction=max_regen_fraction, holdout_mask=mask if mask.any() else None,
                            first_stage_version=version, data=data)
    path = band.save(target)
    click.echo(f"cascade band {band.describe()} -> {path}", err=True)
    if band.holdout is not None:
        h = band.holdout
        click.echo(f"held out ({h.n} images): regenerates {100 * h.regen_fraction:.1f}%, agreement "
                   f"{100 * h.agreement:.2f}% with {reference}", err=True)
    click.echo(json.dumps({"lo": band.lo, "hi": band.hi}))


@calibrate_group.command("draw")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Data manifest CSV (path,label,source) to draw from.")
@click.option("--name", required=True, help="Set name (e.g. aigi-train-128).")
@click.option("--n-real", type=click.IntRange(0), default=64, show_default=True)
@click.option("--n-ai", type=click.IntRange(0), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--version", "set_version", type=click.IntRange(1), default=1, show_default=True)
@click.option("--exclude-patch-eval/--no-exclude-patch-eval", default=True, show_default=True,
              help="Leave out the images the shipped patch detectors are evaluated on (the rows their weights never "
                   "trained on), so that accuracy after quantization is measured on images calibration never saw.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder the stored paths are relative to (default: the manifest folder's parent).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
def draw_cmd(manifest, name, n_real, n_ai, seed, set_version, exclude_patch_eval, data_dir, out):
    """Draw a calibration set (paths + sha256, never the images) from a data manifest."""
    from .calibset import draw_calibration_set, patch_eval_paths

    exclude = patch_eval_paths(manifest) if exclude_patch_eval else []  # of every shipped patch model
    cs = draw_calibration_set(manifest, name, n_real=n_real, n_ai=n_ai, seed=seed, version=set_version,
                              exclude=exclude, data_dir=data_dir)
    cs.save(out)
    click.echo(f"wrote {out}: {len(cs.items)} images {cs.counts()} ({cs.ref}); {len(exclude)} evaluation images "
               "excluded", err=True)


@click.command("quantize")
@click.option("--export-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Export directory holding the fp32 graphs (`semgir-engine export`).")
@click.option("--components", required=True, metavar="NAMES", help="Comma-separated components to quantize.")
@click.option("--calibration-set", "calib", default="aigi-train-128", show_default=True,
              help="A calibration set JSON file, or the name of a committed one (calibration/sets/).")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where the set's data root lies (default: $SEMGIR_DATA_DIR, ../shared/data).")
@click.option("--backends", default="onnxruntime,openvino", show_default=True,
              help="INT8 for onnxruntime (QDQ static / dynamic) and/or openvino (nncf); openvino also validates bf16.")
@click.option("--max-images", type=click.IntRange(1), default=None,
              help="Run the SemGIR pipeline (for text encoder / UNet / VAE / head tensors) on the first N images only.")
@click.option("--steps", type=click.IntRange(1), default=4, show_default=True)
@click.option("--resolution", type=click.IntRange(32), default=None)
@click.option("--holdout", type=click.FloatRange(0.05, 0.9), default=0.25, show_default=True,
              help="Share of the calibration batches kept out of calibration and used for validation.")
def quantize_cmd(export_dir, components, calib, data_dir, backends, max_images, steps, resolution, holdout):
    """INT8 (and bf16) versions of exported components, validated against fp32 and recorded in the manifest."""
    from ..deps import require

    require("onnxruntime", "quantization")
    require("onnx", "quantization")
    from .calibset import load_calibration_set
    from .quantize import quantize_export
    from .tensors import PipelineSettings

    cs = load_calibration_set(calib)
    names = [c.strip() for c in components.split(",") if c.strip()]

    def show(r):
        p = r.parity
        click.echo(f"{r.component:28s} {r.backend:12s} {r.precision}  {'ok      ' if r.accepted else 'REJECTED'} "
                   f"cosine {p['min_cosine']:.5f}  max|diff| {p['max_abs_diff']:.3g}"
                   + ("" if r.accepted else f"  ({p['reason']})"), err=True)

    results = quantize_export(export_dir, names, cs, backends=[b.strip() for b in backends.split(",") if b.strip()],
                              settings=PipelineSettings(steps=steps, resolution=resolution, max_images=max_images),
                              data_dir=data_dir, holdout=holdout, on_result=show)
    ok = sum(r.accepted for r in results)
    click.echo(f"{ok}/{len(results)} reduced-precision graphs accepted; recorded in {export_dir}/manifest.json", err=True)
