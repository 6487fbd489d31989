"""Binary-classification metrics with bootstrap confidence intervals (numpy only).

Convention: label 1 = AI (positive), 0 = real; a higher score means "more likely AI".
Definitions follow scikit-learn (``roc_auc_score``, ``average_precision_score``, ``roc_curve``)
and are tested against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def accuracy(y, pred) -> float:
    y, p = _check(y, pred)
    return float(np.mean(y == (p > 0.5))) if y.size else float("nan")


def balanced_accuracy(y, pred) -> float:
    """Mean of per-class recall over the classes present (sklearn's definition)."""
    y, p = _check(y, pred)
    p = p > 0.5
    recalls = [np.mean(p[y == c] == bool(c)) for c in (0, 1) if np.any(y == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def roc_auc(y, s) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class."""
    y, s = _check(y, s)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _binary_clf_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.where(np.diff(s_sorted))[0]
    idx = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y_sorted)[idx]
    fps = 1 + idx - tps
    return fps.astype(np.float64), tps.astype(np.float64), s_sorted[idx]


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf, like sklearn (no dropping)."""
    y, s = _check(y, s)
    fps, tps, thr = _binary_clf_curve(y, s)
    fps, tps, thr = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thr]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thr


def average_precision(y, s) -> float:
    """Step-wise AP: sum over thresholds of (R_n - R_{n-1}) * P_n (sklearn's definition)."""
    y, s = _check(y, s)
    if y.sum() == 0:
        return float("nan")
    fps, tps, _ = _binary_clf_curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def bootstrap_ci(
    fn: Callable[[np.ndarray, np.ndarray], float],
    y,
    s,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``fn(y, s)``; resamples within each class when stratified."""
    y, s = _check(y, s)
    if y.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in (0, 1)] if stratified else [np.arange(y.size)]
    groups = [g for g in groups if g.size]
    vals = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
        vals[b] = fn(y[idx], s[idx])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class BinaryReport:
    """Metrics of one set of scores at one threshold, with 95% bootstrap intervals and counts."""

    n: int
    n_real: int
    n_ai: int
    threshold: float
    accuracy: float
    accuracy_ci: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    roc_auc: float
    roc_auc_ci: tuple[float, float]
    average_precision: float
    average_precision_ci: tuple[float, float]
    tpr: float  # recall on AI at the threshold
    fpr: float  # real images called AI at the threshold

    def to_dict(self) -> dict:
        return asdict(self)


def binary_report(y, p, threshold: float, *, n_boot: int = 1000, seed: int = 0) -> BinaryReport:
    """Full report for scores ``p`` (any monotone score; decision ``p >= threshold``)."""
    y, p = _check(y, p)
    dec = (p >= threshold).astype(np.float64)
    acc = lambda yy, ss: accuracy(yy, (ss >= threshold).astype(float))  # noqa: E731
    bacc = lambda yy, ss: balanced_accuracy(yy, (ss >= threshold).astype(float))  # noqa: E731
    n_ai = int(y.sum())
    n_real = int(y.size - n_ai)
    return BinaryReport(
        n=int(y.size),
        n_real=n_real,
        n_ai=n_ai,
        threshold=float(threshold),
        accuracy=accuracy(y, dec),
        accuracy_ci=bootstrap_ci(acc, y, p, n_boot=n_boot, seed=seed),
        balanced_accuracy=balanced_accuracy(y, dec),
        balanced_accuracy_ci=bootstrap_ci(bacc, y, p, n_boot=n_boot, seed=seed),
        roc_auc=roc_auc(y, p),
        roc_auc_ci=bootstrap_ci(roc_auc, y, p, n_boot=n_boot, seed=seed),
        average_precision=average_precision(y, p),
        average_precision_ci=bootstrap_ci(average_precision, y, p, n_boot=n_boot, seed=seed),
        tpr=float(dec[y == 1].mean()) if n_ai else float("nan"),
        fpr=float(dec[y == 0].mean()) if n_real else float("nan"),
    )
