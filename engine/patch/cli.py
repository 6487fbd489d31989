"""Click commands of the patch-shuffle detector, mounted by the main CLI.

``train_patch`` becomes ``semgir-engine train patch`` and ``eval_cmd`` becomes
``semgir-engine eval``. They only parse options and call library functions; library errors
(:class:`semgir_engine.errors.SemgirError`) become click errors with exit code 1 here.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import click

from ..errors import SemgirError

DEFAULT_RUNS = Path("runs") / "patch"


@contextmanager
def _as_click_errors():
    try:
        yield
    except SemgirError as exc:
        raise click.ClickException(str(exc)) from exc


def _logging(verbose: bool) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command("patch")
@click.option("--manifest", "manifest", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled data manifest CSV (path,label,source,...).")
@click.option("--holdout-source", "holdout", multiple=True,
              help="Leave this source out of training (repeatable); evaluate on it later with `eval`.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default runs/patch/<preset>[-minus-<holdout>]).")
@click.option("--preset", default="tiny", show_default=True, help="Architecture preset (tiny, small, paper, test).")
@click.option("--epochs", default=12, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--val-fraction", default=0.15, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=2, show_default=True, type=int, help="torch CPU threads.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--no-augment", is_flag=True, help="Disable the anti-leak augmentations (for ablations).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("-v", "--verbose", is_flag=True)
def train_patch(manifest, holdout, out_dir, preset, epochs, batch_size, lr, val_fraction, seed, threads,
                resume, no_augment, progress, verbose):
    """Train a patch-shuffle detector; writes checkpoint.pt, model.pt and model.json."""
    _logging(verbose)
    from .augment import NO_AUGMENT, AugmentConfig
    from .train import TrainConfig, train

    with _as_click_errors():
        from .model import get_config

        get_config(preset)  # unknown names fail fast, listing the valid ones
        cfg = TrainConfig(preset=preset, epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                          seed=seed, holdout_sources=tuple(holdout), threads=threads,
                          augment=NO_AUGMENT if no_augment else AugmentConfig())
        if out_dir is None:
            out_dir = DEFAULT_RUNS / (preset + ("-minus-" + "-".join(holdout) if holdout else ""))
        res = train(cfg, manifest, out_dir, resume=resume, progress=progress)
    v = res.manifest["validation"]
    click.echo(f"wrote {res.model_path} and {res.manifest_path}: val ROC-AUC {v['roc_auc']:.4f}, "
               f"threshold {res.manifest['threshold']:.4f}, temperature {res.manifest['temperature']:.3f}")


@click.command("eval")
@click.option("--manifest", "manifest", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled data manifest CSV (repeatable: one combined view over several).")
@click.option("--source", "sources", multiple=True, help="Evaluate only this source (repeatable; default all).")
@click.option("--model", "model", default=None, metavar="PATH|NAME",
              help="model.json / model.pt / run folder, or a shipped model's name (default, patch-shuffle); "
                   "default: the shipped default.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write metrics.json, roc.png and summary.md here.")
@click.option("--condition", "conditions", multiple=True, type=click.Choice(["clean", "jpeg75", "resize0.5"]),
              help="Perturbations to test (repeatable; default all three).")
@click.option("--k-shuffles", default=8, show_default=True, type=int,
              help="Also report the mean logit over K seeded patch shuffles.")
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap resamples for the 95% CIs.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Fit and report the residual-spectrum logistic-regression baseline on the same split.")
@click.option("--target-fpr", type=click.FloatRange(0.0, 1.0), default=None,
              help="Decide at the threshold whose false-positive rate on the model's calibration split is "
                   "at most this (default: the model's own threshold).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("-v", "--verbose", is_flag=True)
def eval_cmd(manifest, sources, model, out_dir, conditions, k_shuffles, n_boot, baseline, target_fpr, seed, threads,
             verbose):
    """Per-source metrics with 95% bootstrap CIs, calibration (reliability, ECE, FPR/TPR at the threshold),
    robustness, K-shuffle and baseline comparison, on every row the model did not train on."""
    _logging(verbose)
    from .evaluate import CONDITIONS, EvalConfig, evaluate, markdown_summary

    cfg = EvalConfig(sources=tuple(sources), conditions=tuple(conditions) or CONDITIONS, k_shuffles=k_shuffles,
                     n_boot=n_boot, seed=seed, baseline=baseline, threads=threads, target_fpr=target_fpr)
    with _as_click_errors():
        result = evaluate(model, manifest[0] if len(manifest) == 1 else list(manifest), out_dir, cfg)
    click.echo(markdown_summary(result))
    if out_dir:
        click.echo(f"wrote {Path(out_dir) / 'metrics.json'}")


@click.command("fused")
@click.option("--manifest", "manifests", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled data manifest CSV (repeatable: trained on the combined view of all of them).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=str(DEFAULT_RUNS.parent / "fused"),
              show_default=True)
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=str(DEFAULT_RUNS.parent / "views"),
              show_default=True, help="View/feature cache (decoded once, reused by every run on the same data).")
@click.option("--features", "feature_spec", default="global:s4-head", show_default=True,
              help="Backbone stage means feeding the head: SCALE:STAGE[-STAGE][+...], scales global|local, "
                   "stages stem, s1..s7, head.")
@click.option("--C", "C", default=3e-5, show_default=True, type=float, help="Inverse L2 strength of the head.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--n-boot", default=1000, show_default=True, type=int)
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("-v", "--verbose", is_flag=True)
def train_fused_cmd(manifests, out_dir, cache_dir, feature_spec, C, seed, n_boot, threads, progress, verbose):
    """Train the fused detector (frozen EfficientNet-Lite0 + linear head) on class-blind views of every
    source, with its leave-one-source-out figures, calibration and operating points in model.json."""
    _logging(verbose)
    import torch

    from .train_fused import FusedTrainConfig, card_markdown, train_fused

    torch.set_num_threads(threads)
    with _as_click_errors():
        meta = train_fused(list(manifests), out_dir, FusedTrainConfig(feature_spec=feature_spec, C=C, seed=seed,
                                                                      n_boot=n_boot),
                           cache_dir=cache_dir, progress=progress)
    (Path(out_dir) / "card.md").write_text(card_markdown(meta))
    click.echo(card_markdown(meta))
