"""End-to-end scoring throughput: the paper's regeneration against the engine's few-step defaults.

Each configuration scores the same images with a fresh :class:`Scorer`; one warm-up image first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..scorer import Scorer, ScorerConfig
from ..semgir.pipeline import RegenConfig

log = logging.getLogger(__name__)


@dataclass
class E2ERow:
    label: str
    config: dict
    images: int
    seconds: float
    stage_ms_per_image: dict
    p_ai: list
    captions: list = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["images_per_s"] = self.images_per_s
        return d


def standard_configs(models: str, resolution: int, steps: int, export_dir: str | None,
                     include_reference: bool = True) -> list[tuple[str, ScorerConfig]]:
    base = ScorerConfig(method="semgir", models=models, resolution=resolution, batch_size=1)
    out = []
    if include_reference:
        ref = RegenConfig.paper_reference()
        out.append((f"paper reference: torch fp32, {ref.steps} PNDM steps, CFG {ref.guidance_scale:g}",
                    replace(base, backend="torch", steps=ref.steps, guidance_scale=ref.guidance_scale,
                            scheduler=ref.scheduler)))
    out.append((f"few-step: torch fp32, {steps} DPM++ steps, no CFG", replace(base, backend="torch", steps=steps)))
    if export_dir:
        out.append((f"few-step: onnxruntime fp32, {steps} DPM++ steps, no CFG",
                    replace(base, backend="onnxruntime", steps=steps, export_dir=export_dir)))
    return out


def bench_e2e(images: list[np.ndarray], configs: list[tuple[str, ScorerConfig]], warmup: int = 1,
              batch_size: int | None = None) -> list[E2ERow]:
    rows = []
    for label, cfg in configs:
        if batch_size:
            cfg = replace(cfg, batch_size=batch_size)
        log.info("end to end: %s", label)
        with Scorer(cfg) as scorer:
            if warmup:
                scorer.score(images[:warmup])
            scorer.timer.totals.clear()
            t0 = time.perf_counter()
            res = scorer.score(images)
            secs = time.perf_counter() - t0
            failed = [r for r in res if not r.ok]
            if failed:
                raise RuntimeError(f"{label}: {failed[0].error}")
            stages = {k: 1000.0 * v / len(images) for k, v in scorer.timer.totals.items()}
        cfg_d = {k: v for k, v in cfg.__dict__.items() if k in (
            "backend", "steps", "guidance_scale", "scheduler", "resolution", "models", "batch_size")}
        rows.append(E2ERow(label, cfg_d, len(images), secs, stages, [r.p_ai for r in res], [r.caption for r in res]))
        log.info("  %.2f s/image", secs / len(images))
    return rows
