"""Click options shared by the commands that build a :class:`..scorer.ScorerConfig` (`score`, `serve`).

One definition per option, so the commands cannot drift apart in names, choices or help text.
"""

from __future__ import annotations

import click

from .scorer import BACKENDS, METHODS, PRECISIONS, ScorerConfig

D = ScorerConfig()  # one set of defaults: the API's


def models_option(f):
    return click.option(
        "--models", default=None, metavar="tiny|random|DIR",
        help="SemGIR models: 'tiny' (tests), 'random' (full-size, random weights: timing only) or a "
             "directory of real weights. Default: real weights from $SEMGIR_MODELS or the HF cache.")(f)


def scorer_options(f):
    """--method --models --backend --device --export-dir --precision --steps --seed --patch-model."""
    options = [
        click.option("--method", type=click.Choice(METHODS), default=D.method, show_default=True,
                     help="auto: SemGIR when its models are given or found, else the shipped patch detector."),
        models_option,
        click.option("--backend", type=click.Choice(BACKENDS), default=D.backend, show_default=True),
        click.option("--device", default=D.device, show_default=True,
                     help="cpu, cuda or cuda:N (refused when that GPU is not there)."),
        click.option("--export-dir", type=click.Path(exists=True, file_okay=False, path_type=str), default=None,
                     help="ONNX export (`semgir-engine export`) for --backend onnxruntime|tensorrt|auto: the "
                          "SemGIR pipeline, or patch_cnn for the patch detector."),
        click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                     help="Exported graphs to run: onnxruntime defaults to fp32, tensorrt to fp16 engines. A "
                          "precision that was not exported falls back to the one that was, with a warning. bf16 "
                          "runs on openvino; int8 needs `semgir-engine quantize` (onnxruntime, openvino, tensorrt)."),
        click.option("--steps", type=click.IntRange(1), default=D.steps, show_default=True, help="Regeneration steps."),
        click.option("--seed", type=int, default=D.seed, show_default=True),
        click.option("--patch-model", default=None, metavar="PATH|NAME",
                     help="Patch-detector model: model.json or its folder, or a shipped model's name "
                          "(default, patch-shuffle). Default: the shipped default."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _fraction(_ctx, _param, value):
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter("a fraction in [0, 1]")
    return value


def cascade_options(f):
    """--cascade-band --max-regen-fraction (method cascade: semgir_engine.cascade)."""
    options = [
        click.option("--cascade-band", default=None, metavar="LO,HI|BAND.json",
                     help="Cascade: regenerate the images whose patch-detector p_ai is in [LO, HI] (default: the "
                          "band fitted by `calibrate cascade`, found beside the models)."),
        click.option("--max-regen-fraction", type=float, default=None, callback=_fraction, metavar="F",
                     help="Cascade: regenerate at most this share of the images (the most uncertain first)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f
