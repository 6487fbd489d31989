"""Shared tiny-model data for the SemGIR training, attribution and cache tests.

Builds are cached per process so that the three test files pay for the tiny components once.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import make_image

WORDS = ("a photo of the dog cat tree sky street house car water field man woman red blue green small "
         "large old city beach snow grass road sitting standing near").split()


def random_captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]


@lru_cache(maxsize=None)
def tiny_regenerator(seed: int):
    """The regeneration stage of the tiny text-to-image model whose weights have ``seed`` (torch sessions)."""
    from semgir_engine.semgir.pipeline import REGEN_COMPONENTS, RegenerateStage
    from semgir_engine.semgir.sources import ModelSource
    from semgir_engine.semgir.torch_backend import TorchSessions

    return RegenerateStage(TorchSessions(ModelSource.parse("tiny", seed=seed), "cpu", REGEN_COMPONENTS))


@lru_cache(maxsize=None)
def generated(seed: int, n: int, noise_offset: int = 10_000) -> tuple[np.ndarray, ...]:
    """``n`` images made by the tiny text-to-image model whose weights have ``seed``."""
    regen = tiny_regenerator(seed)
    return tuple(regen(random_captions(n, seed + 77), [noise_offset + i for i in range(n)]))


def real_images(n: int, offset: int = 100) -> list[np.ndarray]:
    return [np.asarray(make_image(offset + i, size=(32 + 4 * (i % 5), 32 + 4 * (i % 3)))) for i in range(n)]


def write_set(folder: Path, items: list[tuple[np.ndarray, str, str]], extra_header: bool = True) -> Path:
    """Save (pixels, label, generator) items as PNGs plus a manifest CSV; returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (px, label, gen) in enumerate(items):
        name = f"{label}_{gen or 'none'}_{i:03d}.png"
        Image.fromarray(px).save(folder / name)
        rows.append({"path": name, "label": label, "source": "set", "generator": gen})
    man = folder / "manifest.csv"
    with open(man, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "source", "generator"])
        w.writeheader()
        w.writerows(rows)
    return man
