"""Calibrated decisions: temperature vs isotonic by held-out log-loss, thresholds at a target FPR,
reliability/ECE, and the runtime's --target-fpr."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
from semgir_engine.calibration.decision import (  # noqa: E402
    Calibrator,
    binomial_ci,
    fit_calibrator,
    log_loss,
    operating_point,
    reliability,
    threshold_at_fpr,
)
from semgir_engine.calibration.temperature import sigmoid  # noqa: E402


def _data(n: int, rng, link):
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < link(z)).astype(int)
    return z, y


def test_temperature_wins_on_sigmoid_data_and_isotonic_on_a_step():
    rng = np.random.default_rng(0)
    z, y = _data(1500, rng, lambda z: sigmoid(z / 3.0))  # well described by one temperature
    c = fit_calibrator(z, y)
    assert c.method == "temperature" and abs(c.temperature - 3.0) < 0.6
    assert set(c.heldout_log_loss) == {"temperature", "isotonic"}
    z2, y2 = _data(1500, rng, lambda z: np.where(np.abs(z) < 1, 0.9, 0.1))  # not monotone in any sigmoid way
    c2 = fit_calibrator(z2, y2)
    assert c2.method == "isotonic"
    assert c2.heldout_log_loss["isotonic"] < c2.heldout_log_loss["temperature"]
    # a round trip through JSON gives the same map; applying needs numpy only
    c3 = Calibrator.from_dict(c2.to_dict())
    assert np.allclose(c3(z2[:50]), c2(z2[:50]))
    assert log_loss(y2, c2(z2)) < log_loss(y2, sigmoid(z2))


def test_threshold_at_fpr_never_exceeds_the_target_on_its_data():
    rng = np.random.default_rng(1)
    real = rng.random(200)
    for target in (0.0, 0.01, 0.05, 0.1, 0.5, 1.0):
        t = threshold_at_fpr(real, target)
        fpr = float((real >= t).mean())
        assert fpr <= target + 1e-12
        assert fpr >= target - 1 / real.size  # and it is the lowest such threshold
    with pytest.raises(ValueError):
        threshold_at_fpr(real, 1.5)
    op = operating_point(real, rng.random(100) + 0.5, threshold_at_fpr(real, 0.05), 0.05)
    assert op.fpr <= 0.05 and op.fpr_ci[0] <= op.fpr <= op.fpr_ci[1] and op.tpr_ci[0] <= op.tpr <= op.tpr_ci[1]
    lo, hi = binomial_ci(5, 100)
    assert 0.01 < lo < 0.05 < hi < 0.12


def test_reliability_and_ece():
    rng = np.random.default_rng(2)
    p = rng.random(20000)
    y = (rng.random(p.size) < p).astype(int)  # perfectly calibrated
    assert reliability(y, p)["ece"] < 0.02
    bad = reliability(y, np.clip(p + 0.3, 0, 1))
    assert bad["ece"] > 0.2 and sum(b["n"] for b in bad["bins"]) == p.size


def test_runtime_target_fpr_sets_the_threshold_from_the_calibration_split(tmp_path):
    from semgir_engine.errors import SemgirError
    from semgir_engine.patch.detector import PatchRuntime

    meta = {"version": "x", "threshold": 0.5, "temperature": 1.0,
            "preprocessing": {"size": 64, "fit": "pad", "mean": [0.5] * 3, "std": [0.25] * 3},
            "calibration": Calibrator("isotonic", x=(-1.0, 1.0), y=(0.1, 0.9)).to_dict(),
            "decision": {"calibration_scores": {"real": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
                                                "ai": [0.9]}}}
    rt = PatchRuntime(meta)
    assert rt.calibrator.method == "isotonic" and np.isclose(rt.calibrate(np.array([0.0]))[0], 0.5)
    assert rt.threshold == 0.5
    t = rt.set_target_fpr(0.1)  # one of ten real images may be called AI
    assert rt.threshold == t and 0.9 < t <= 0.95
    assert rt.set_target_fpr(None) == 0.5
    old = dict(meta)
    old.pop("decision")
    with pytest.raises(SemgirError, match="calibration-split scores"):
        PatchRuntime(old).set_target_fpr(0.05)
