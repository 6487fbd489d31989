"""Model selection by leave-one-source-out (LOSO), never by a random split.

For each source S of the pool: fit on every other source (its rows split by source x class into a
fit part and a calibration part), calibrate and set the threshold on the calibration part, score
S. Sources with both classes get ROC-AUC with a bootstrap 95% interval; a real-only source gets its
false-positive rate at the fold's threshold (Clopper-Pearson interval). The summary is the mean
and the worst per-source AUC, each with a bootstrap interval (sources resampled independently,
within class). An in-pool random split is computed by :func:`in_pool` for reporting only.

Training samples are weighted so that every (source, class) cell of the training sources carries
the same total weight: sources and classes are balanced per fit, whatever their sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..metrics import roc_auc

#: fit(train_index_views, weights) -> score function over (row indices, view) -> logits
Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def balanced_weights(labels: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Per-sample weights giving every (source, class) cell the same total; mean weight 1."""
    keys = np.char.add(np.asarray(sources).astype(str), np.asarray(labels).astype(str))
    _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w * (w.size / w.sum())


def split_fit_cal(idx: np.ndarray, labels: np.ndarray, sources: np.ndarray, fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (source x class) split of row indices into (fit, calibration)."""
    rng = np.random.default_rng(seed)
    fit, cal = [], []
    for s in sorted(set(sources[idx].tolist())):
        for c in (0, 1):
            g = idx[(sources[idx] == s) & (labels[idx] == c)]
            if g.size == 0:
                continue
            g = rng.permutation(g)
            k = int(round(fraction * g.size)) if g.size > 1 else 0
            cal.append(g[:k])
            fit.append(g[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(cal))


def _boot_source_aucs(per_source: dict[str, tuple[np.ndarray, np.ndarray]], n_boot: int,
                      seed: int) -> np.ndarray:
    """(n_boot, n_sources) bootstrap AUCs, each source resampled within class."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(per_source)))
    for j, (y, s) in enumerate(per_source.values()):
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        for b in range(n_boot):
            i = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
            out[b, j] = roc_auc(y[i], s[i])
    return out


@dataclass(frozen=True)
class FoldResult:
    source: str
    n_real: int
    n_ai: int
    auc: float | None
    auc_ci: tuple[float, float] | None
    threshold: float
    fpr: float
    fpr_ci: tuple[float, float]
    tpr: float | None


def summarise(per_source_scores: dict[str, tuple[np.ndarray, np.ndarray]], thresholds: dict[str, float],
              *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-source AUC / FPR (with intervals) and the mean / worst AUC with bootstrap intervals."""
    from ..calibration.decision import binomial_ci
    from ..metrics import bootstrap_ci

    folds, two = [], {}
    for src, (y, p) in per_source_scores.items():
        thr = thresholds[src]
        nr, na = int((y == 0).sum()), int((y == 1).sum())
        fp = int((p[y == 0] >= thr).sum())
        auc = ci = tpr = None
        if nr and na:
            auc = roc_auc(y, p)
            ci = bootstrap_ci(roc_auc, y, p, n_boot=n_boot, seed=seed)
            tpr = float((p[y == 1] >= thr).mean())
            two[src] = (y, p)
        folds.append(FoldResult(src, nr, na, auc, ci, float(thr), fp / nr if nr else float("nan"),
                                binomial_ci(fp, nr), tpr))
    out: dict = {"sources": {f.source: f.__dict__ for f in folds}}
    if two:
        aucs = np.array([roc_auc(*two[s]) for s in two])
        boot = _boot_source_aucs(two, n_boot, seed)
        out["mean_auc"] = float(aucs.mean())
        out["mean_auc_ci"] = tuple(float(v) for v in np.quantile(boot.mean(1), [0.025, 0.975]))
        out["worst_auc"] = float(aucs.min())
        out["worst_source"] = list(two)[int(np.argmin(aucs))]
        out["worst_auc_ci"] = tuple(float(v) for v in np.quantile(boot.min(1), [0.025, 0.975]))
    return out


def loso(labels: np.ndarray, sources: np.ndarray, ok: np.ndarray, fitter: Fitter,
         *, cal_fraction: float = 0.2, target_fpr: float | None = None, seed: int = 0, n_boot: int = 1000,
         only: Sequence[str] | None = None) -> dict:
    """Leave-one-source-out. ``fitter(fit_rows, weights, cal_rows)`` trains on ``fit_rows`` and returns
    ``score(rows) -> logits`` of their test views. The fold threshold is the balanced-accuracy optimum (or the ``target_fpr`` point) on the
    calibrated scores of the calibration rows."""
    from ..calibration import choose_threshold
    from ..calibration.decision import fit_calibrator, reliability, threshold_at_fpr

    srcs = sorted(set(sources[ok].tolist()))
    scores, thrs = {}, {}
    for s in srcs:
        if only and s not in only:
            continue
        train = np.flatnonzero(ok & (sources != s))
        test = np.flatnonzero(ok & (sources == s))
        fit_rows, cal_rows = split_fit_cal(train, labels, sources, cal_fraction, seed)
        score = fitter(fit_rows, balanced_weights(labels[fit_rows], sources[fit_rows]), cal_rows)
        zc = score(cal_rows)
        cal = fit_calibrator(zc, labels[cal_rows], seed=seed)
        pc = cal(zc)
        yc = labels[cal_rows]
        thr = threshold_at_fpr(pc[yc == 0], target_fpr) if target_fpr is not None else choose_threshold(pc, yc)
        scores[s] = (labels[test], cal(score(test)))
        thrs[s] = thr
    out = summarise(scores, thrs, n_boot=n_boot, seed=seed)
    if scores:  # out-of-fold calibrated p_ai of every source, pooled: how calibrated on unseen sources
        out["reliability"] = reliability(np.concatenate([v[0] for v in scores.values()]),
                                         np.concatenate([v[1] for v in scores.values()]))
    return out


def in_pool(labels: np.ndarray, sources: np.ndarray, ok: np.ndarray, fitter: Fitter, *,
            fraction: float = 0.15, seed: int = 0, n_boot: int = 1000) -> dict:
    """Random stratified split of the whole pool (reported only; rewards leaks, never used to choose)."""
    from ..metrics import bootstrap_ci

    rows = np.flatnonzero(ok)
    fit_rows, test_rows = split_fit_cal(rows, labels, sources, fraction, seed)
    score = fitter(fit_rows, balanced_weights(labels[fit_rows], sources[fit_rows]), test_rows)
    y, z = labels[test_rows], score(test_rows)
    per = {}
    for s in sorted(set(sources[test_rows].tolist())):
        m = sources[test_rows] == s
        if len(set(y[m].tolist())) == 2:
            per[s] = roc_auc(y[m], z[m])
    return {"auc": roc_auc(y, z), "auc_ci": bootstrap_ci(roc_auc, y, z, n_boot=n_boot, seed=seed),
            "n": int(y.size), "per_source_auc": per}
