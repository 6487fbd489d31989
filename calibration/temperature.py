"""Temperature scaling for a binary logit (Guo et al., 2017) and threshold selection (numpy only).

``p_ai = sigmoid(logit / T)``. ``T`` minimises the negative log-likelihood on validation logits;
the search is 1-D over ``log T`` (golden section on a bracket found by a coarse grid), so no
optimiser library is needed and the fit is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def sigmoid(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def logit_nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / T)`` against 0/1 labels (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64).ravel() / float(temperature)
    y = np.asarray(labels, dtype=np.float64).ravel()
    # -[y log s(z) + (1-y) log(1 - s(z))] = softplus(z) - y z
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    nll_before: float
    nll_after: float
    n: int


def fit_temperature(logits, labels, *, log_t_range: tuple[float, float] = (-4.0, 4.0)) -> TemperatureFit:
    """Fit ``T`` on validation logits; needs both classes present."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.size != y.size or z.size == 0:
        raise ValueError("logits and labels must be non-empty and of equal length")
    if not (np.any(y == 0) and np.any(y == 1)):
        raise ValueError("temperature fitting needs both classes in the validation data")
    f = lambda lt: logit_nll(z, y, float(np.exp(lt)))  # noqa: E731
    grid = np.linspace(*log_t_range, 81)
    vals = np.array([f(g) for g in grid])
    i = int(np.argmin(vals))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    gr = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - gr * (b - a), a + gr * (b - a)
    for _ in range(60):
        if f(c) < f(d):
            b = d
        else:
            a = c
        c, d = b - gr * (b - a), a + gr * (b - a)
    t = float(np.exp((a + b) / 2.0))
    return TemperatureFit(t, logit_nll(z, y, 1.0), logit_nll(z, y, t), int(z.size))


def choose_threshold(p, labels, *, criterion: str = "balanced_accuracy") -> float:
    """Threshold on ``p`` maximising balanced accuracy on validation data.

    Candidates are midpoints between consecutive distinct scores (plus 0.5); ties are broken
    toward 0.5 so an uninformative validation set leaves the natural threshold.
    """
    if criterion != "balanced_accuracy":
        raise ValueError(f"unknown criterion {criterion!r}; valid: balanced_accuracy")
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(np.int64).ravel()
    if not (np.any(y == 0) and np.any(y == 1)):
        raise ValueError("threshold selection needs both classes in the validation data")
    u = np.unique(p)
    cands = np.unique(np.r_[(u[:-1] + u[1:]) / 2.0, 0.5])
    pos = p[y == 1][None, :]
    neg = p[y == 0][None, :]
    tpr = (pos >= cands[:, None]).mean(axis=1)
    tnr = (neg < cands[:, None]).mean(axis=1)
    bacc = (tpr + tnr) / 2.0
    best = np.flatnonzero(bacc >= bacc.max() - 1e-12)
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])
