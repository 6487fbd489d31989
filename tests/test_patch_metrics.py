"""Metrics and calibration against scikit-learn on random data."""

from __future__ import annotations

import numpy as np
import pytest

from semgir_engine.calibration import choose_threshold, fit_temperature, logit_nll, sigmoid
from semgir_engine.metrics import (
    accuracy,
    average_precision,
    balanced_accuracy,
    binary_report,
    bootstrap_ci,
    roc_auc,
    roc_curve,
)

skm = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + 0.8 * y, 1)  # rounding makes ties
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    f2, t2, th2 = skm.roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, f2) and np.allclose(tpr, t2) and np.allclose(thr[1:], th2[1:])
    pred = (s > 0.4).astype(float)
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert balanced_accuracy(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_bootstrap_interval_brackets_the_estimate_and_report_counts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = rng.normal(size=400) + y
    lo, hi = bootstrap_ci(roc_auc, y, s, n_boot=300)
    assert lo < roc_auc(y, s) < hi and hi - lo < 0.15
    r = binary_report(y, sigmoid(s), 0.5, n_boot=200)
    assert (r.n, r.n_ai, r.n_real) == (400, int(y.sum()), int(400 - y.sum()))
    # one-class data: AUC undefined, FPR still reported
    r1 = binary_report(np.zeros(50, int), rng.random(50), 0.5, n_boot=50)
    assert np.isnan(r1.roc_auc) and 0.0 <= r1.fpr <= 1.0


def test_temperature_scaling_lowers_nll_of_overconfident_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    true_logit = rng.normal(size=2000) + 1.5 * (2 * y - 1) * 0.5
    y = (rng.random(2000) < sigmoid(true_logit)).astype(int)  # labels drawn from the true probabilities
    fit = fit_temperature(4.0 * true_logit, y)  # a model 4x overconfident
    assert fit.temperature == pytest.approx(4.0, rel=0.15)
    assert fit.nll_after < fit.nll_before - 0.1
    assert fit.nll_after == pytest.approx(logit_nll(true_logit, y), abs=0.01)


def test_threshold_maximises_balanced_accuracy():
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    t = choose_threshold(p, y)
    assert 0.3 < t <= 0.6
    assert balanced_accuracy(y, (p >= t).astype(float)) == 1.0
    with pytest.raises(ValueError):
        choose_threshold(p, np.zeros(6))
