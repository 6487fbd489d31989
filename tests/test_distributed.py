"""Ray Data scoring on a local Ray instance: its parquet rows equal the plain CLI's rows."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import pyarrow.parquet as pq  # noqa: E402

from semgir_engine.cli import main  # noqa: E402
from semgir_engine.distributed import list_inputs  # noqa: E402

pytestmark = pytest.mark.timeout(300)

TINY = ["--method", "semgir", "--models", "tiny", "--no-progress", "-b", "4"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _by_path(rows: list[dict]) -> dict[str, dict]:
    return {r["path"]: r for r in rows}


def test_ray_rows_equal_cli_rows(local_ray, image_dir, tmp_path):
    (image_dir / "bad.jpg").write_text("not an image")  # an error row on both paths
    cli_out = tmp_path / "cli.parquet"
    r = CliRunner().invoke(main, ["score", str(image_dir), *TINY, "--out", str(cli_out)])
    assert r.exit_code == 3, r.output  # 3: finished, one input failed
    ray_out = tmp_path / "ray_out"
    r = CliRunner().invoke(main, ["score", str(image_dir), *TINY, "--ray", "--ray-actors", "1", "--out", str(ray_out)])
    assert r.exit_code == 3, r.output
    assert "1 failed" in r.stderr

    cli_rows = _by_path(pq.read_table(cli_out).to_pylist())
    ray_table = pq.read_table(ray_out)
    assert ray_table.schema.names == pq.read_table(cli_out).schema.names
    ray_rows = _by_path(ray_table.to_pylist())
    assert len(ray_rows) == ray_table.num_rows == 7
    assert set(ray_rows) == set(cli_rows)
    for path, want in cli_rows.items():
        got = ray_rows[path]
        assert got["sha256"] == want["sha256"]
        assert (got["error"] is None) == (want["error"] is None)
        if want["error"] is None:
            assert got["p_ai"] == pytest.approx(want["p_ai"], abs=1e-6)
        for k in want:
            if k not in ("timings_ms", "p_ai"):
                assert got[k] == want[k], k
    assert cli_rows[str(image_dir / "bad.jpg")]["error"]


def test_ray_usage_errors(image_dir):
    r = CliRunner().invoke(main, ["score", str(image_dir), *TINY, "--ray"])
    assert r.exit_code == 2 and "--out DIR" in r.output
    r = CliRunner().invoke(main, ["score", str(image_dir), *TINY, "--ray", "--out", "x", "--format", "csv"])
    assert r.exit_code == 2


def test_list_inputs_follows_the_cli_walk_and_shards(image_dir):
    files, missing = list_inputs([str(image_dir), str(image_dir / "nope.png")])
    assert len(files) == 6 and missing == [str(image_dir / "nope.png")]
    shards = [set(list_inputs(str(image_dir), 2, i)[0]) for i in range(2)]
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(files)
