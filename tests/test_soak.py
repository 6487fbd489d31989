"""A reduced soak in the default suite: 120 mixed concurrent requests (good, corrupt, oversize body,
oversize pixels, clients hanging up mid-upload) against a real `semgir-engine serve` (the shipped
patch detector) after a warm-up round of the same size; the full 1,000-request soak is
`python -m semgir_engine.bench.soak` (bench/results/soak.md)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")
pytest.importorskip("httpx")


@pytest.mark.timeout(400)
def test_reduced_soak(tmp_path):
    from semgir_engine.bench.soak import main

    out = tmp_path / "soak.json"
    rc = main(["--requests", "120", "--method", "patch", "--seed", "3", "--max-concurrent-requests", "48",
               "--json", str(out)])
    s = json.loads(out.read_text())
    assert s["good_lost"] == 0 and s["bad_input_5xx"] == 0 and s["bad_input_unexpected"] == 0, s
    assert s["server_5xx_not_503"] == 0 and s["answers_lost"] == 0, s["server_statuses"]
    assert s["server_statuses"].get("499", 0) > 0 and s["server_statuses"]["200"] == s["client_200"]
    assert s["by_kind"]["good"]["as_expected"] == s["by_kind"]["good"]["sent"] > 50
    assert all(s["by_kind"][k]["sent"] > 0 for k in s["by_kind"]), s["by_kind"]
    assert s["ready_after"] == 200 and s["in_flight_after"] == 0 and s["queue_depth_after"] == 0
    assert s["memory_mb"]["after_vs_baseline"] <= 64, s["memory_mb"]
    assert s["retries_503"] > 0  # 120 at once against 48 in flight: the bound answered 503 and clients retried
    assert rc == 0 and s["pass"]
