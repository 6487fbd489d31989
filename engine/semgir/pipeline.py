"""The SemGIR detection pipeline, backend-agnostic (torch-free orchestration).

decode -> caption (BLIP) -> regenerate (SD) -> embed both (CLIP) -> head -> p_ai

A backend implements the four stages on batches of numpy arrays (see :class:`SemgirStages`);
the PyTorch reference lives in :mod:`.torch_backend`, the exported runtimes elsewhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class SemgirStages(Protocol):
    """What a backend provides. Every method takes and returns a whole batch."""

    random_weights: bool
    version: str
    threshold: float

    def caption(self, images: list[np.ndarray]) -> list[str]: ...

    def regenerate(self, captions: list[str], seeds: list[int]) -> list[np.ndarray]: ...

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray: ...

    def classify(self, features: np.ndarray) -> np.ndarray: ...


def image_seed(seed: int, sha256: str | None) -> int:
    """Per-image noise seed: depends on the run's seed and the image's content, not on batching."""
    content = int(sha256[:12], 16) if sha256 else 0
    return (content + 1_000_003 * int(seed)) % (2**62)


@dataclass
class StageTimer:
    """Wall-clock seconds per stage, summed over calls."""

    totals: dict[str, float] = field(default_factory=dict)

    def run(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - t0
        return out


@dataclass(frozen=True)
class SemgirOutput:
    p_ai: np.ndarray
    captions: list[str]
    regenerated: list[np.ndarray]
    timings_ms: dict[str, float]  # this batch's time per stage, per image


def run_semgir(stages: SemgirStages, images: list[np.ndarray], sha256s: list[str | None], seed: int,
               timer: StageTimer | None = None) -> SemgirOutput:
    """Score one batch of decoded RGB uint8 images."""
    timer = timer or StageTimer()
    before = dict(timer.totals)
    captions = timer.run("caption", stages.caption, images)
    regenerated = timer.run("regenerate", stages.regenerate, captions, [image_seed(seed, s) for s in sha256s])
    emb = timer.run("embed", stages.embed_images, list(images) + list(regenerated))
    n = len(images)
    features = np.concatenate([emb[:n], emb[n:]], axis=1)
    p_ai = timer.run("head", stages.classify, features)
    per_image = {k: 1000.0 * (v - before.get(k, 0.0)) / n for k, v in timer.totals.items()}
    return SemgirOutput(np.asarray(p_ai, np.float64), captions, regenerated, per_image)
