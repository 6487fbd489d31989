"""pytest-benchmark suites (not part of the normal test run: `pytest bench/`).

Tiny components by default; `--bench-size random` times the full-size architectures.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-size", default="tiny", choices=["tiny", "random"],
                     help="component size for the benchmark suites")
    parser.addoption("--bench-threads", type=int, default=2)


@pytest.fixture(scope="session")
def bench_size(request):
    import torch

    torch.set_num_threads(request.config.getoption("--bench-threads"))
    return request.config.getoption("--bench-size")


@pytest.fixture(scope="session")
def bundles(bench_size):
    from semgir_engine.export.onnx_export import Bundles
    from semgir_engine.semgir.sources import ModelSource

    return Bundles(ModelSource.parse(bench_size))


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-onnx")
