"""Score files and folders into a results file: walking, sharding, resume, progress (torch-free)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterable

from tqdm import tqdm

from .results import RowWriter
from .scorer import Scorer, ScorerConfig
from .walk import in_shard, iter_inputs

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    scored: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output (resume)
    seconds: float = 0.0
    method: str = ""
    model_version: str = ""
    random_weights: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        n = self.scored + self.failed
        rate = n / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.scored} scored, {self.failed} failed, {self.skipped} skipped (already done) "
                 f"in {self.seconds:.1f}s ({rate:.2f} images/s); method {self.method} ({self.model_version})"]
        if self.stage_seconds and n:
            parts = ", ".join(f"{k} {1000 * v / max(n - self.failed, 1):.1f}" for k, v in self.stage_seconds.items())
            lines.append(f"per-stage ms/image: {parts}")
        return "\n".join(lines)


def score_paths(paths: Iterable[str], config: ScorerConfig, *, out: str | None = None, fmt: str = "jsonl",
                resume: bool = False, overwrite: bool = False, num_shards: int = 1, shard_id: int = 0,
                progress: bool = True) -> RunSummary:
    """Score every input under ``paths`` and append one row each to ``out`` (stdout when None)."""
    writer = RowWriter(out, fmt, resume=resume, overwrite=overwrite)
    try:
        todo = [p for p in iter_inputs(paths) if in_shard(p, num_shards, shard_id)]
        summary = RunSummary(skipped=sum(p in writer.done for p in todo))
        todo = [p for p in todo if p not in writer.done]
        if summary.skipped:
            log.info("resuming: %d inputs already done, %d to go", summary.skipped, len(todo))
        t0 = time.perf_counter()
        with Scorer(config) as scorer:
            summary.method, summary.model_version = scorer.method, scorer.version
            summary.random_weights = scorer.random_weights
            bar = tqdm(total=len(todo), unit="img", disable=not progress, file=None, dynamic_ncols=True)
            try:
                for result in scorer.iter_scores(todo):
                    writer.write(result)
                    if result.ok:
                        summary.scored += 1
                    else:
                        summary.failed += 1
                        log.warning("%s: %s", result.path, result.error)
                    bar.update(1)
            finally:
                bar.close()
            summary.stage_seconds = dict(scorer.timer.totals)
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        writer.close()
