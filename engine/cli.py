"""`semgir-engine` command line: a thin layer over the library.

Exit status: 0 all scored; 3 finished but some inputs failed; 1 fatal error; 2 usage error.
Only this module turns exceptions into exit codes.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from . import __version__
from .cli_options import D, cascade_options, models_option, scorer_options
from .errors import SemgirError, UnknownNameError
from .runtime.scheduler import SCHEDULERS

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
log = logging.getLogger("semgir_engine")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


class _Group(click.Group):
    """Turns our typed errors into clean messages and exit codes. Commands that live beside their library
    code (export, bench, training, serving) are imported only when they run, so the scoring runtime never
    imports the export, benchmark or calibration tooling."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kw):
        super().__init__(*args, **kw)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy and name not in self.commands:
            import importlib

            module, attr = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module, __package__), attr), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UnknownNameError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except SemgirError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FATAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, lazy={
    "serve": ".serve_cli:serve_cmd", "triton-repo": ".export.triton:triton_repo_cmd", "eval": ".patch.cli:eval_cmd",
    "eval-semgir": ".semgir.cli:eval_semgir", "cache": ".semgir.cli:cache_group", "bench": ".bench.cli:bench_cmd",
    "export": ".export.cli:export_cmd", "calibrate": ".calibration.cli:calibrate_group",
    "report": ".report.cli:report_cmd", "bench-precision": ".bench.precision:bench_precision_cmd",
    "quantize": ".calibration.cli:quantize_cmd"})
@click.version_option(__version__, prog_name="semgir-engine")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def main(verbose: int, quiet: bool) -> None:
    """Tell AI-generated images from real ones (SemGIR and patch-shuffle detectors)."""
    _setup_logging(verbose, quiet)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Output file (default: jsonl on stdout).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default=None,
              help="Output format (default: from the --out extension, else jsonl).")
@scorer_options
@click.option("--batch-size", "-b", type=click.IntRange(1), default=D.batch_size, show_default=True)
@click.option("--guidance-scale", type=float, default=D.guidance_scale, show_default=True, help="1.0 = no classifier-free guidance.")
@click.option("--scheduler", type=click.Choice(("auto",) + SCHEDULERS), default=D.scheduler,
              show_default=True, help="auto: LCM when LCM-LoRA weights are present, else DPM-Solver++.")
