"""Calibrated decisions: temperature vs isotonic calibration chosen by held-out log-loss, decision
thresholds at a target false-positive rate with intervals, reliability tables and ECE.

Fitting uses scikit-learn (isotonic regression, cross-validation folds) and scipy (Clopper-Pearson
intervals), the ``eval`` extra; *applying* a fitted :class:`Calibrator` needs numpy only, so the
scoring runtime stays light. A calibrator maps a raw logit to ``p_ai``:

* ``temperature``: ``sigmoid(z / T)`` (one parameter; keeps the ranking and is smooth);
* ``isotonic``: a monotone step function of ``z`` (breakpoints stored, linear interpolation
  between them; flexible, can over-fit a small calibration set).

:func:`fit_calibrator` picks the one with the lower mean log-loss on held-out folds of the
calibration data, then refits it on all of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .temperature import fit_temperature, sigmoid

METHODS = ("temperature", "isotonic")
_EPS = 1e-6


def log_loss(y, p) -> float:
    """Mean binary cross-entropy with ``p`` clipped to [1e-6, 1 - 1e-6]."""
    y = np.asarray(y, np.float64).ravel()
    p = np.clip(np.asarray(p, np.float64).ravel(), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True)
class Calibrator:
    """A fitted logit -> p_ai map (JSON-serialisable; numpy-only to apply)."""

    method: str
    temperature: float = 1.0
    x: tuple[float, ...] = ()  # isotonic breakpoints (logits, increasing)
    y: tuple[float, ...] = ()  # p_ai at the breakpoints (non-decreasing)
    heldout_log_loss: dict = field(default_factory=dict)  # method -> mean held-out log-loss at selection

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.method == "isotonic" and (len(self.x) < 1 or len(self.x) != len(self.y)):
            raise ValueError("isotonic calibration needs matching, non-empty breakpoints")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")

    def __call__(self, logits) -> np.ndarray:
        z = np.asarray(logits, np.float64)
        if self.method == "temperature":
            return sigmoid(z / self.temperature)
        return np.interp(z, np.asarray(self.x), np.asarray(self.y))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["x"], d["y"] = list(self.x), list(self.y)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        return cls(method=d["method"], temperature=float(d.get("temperature", 1.0)), x=tuple(d.get("x", ())),
                   y=tuple(d.get("y", ())), heldout_log_loss=dict(d.get("heldout_log_loss", {})))


def _fit(method: str, z: np.ndarray, y: np.ndarray) -> Calibrator:
    if method == "temperature":
        return Calibrator("temperature", temperature=fit_temperature(z, y).temperature)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(z, y)
    return Calibrator("isotonic", x=tuple(float(v) for v in iso.X_thresholds_),
                      y=tuple(float(v) for v in iso.y_thresholds_))


def fit_calibrator(logits, labels, *, methods: tuple[str, ...] = METHODS, folds: int = 5,
                   seed: int = 0) -> Calibrator:
    """Choose temperature or isotonic by mean held-out log-loss over stratified folds of the
    calibration data, then fit the winner on all of it."""
    from sklearn.model_selection import StratifiedKFold

    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(labels).astype(int).ravel()
    if z.size != y.size or not (np.any(y == 0) and np.any(y == 1)):
        raise ValueError("calibration needs logits and labels of equal length with both classes")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown calibration method {m!r}; valid: {', '.join(METHODS)}")
    k = min(folds, int(np.bincount(y, minlength=2).min()))
    scores = {}
    if k >= 2 and len(methods) > 1:
        cv = StratifiedKFold(k, shuffle=True, random_state=seed)
        for m in methods:
            losses = [log_loss(y[te], _fit(m, z[tr], y[tr])(z[te])) for tr, te in cv.split(z, y)]
            scores[m] = float(np.mean(losses))
        best = min(scores, key=scores.get)
    else:
        best = methods[0]
    c = _fit(best, z, y)
    return Calibrator(c.method, c.temperature, c.x, c.y, scores)


def binomial_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of a proportion ``k / n``."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold and what it achieved on the data it was set on."""

    threshold: float
    target_fpr: float | None
    fpr: float
    fpr_ci: tuple[float, float]
    tpr: float
    tpr_ci: tuple[float, float]
    n_real: int
    n_ai: int

    def to_dict(self) -> dict:
        return asdict(self)


def threshold_at_fpr(p_real, target_fpr: float) -> float:
    """The lowest threshold ``t`` (decision ``p >= t``) whose false-positive rate on ``p_real`` is at
    most ``target_fpr`` (numpy only). With n real scores the achievable rates are multiples of 1/n."""
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target FPR must be in [0, 1], got {target_fpr}")
    s = np.sort(np.asarray(p_real, np.float64).ravel())
    if s.size == 0:
        raise ValueError("no real scores to set a threshold on")
    allowed = int(math.floor(target_fpr * s.size + 1e-9))  # real images we may call AI
    if allowed >= s.size:
        return float(s[0])
    # every score strictly above the cut is flagged; put the cut just above s[n - allowed - 1]
    return float(np.nextafter(s[s.size - allowed - 1], np.inf))


def operating_point(p_real, p_ai, threshold: float, target_fpr: float | None = None) -> OperatingPoint:
    pr = np.asarray(p_real, np.float64).ravel()
    pa = np.asarray(p_ai, np.float64).ravel()
    fp, tp = int((pr >= threshold).sum()), int((pa >= threshold).sum())
    return OperatingPoint(float(threshold), target_fpr, fp / pr.size if pr.size else float("nan"),
                          binomial_ci(fp, pr.size), tp / pa.size if pa.size else float("nan"),
                          binomial_ci(tp, pa.size), int(pr.size), int(pa.size))


def reliability(labels, p, bins: int = 10) -> dict:
    """Equal-width reliability table and expected calibration error (ECE, weighted by bin count)."""
    y = np.asarray(labels, np.float64).ravel()
    p = np.asarray(p, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        conf = float(p[m].mean()) if n else float("nan")
        acc = float(y[m].mean()) if n else float("nan")
        if n:
            ece += n / max(1, y.size) * abs(acc - conf)
        table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n, "mean_p": conf,
                      "frac_ai": acc})
    return {"bins": table, "ece": float(ece), "n": int(y.size)}


def plot_reliability(tables: dict[str, dict], path, title: str = "") -> None:
    """Reliability diagram(s): observed AI fraction vs mean predicted p_ai per bin, one line per entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8)
    for i, (name, t) in enumerate(tables.items()):
        pts = [(b["mean_p"], b["frac_ai"], b["n"]) for b in t["bins"] if b["n"]]
        if not pts:
            continue
        xs, ys, ns = zip(*pts)
        ax.plot(xs, ys, marker="o", color=f"C{i}", label=f"{name} (ECE {t['ece']:.3f}, n={t['n']})")
    ax.set_xlabel("mean predicted p_ai")
    ax.set_ylabel("observed fraction AI")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
