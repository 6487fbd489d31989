"""Click commands for SemGIR training, evaluation and the feature cache (mounted by the main CLI).

``semgir-engine train semgir``, ``train attribution``, ``eval-semgir`` and ``cache info|prune``.
They parse options and call library functions; the main CLI turns library errors into exit
codes. Importing this module is light (click only).
"""

from __future__ import annotations

import json

import click

FEATURE_CACHE_HELP = ("Feature cache folder, 'off', or 'auto' (default: $SEMGIR_CACHE/features, else "
                      "~/.cache/semgir-engine/features for real weights and off for tiny/random).")


def _fit_options(f):
    for opt in reversed([
        click.option("--epochs", type=click.IntRange(1), default=200, show_default=True),
        click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Head training batch."),
        click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate."),
        click.option("--val-fraction", type=click.FloatRange(0.0, 0.9), default=0.2, show_default=True),
        click.option("--patience", type=click.IntRange(1), default=20, show_default=True,
                     help="Early stopping: epochs without a better validation loss."),
        click.option("--hidden", type=click.IntRange(1), default=None, help="Hidden units (default 640; tiny 32)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Training seed (split, init, order)."),
    ]):
        f = opt(f)
    return f


def _feature_options(f):
    for opt in reversed([
        click.option("--models", default=None, metavar="tiny|random|DIR",
                     help="Captioner/regenerator/embedder weights: a folder of real weights (blip/ sd/ clip/), "
                          "'tiny' for tests. Default: real weights from $SEMGIR_MODELS or the HF cache."),
        click.option("--feature-cache", default="auto", show_default=True, metavar="DIR|auto|off",
                     help=FEATURE_CACHE_HELP),
        click.option("--noise-seed", type=int, default=0, show_default=True,
                     help="Regeneration noise seed (score's --seed; features depend on it)."),
        click.option("--extract-batch", type=click.IntRange(1), default=8, show_default=True,
                     help="Images per feature-extraction batch."),
        click.option("--device", default="cpu", show_default=True),
        click.option("--force", is_flag=True, help="Replace an existing checkpoint."),
        click.option("--no-progress", is_flag=True),
    ]):
        f = opt(f)
    return f


def _fit_config(epochs, batch_size, lr, val_fraction, patience, hidden, seed):
    from .train import FitConfig

    return FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction, patience=patience,
                     seed=seed, hidden=hidden)


@click.command("semgir")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled CSV (path,label,source[,generator]); label is real or ai.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/semgir", show_default=True,
              help="Writes OUT/head/semgir_head.pt and .json (a models-folder layout).")
@click.option("--steps", type=click.IntRange(1), default=4, show_default=True, help="Regeneration steps.")
@click.option("--guidance-scale", type=float, default=1.0, show_default=True)
@click.option("--scheduler", type=click.Choice(["auto", "dpm++", "lcm", "ddim", "pndm", "euler"]), default="auto",
              show_default=True)
@click.option("--resolution", type=click.IntRange(32), default=None)
@_feature_options
@_fit_options
def train_semgir_cmd(manifest, out_dir, steps, guidance_scale, scheduler, resolution, models, feature_cache,
                     noise_seed, extract_batch, device, force, no_progress, epochs, batch_size, lr, val_fraction,
                     patience, hidden, seed):
    """Train the SemGIR detection head (features are cached and reused)."""
    from .pipeline import RegenConfig
    from .train import train_semgir

    res = train_semgir(manifest, out_dir, models=models,
                       fit_cfg=_fit_config(epochs, batch_size, lr, val_fraction, patience, hidden, seed),
                       regen=RegenConfig(steps=steps, guidance_scale=guidance_scale, scheduler=scheduler,
                                         resolution=resolution),
                       noise_seed=noise_seed, feature_cache=feature_cache, batch_size=extract_batch, device=device,
                       progress=not no_progress, force=force)
    m = res.manifest
    val = m["metrics"].get("val") or m["metrics"]["train"]
    which = "val" if "val" in m["metrics"] else "train"
    click.echo(f"wrote {res.head_path}: {m['data']['used']} images ({m['data']['skipped']} skipped), "
               f"{m['training']['epochs_run']} epochs, {which} balanced accuracy {val['balanced_accuracy']:.4f}, "
               f"ROC-AUC {val['roc_auc'] if val['roc_auc'] is not None else float('nan'):.4f}, "
               f"threshold {m['threshold']:.4f}")


@click.command("attribution")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled CSV with a 'generator' column naming the generator of each AI image.")
@click.option("--generators", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Generators spec JSON (see semgir_engine.semgir.attribution).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/attribution", show_default=True,
              help="Writes attribution.pt/.json and generators.json (pass it to score --attribute).")
