"""Distributed scoring on Ray Data: one :class:`Scorer` per actor, rows written as parquet.

::

    read_binary_files(paths, include_paths=True)        # parallel reads, any pyarrow filesystem
      -> map_batches(_ScoreBatch, concurrency=N actors)  # models load once per actor (1 GPU each on CUDA)
      -> write_parquet(out_dir)                         # one file per block, the CLI's parquet schema

Each row is the CLI's row for the same input (``semgir-engine score --format parquet``): the same
walk picks the files (directories recursively, image extensions, stable order), the same
:class:`Scorer` decodes and scores the bytes, and ``path`` is the path as the walk produced it.
Order across output files is not defined; sort by ``path`` to compare.

Exposed as ``semgir-engine score --ray [--ray-address ADDR] --out DIR``. Without an address a
local Ray instance is started (and stopped again); with one, the job joins that cluster.
Local paths must be visible to every node at the same location (a shared filesystem); remote
URIs (``s3://``, ``gs://``) are passed to Ray as they are.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from .errors import MissingDependencyError, SemgirError
from .scorer import ScorerConfig
from .walk import in_shard, iter_inputs

log = logging.getLogger(__name__)

_REMOTE = ("s3://", "gs://", "gcs://", "abfs://", "az://", "hdfs://", "http://", "https://")


@dataclass
class RaySummary:
    out_dir: str
    inputs: int
    missing: list[str]
    rows: int
    failed: int
    seconds: float
    num_actors: int
    gpus_per_actor: float

    def describe(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        msg = (f"{self.rows - self.failed} scored, {self.failed} failed in {self.seconds:.1f}s ({rate:.2f} images/s) "
               f"on {self.num_actors} Ray actor(s) x {self.gpus_per_actor:g} GPU; parquet in {self.out_dir}")
        if self.missing:
            msg += f"\n{len(self.missing)} input(s) not found and skipped, e.g. {self.missing[0]}"
        return msg


class _ScoreBatch:
    """Ray Data callable class: builds the scorer once per actor, scores a batch of file bytes."""

    def __init__(self, config: ScorerConfig, names: dict[str, str] | None = None, torch_threads: int | None = None):
        if torch_threads:
            try:
                import torch

                torch.set_num_threads(torch_threads)
            except ImportError:  # the patch method may run without torch in some builds
                pass
        from .scorer import Scorer

        self.scorer = Scorer(config)
        self.names = names or {}

    def __call__(self, batch: dict) -> "object":
        import pyarrow as pa

        from .results import _flat, parquet_schema

        paths = [self.names.get(_norm(p), p) for p in batch["path"]]
        data = [bytes(b) for b in batch["bytes"]]
        rows = [_flat(r.to_dict()) for r in self.scorer.score(data, names=paths, batch_size=len(data) or 1)]
        return pa.Table.from_pylist(rows, schema=parquet_schema())


def _norm(path: str) -> str:
    """Ray reports local files by absolute path (without a scheme); compare on that."""
    if path.startswith("local://"):
        path = path[len("local://"):]
    return os.path.abspath(path) if not path.startswith(_REMOTE) else path


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("ray[data]", "ray", "distributed scoring (--ray)") from exc
    return ray


def list_inputs(paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike], num_shards: int = 1,
                shard_id: int = 0) -> tuple[list[str], list[str]]:
    """(files to score, missing local files) with the CLI's walk and shard rule; remote URIs pass as they are."""
    if isinstance(paths_or_dir, (str, os.PathLike)):
        paths_or_dir = [paths_or_dir]
    local = [os.fspath(p) for p in paths_or_dir if not os.fspath(p).startswith(_REMOTE)]
    remote = [os.fspath(p) for p in paths_or_dir if os.fspath(p).startswith(_REMOTE)]
    files, missing = [], []
    for p in iter_inputs(local):
        if not in_shard(p, num_shards, shard_id):
            continue
        (files if os.path.isfile(p) else missing).append(p)
    return files + remote, missing


def score_with_ray(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                   config: ScorerConfig = ScorerConfig(), *, address: str | None = None, num_actors: int | None = None,
                   batch_size: int | None = None, gpus_per_actor: float | None = None, cpus_per_actor: float = 1.0,
                   num_shards: int = 1, shard_id: int = 0, overwrite: bool = False) -> RaySummary:
    """Score every input with Ray Data and write parquet files (the CLI's columns) into ``out_dir``.

    ``address``: a Ray cluster to join ("auto", "ray://host:10001"); None starts a local instance
    unless Ray is already initialised in this process. ``num_actors``: scorer replicas (default:
    the cluster's GPUs when scoring on CUDA, else its CPUs / ``cpus_per_actor``, at most 8).
    ``gpus_per_actor``: default 1 when ``config.device`` is CUDA, else 0. Missing local files are
    skipped and reported (the plain CLI writes error rows for them); undecodable files become
    error rows, as in the CLI.
    """
    ray = _import_ray()
    if not isinstance(paths_or_dir, (str, os.PathLike)):
        paths_or_dir = list(paths_or_dir)
    files, missing = list_inputs(paths_or_dir, num_shards, shard_id)
    for m in missing:
        log.warning("%s: not found; skipped", m)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SemgirError(f"{out} exists and is not empty; pass --overwrite to replace it")
        for f in out.glob("*.parquet"):
            f.unlink()
    bs = batch_size or config.batch_size
    gpus = gpus_per_actor if gpus_per_actor is not None else (1.0 if config.device.startswith("cuda") else 0.0)
    started_here = False
    t0 = time.perf_counter()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        started_here = True
    try:
        resources = ray.cluster_resources()
        if num_actors is None:
            if gpus > 0:
                num_actors = max(1, int(resources.get("GPU", 0) // gpus))
            else:
                num_actors = max(1, min(8, int(resources.get("CPU", 1) // max(cpus_per_actor, 1e-9))))
        if gpus > 0 and resources.get("GPU", 0) < gpus:
            raise SemgirError(f"{gpus:g} GPU per actor asked for, but the Ray cluster has {resources.get('GPU', 0):g}")
        if not files:
            raise SemgirError("no input files to score")
        # the CLI's row path is the path as walked; Ray reports absolute paths: map them back
        names = {_norm(p): p for p in files if not p.startswith(_REMOTE) and _norm(p) != p}
        threads = max(1, int(cpus_per_actor)) if gpus == 0 else None
        actor_config = replace(config, batch_size=bs)
        ds = ray.data.read_binary_files(files, include_paths=True)
        ds = ds.map_batches(_ScoreBatch, batch_size=bs, concurrency=num_actors, num_cpus=cpus_per_actor,
                            num_gpus=gpus or None, batch_format="numpy",
                            fn_constructor_kwargs={"config": actor_config, "names": names, "torch_threads": threads})
        ds.write_parquet(str(out))
        rows, failed = _count(out)
    finally:
        if started_here:
            ray.shutdown()
    return RaySummary(str(out), len(files), missing, rows, failed, time.perf_counter() - t0, num_actors, gpus)


def _count(out: Path) -> tuple[int, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(out, columns=["error"])
    return table.num_rows, table.num_rows - pc.sum(pc.is_null(table["error"])).as_py()
