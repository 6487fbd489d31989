"""`semgir-engine export`: a thin click layer over :func:`.onnx_export.export_components`.

Imports nothing heavy at module level (the CLI must stay light); torch and onnx load when the
command runs.
"""

from __future__ import annotations

import logging

import click


@click.command("export")
@click.option("--components", default="all", show_default=True, metavar="NAMES|all",
              help="Comma-separated component names (see `semgir-engine info`), or 'all'.")
@click.option("--models", default=None, metavar="tiny|random|DIR",
              help="SemGIR weights: 'tiny' (tests), 'random' (full-size random weights) or a directory of real "
                   "weights. Required unless only patch_cnn is exported.")
@click.option("--patch-model", default=None, metavar="PATH|NAME",
              help="Patch model that patch_cnn exports: model.json or its folder, or a shipped model's name "
                   "(default, patch-shuffle). Default: the shipped default.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Export directory (graphs, tokenizer files, manifest.json).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default="fp32", show_default=True,
              help="fp16 keeps normalisations, softmax, Resize and the VAE decoder's last layers in fp32. bf16 / int8: "
                   "the fp32 graphs, then `semgir-engine quantize` on --calibration-set (INT8 graphs for ONNX Runtime "
                   "and OpenVINO, bf16 validated on OpenVINO; components that lose too much stay fp32/bf16).")
@click.option("--calibration-set", "calib", default="aigi-train-128", show_default=True,
              help="Calibration set for --precision bf16/int8 (a JSON file or a committed set's name).")
@click.option("--opset", type=click.IntRange(18), default=18, show_default=True)
@click.option("--force", is_flag=True, help="Replace components already in --out.")
@click.option("--no-validate", is_flag=True, help="Skip the parity checks against PyTorch (not recommended).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--triton-repo", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Also write a Triton model repository for the exported components (see docs/triton.md).")
@click.option("--attribute", type=click.Path(exists=True, dir_okay=False), default=None, metavar="GENERATORS.json",
              help="Also export SemGIR-A (the generators.json of `train attribution`): the combiner and each "
                   "generator's regenerator graphs and head, under OUT/attribution/.")
def export_cmd(components, models, patch_model, out_dir, precision, calib, opset, force, no_validate, no_progress,
               triton_repo, attribute):
    """Export SemGIR components to ONNX and validate each against PyTorch."""
    from ..deps import require
    from ..semgir.sources import ModelSource
    from ..spec import Precision

    require("torch", "exporting models")
    require("onnx", "exporting models")
    require("onnxruntime", "validating exported models")
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "torch._export", "torch.export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from .onnx_export import export_attribution, export_components, resolve_names

    names = resolve_names(components)
    if models is None:
        semgir = [n for n in names if n != "patch_cnn"]
        if semgir:
            raise click.UsageError(f"--models is required to export {', '.join(semgir)} (tiny, random or a weights folder)")
        models = "tiny"  # patch_cnn does not depend on the SemGIR weights
    src = ModelSource.parse(models)
    bar = None
    if not no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(names), unit="component", desc="export")

    def started(name):
        if bar is not None:
            bar.set_postfix_str(name)

    def done(rec):
        if bar is not None:
            bar.update(1)
        v = rec.validation or {}
        click.echo(f"{rec.component:18s} {rec.precision}  {rec.size_bytes / 1e6:9.1f} MB  {rec.export_seconds:7.1f} s"
                   f"  max|diff| {v.get('max_abs_diff', float('nan')):.2e}  cosine {v.get('min_cosine', float('nan')):.6f}",
                   err=True)

    reduced = precision in ("bf16", "int8")
    try:
        graphs = Precision.FP32 if reduced else Precision(precision)  # bf16 / int8 derive from the fp32 graphs
        export_components(names, src, out_dir, graphs, opset=opset, force=force,
                          check=not no_validate, on_start=started, on_done=done, patch_model=patch_model)
        if attribute:
            export_attribution(attribute, src, out_dir, graphs, opset=opset, force=force,
                               check=not no_validate, on_start=started, on_done=done)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"wrote {len(names)} component(s) to {out_dir}", err=True)
    if reduced:  # the reduced-precision graphs come from the fp32 ones and a calibration set
        from ..calibration.cli import quantize_cmd
        from ..calibration.tensors import PATCH_COMPONENTS, PIPELINE_STAGE

        todo = [n for n in names if n in PIPELINE_STAGE or n in PATCH_COMPONENTS]
        skipped = [n for n in names if n not in todo]
        if skipped:
            click.echo(f"{', '.join(skipped)}: not run by the scoring pipeline, no calibration data: kept at fp32", err=True)
        click.get_current_context().invoke(quantize_cmd, export_dir=out_dir, components=",".join(todo), calib=calib)
    if triton_repo:
        from .triton import write_triton_repo

        models_written = write_triton_repo(out_dir, triton_repo, names, precision, force=force)
        click.echo(f"wrote {len(models_written)} Triton model(s) to {triton_repo}", err=True)