@_feature_options
@_fit_options
def train_attribution_cmd(manifest, generators, out_dir, models, feature_cache, noise_seed, extract_batch, device,
                          force, no_progress, epochs, batch_size, lr, val_fraction, patience, hidden, seed):
    """Train SemGIR-A: a combiner plus one head per generator (one-vs-rest)."""
    from .attribution import train_attribution

    res = train_attribution(manifest, generators, out_dir, models=models,
                            fit_cfg=_fit_config(epochs, batch_size, lr, val_fraction, patience, hidden, seed),
                            noise_seed=noise_seed, feature_cache=feature_cache, batch_size=extract_batch,
                            device=device, progress=not no_progress, force=force)
    m = res.manifest["metrics"]
    rep = m.get("val") or m["train"]
    top1 = rep.get("top1_accuracy")
    click.echo(f"wrote {res.path} and {res.spec_path}; {'val' if 'val' in m else 'train'} top-1 accuracy "
               f"{top1 if top1 is not None else float('nan'):.4f}")


@click.command("eval-semgir")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--head", required=True, type=click.Path(exists=True),
              help="A trained head: OUT of `train semgir`, OUT/head or the .pt file.")
@click.option("--attribution", type=click.Path(exists=True), default=None,
              help="Also evaluate SemGIR-A: OUT of `train attribution` or its generators.json.")
@click.option("--models", default=None, metavar="tiny|random|DIR",
              help="Weights for the features (default: the ones the head was trained with).")
@click.option("--source", "sources", multiple=True, help="Only this manifest source (repeatable).")
@click.option("--feature-cache", default="auto", show_default=True, metavar="DIR|auto|off", help=FEATURE_CACHE_HELP)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write metrics.json and summary.md here.")
@click.option("--n-boot", type=click.IntRange(0), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--extract-batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full metrics as JSON.")
@click.option("--no-progress", is_flag=True)
def eval_semgir(manifest, head, attribution, models, sources, feature_cache, out_dir, n_boot, seed, extract_batch,
                device, as_json, no_progress):
    """Evaluate the SemGIR head (and SemGIR-A): metrics with counts and 95% bootstrap intervals."""
    from .evaluate import evaluate_semgir, markdown_summary, write_report
    from .train import jsonable

    res = evaluate_semgir(manifest, head, attribution=attribution, models=models, sources=tuple(sources),
                          feature_cache=feature_cache, batch_size=extract_batch, device=device, n_boot=n_boot,
                          seed=seed, progress=not no_progress)
    click.echo(json.dumps(jsonable(res), indent=2) if as_json else markdown_summary(res))
    if out_dir:
        click.echo(f"wrote {write_report(res, out_dir)}", err=True)


@click.group("cache")
def cache_group():
    """The persistent SemGIR feature cache (captions, regenerated images, CLIP embeddings)."""


def _cache_dir_option(f):
    return click.option("--dir", "root", default=None, metavar="DIR",
                        help="Cache folder (default: $SEMGIR_CACHE/features or ~/.cache/semgir-engine/features).")(f)


@cache_group.command("info")
@_cache_dir_option
@click.option("--json", "as_json", is_flag=True)
def cache_info(root, as_json):
    """Where the cache is, how big, and which feature versions it holds."""
    from ..featcache import FeatureCache

    with FeatureCache(root) as cache:
        data = cache.info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{data['root']}: {data['entries']} entries, {data['bytes'] / 1e6:.1f} MB")
    for v in data["versions"]:
        d = v["description"] or {}
        r = d.get("regenerator", {})
        w = (r.get("weights") or {})
        what = (f"{w.get('size', '?')}{'/seed' + str(w['seed']) if 'seed' in w else ''} "
                f"{r.get('scheduler', '?')}{r.get('steps', '?')} g{r.get('guidance_scale', '?')} "
                f"{r.get('resolution', '?')}px noise-seed {d.get('noise_seed', '?')}")
        click.echo(f"  {v['version']}  {v['entries']:6d} entries  {v['bytes'] / 1e6:8.1f} MB  "
                   f"last used {v['last_used']}  {what}")


@cache_group.command("prune")
@_cache_dir_option
@click.option("--older-than", "older_than", type=click.FloatRange(0), default=None, metavar="DAYS",
              help="Remove entries not used for DAYS days.")
@click.option("--version", "version", default=None, metavar="KEY", help="Remove a feature version (key or prefix).")
@click.option("--verify", is_flag=True, help="Re-hash every entry and remove the bad ones.")
def cache_prune(root, older_than, version, verify):
    """Remove old entries, a feature version, bad entries (--verify) and files left by interrupted writes."""
    from ..featcache import FeatureCache

    with FeatureCache(root) as cache:
        res = cache.prune(older_than_days=older_than, version=version, verify=verify)
    click.echo(f"removed {res['removed']} entries, {res['corrupt']} bad entries, {res['stray_files']} stray files")
