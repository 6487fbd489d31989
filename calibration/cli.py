"""`semgir-engine calibration draw` and `semgir-engine quantize`: thin click layers over
:mod:`.calibset` and :mod:`.quantize` (nothing heavy imported at module level)."""

from __future__ import annotations

import click


@click.group("calibration")
def calibration_group():
    """Calibration sets for post-training quantization."""


@calibration_group.command("draw")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Data manifest CSV (path,label,source) to draw from.")
@click.option("--name", required=True, help="Set name (e.g. aigi-train-128).")
@click.option("--n-real", type=click.IntRange(0), default=64, show_default=True)
@click.option("--n-ai", type=click.IntRange(0), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--version", "set_version", type=click.IntRange(1), default=1, show_default=True)
@click.option("--exclude-patch-eval/--no-exclude-patch-eval", default=True, show_default=True,
              help="Leave out the images the shipped patch detector is evaluated on (its validation split and "
                   "held-out sources), so that accuracy after quantization is measured on unseen images.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder the stored paths are relative to (default: the manifest folder's parent).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
def draw_cmd(manifest, name, n_real, n_ai, seed, set_version, exclude_patch_eval, data_dir, out):
    """Draw a calibration set (paths + sha256, never the images) from a data manifest."""
    from .calibset import draw_calibration_set, patch_eval_paths

    exclude = patch_eval_paths(manifest) if exclude_patch_eval else []
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
