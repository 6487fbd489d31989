"""Shared fixtures. Tests pin torch to one thread: two threads on a loaded 2-core machine
oversubscribe and run 10-100x slower (see FINDINGS.md)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run slow tests (full-size models, minutes, GBs)")


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            torch.set_num_threads(1)
            has_cuda = torch.cuda.is_available()
        except Exception:  # noqa: BLE001
            pass
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="slow: pass --run-slow"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


def make_image(seed: int, size=(48, 40), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    # smooth gradient plus noise: distinct images, not pure noise
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (seed + 1) * 7) % 256, (yy * (seed + 3) * 5) % 256, ((xx + yy) * 3 + seed * 40) % 256], -1)
    arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(5):
        make_image(i, size=(40 + 8 * i, 48)).save(d / f"img{i}.png")
    make_image(9).save(d / "photo.jpg", quality=90)
    return d


@pytest.fixture(scope="session")
def tiny_scorer():
    pytest.importorskip("torch")
    from semgir_engine.scorer import Scorer, ScorerConfig

    with Scorer(ScorerConfig(method="semgir", models="tiny", batch_size=3)) as s:
        yield s