@click.option("--resolution", type=click.IntRange(32), default=None, help="Regeneration size in px (default 512).")
@click.option("--paper-reference", is_flag=True, help="The paper's regeneration: 50 PNDM steps, guidance 7.5.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=D.max_new_tokens, show_default=True)
@click.option("--num-beams", type=click.IntRange(1), default=D.num_beams, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip inputs already in --out.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--num-shards", type=click.IntRange(1), default=1, show_default=True,
              help="Split the inputs deterministically into N shards ...")
@click.option("--shard-id", type=click.IntRange(0), default=0, show_default=True, help="... and score shard I.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--ray", "use_ray", is_flag=True,
              help="Score on Ray Data, one scorer per actor; --out names a new directory of parquet files.")
@click.option("--ray-address", default=None, help="Ray cluster to join (auto, ray://HOST:10001); default: local.")
@click.option("--ray-actors", type=click.IntRange(1), default=None,
              help="Scorer actors with --ray (default: one per GPU on CUDA, else one per CPU, at most 8).")
@click.option("--feature-cache", default=None, metavar="DIR|auto",
              help="Keep SemGIR features (captions, regenerations, embeddings) in a cache folder and reuse them "
                   "on later runs; 'auto' = $SEMGIR_CACHE/features (else ~/.cache/semgir-engine/features) with "
                   "real weights. Off unless given.")
@click.option("--attribute", type=click.Path(exists=True), default=None, metavar="GENERATORS.json",
              help="SemGIR-A: add per-generator probabilities and the most likely generator (the generators.json "
                   "written by `train attribution`).")
@click.option("--target-fpr", type=click.FloatRange(0.0, 1.0), default=None,
              help="Patch detector: label at the threshold whose false-positive rate on the model's calibration "
                   "split is at most this (default: the model's own threshold).")
@cascade_options
@click.option("--save-regenerations", type=click.Path(file_okay=False, path_type=str), default=None, metavar="DIR",
              help="Keep SemGIR's regenerated images (PNG) in DIR, for `report` (off by default).")
def score(paths, out, fmt, method, models, backend, device, export_dir, precision, steps, seed, patch_model,
          batch_size, guidance_scale, scheduler, resolution, paper_reference, max_new_tokens, num_beams, resume,
          overwrite, num_shards, shard_id, no_progress, use_ray, ray_address, ray_actors, feature_cache, attribute,
          target_fpr, cascade_band, max_regen_fraction, save_regenerations):
    """Score images (files or folders, walked recursively); one row per input."""
    from .results import infer_format
    from .scorer import ScorerConfig
    from .batch import score_paths

    if shard_id >= num_shards:
        raise click.UsageError("--shard-id must be < --num-shards")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if paper_reference:
        from .semgir.pipeline import RegenConfig

        ref = RegenConfig.paper_reference()
        steps, guidance_scale, scheduler = ref.steps, ref.guidance_scale, ref.scheduler
    if attribute and method == "auto":
        method = "semgir"
    cfg = ScorerConfig(method=method, models=models, backend=backend, device=device, batch_size=batch_size,
                       seed=seed, steps=steps, guidance_scale=guidance_scale, scheduler=scheduler,
                       resolution=resolution, max_new_tokens=max_new_tokens, num_beams=num_beams,
                       patch_model=patch_model, feature_cache=feature_cache, attribute=attribute, export_dir=export_dir,
                       precision=precision, target_fpr=target_fpr, cascade_band=cascade_band,
                       max_regen_fraction=max_regen_fraction, save_regenerations=save_regenerations)
    if use_ray:  # -- distributed scoring on Ray Data: semgir_engine.distributed --
        from .distributed import score_with_ray

        if not out or resume or fmt not in (None, "parquet"):
            raise click.UsageError("--ray writes parquet files into a new directory: give --out DIR "
                                   "(no --resume; --format parquet or none)")
        ray_summary = score_with_ray(paths, out, cfg, address=ray_address, num_actors=ray_actors,
                                     num_shards=num_shards, shard_id=shard_id, overwrite=overwrite)
        click.echo(ray_summary.describe(), err=True)
        sys.exit(EXIT_PARTIAL if ray_summary.failed or ray_summary.missing else EXIT_OK)
    summary = score_paths(paths, cfg, out=out, fmt=infer_format(out, fmt), resume=resume, overwrite=overwrite,
                          num_shards=num_shards, shard_id=shard_id, progress=not no_progress)
    if summary.random_weights:
        which = "the rows decided by SemGIR (stage semgir)" if summary.method == "cascade" else "the scores above"
        click.secho(f"WARNING: random weights: {which} are meaningless (timing and parity only).",
                    fg="red", bold=True, err=True)
    click.echo(summary.describe(), err=True)
    if out:
        from .runmeta import write_run_meta

        write_run_meta(out, cfg, summary)
    sys.exit(EXIT_PARTIAL if summary.failed else EXIT_OK)


@main.command()
@models_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(models, as_json):
    """Versions, devices, and which weights and backends are found."""
    from .info import collect_info

    data = collect_info(models)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for section, values in data.items():
        click.echo(f"{section}:")
        for k, v in values.items():
            click.echo(f"  {k}: {v}")


@main.group(cls=_Group, lazy={"patch": ".patch.cli:train_patch", "fused": ".patch.cli:train_fused_cmd",
                              "semgir": ".semgir.cli:train_semgir_cmd",
                              "attribution": ".semgir.cli:train_attribution_cmd"})
def train():
    """Train a detector."""


if __name__ == "__main__":  # pragma: no cover
    main()
