"""The cascade's uncertainty band: which first-stage (patch detector) scores go on to SemGIR (numpy only).

A cascade scores every image with the cheap first stage; images whose calibrated ``p_ai`` lies in
``[lo, hi]`` are regenerated and decided by SemGIR, the rest keep the first stage's decision. The
band is *fitted*, not guessed: on labelled data with first-stage scores, :func:`fit_band` picks the
narrowest band whose decisions stay within a stated tolerance of always-regenerate:

- ``criterion="agreement"``: at most ``tolerance`` of the decisions differ from the reference's
  (``tolerance=0.01`` means >= 99% decision agreement);
- ``criterion="balanced_accuracy"``: the cascade's balanced accuracy is at most ``tolerance``
  below the reference's (needs labels).

The *reference* is what always-regenerate decides on the calibration images: SemGIR's own
decisions where SemGIR scores are given (a `score --method semgir` run), else the labels, i.e. a
perfect second stage (``reference="labels"``). The latter is the conservative choice while no
trained SemGIR is at hand: against a perfect SemGIR, agreement equals the cascade's accuracy, so
every first-stage error kept outside the band counts.

With ``max_regen_fraction`` the roles swap: the band regenerating at most that share of the
calibration images that loses the least is chosen. The fit is exact over every cut between
distinct scores (capped to ``max_cuts`` quantile cuts for large sets) and deterministic.

A fitted band is a small JSON file (:class:`CascadeBand`) kept beside the models: ``cascade.json``
in a SemGIR models folder or beside a patch-detector manifest. It names the first-stage model it
was fitted for, and :func:`load_band` refuses it for another one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SemgirError

BAND_FORMAT = "semgir-engine/cascade-band"
BAND_FILE = "cascade.json"
CRITERIA = ("agreement", "balanced_accuracy")


class CascadeBandError(SemgirError):
    """A cascade band is malformed, foreign to the loaded models, or cannot be fitted."""


@dataclass(frozen=True)
class BandStats:
    """How a band does on a set of calibration images."""

    n: int
    regen_fraction: float
    agreement: float  # share of cascade decisions equal to the reference's
    balanced_accuracy: float | None  # the cascade's, with labels
    reference_balanced_accuracy: float | None  # always-regenerate's (the reference), with labels


@dataclass(frozen=True)
class CascadeBand:
    """``[lo, hi]`` on the first stage's calibrated ``p_ai``: inside, regenerate; outside, keep stage 1."""

    lo: float
    hi: float
    first_stage_version: str | None = None
    first_stage_threshold: float | None = None
    reference: str = "labels"  # labels | semgir:<model_version>
    criterion: str = "agreement"
    tolerance: float | None = None
    max_regen_fraction: float | None = None
    fit: BandStats | None = None  # on the images it was fitted on
    holdout: BandStats | None = None  # on held-out images, when a split was asked for
    data: dict = field(default_factory=dict)  # what it was fitted on (manifests, hashes, counts)
    curve: list[list[float]] = field(default_factory=list)  # [regen_fraction, best agreement] trade-off

    def __post_init__(self):
        if not (0.0 <= self.lo <= 1.0 and 0.0 <= self.hi <= 1.0) or self.lo > self.hi:
            raise CascadeBandError(f"cascade band must satisfy 0 <= lo <= hi <= 1, got [{self.lo}, {self.hi}]")

    def contains(self, p: np.ndarray | float) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        return (p >= self.lo) & (p <= self.hi)

    def describe(self) -> str:
        s = f"[{self.lo:.4f}, {self.hi:.4f}]"
        if self.fit is not None:
            s += (f" (fitted on {self.fit.n} images against {self.reference}: regenerates "
                  f"{100 * self.fit.regen_fraction:.1f}%, agreement {100 * self.fit.agreement:.2f}%)")
        return s

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"format": BAND_FORMAT, "format_version": 1, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "CascadeBand":
        if d.get("format") != BAND_FORMAT:
            raise CascadeBandError(f"not a cascade band (format {d.get('format')!r})")
        d = {k: v for k, v in d.items() if k not in ("format", "format_version")}
        for k in ("fit", "holdout"):
            if d.get(k) is not None:
                d[k] = BandStats(**d[k])
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        if p.is_dir():
            p = p / BAND_FILE
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(p)
        return p


def parse_band(text: str) -> CascadeBand:
    """``"LO,HI"`` (the `--cascade-band` option) -> a band without fit statistics."""
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError as exc:
        raise CascadeBandError(f"--cascade-band wants LO,HI (two numbers in [0, 1]), got {text!r}") from exc
    return CascadeBand(lo, hi, reference="user")


def load_band(path: str | Path, first_stage_version: str | None = None) -> CascadeBand:
    """Read a band file; refuse one fitted for another first-stage model than ``first_stage_version``."""
    p = Path(path)
    try:
        band = CascadeBand.from_dict(json.loads(p.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise CascadeBandError(f"cannot read cascade band {p}: {exc}") from exc
    except CascadeBandError as exc:
        raise CascadeBandError(f"{p}: {exc}") from exc
    if first_stage_version and band.first_stage_version and band.first_stage_version != first_stage_version:
        raise CascadeBandError(f"{p} was fitted for first-stage model {band.first_stage_version!r}, not the loaded "
                               f"{first_stage_version!r}; refit it with `semgir-engine calibrate cascade` or give "
                               "--cascade-band LO,HI")
    return band


def _penalties(p: np.ndarray, threshold: float, ref: np.ndarray, labels: np.ndarray | None,
               criterion: str) -> np.ndarray:
    """What each image costs when it is *not* regenerated (kept at the first stage's decision)."""
    first = (p >= threshold).astype(np.int64)
    if criterion == "agreement":
        return (first != ref).astype(np.float64) / p.size
    if labels is None:
        raise CascadeBandError("the balanced_accuracy criterion needs labels")
    counts = np.array([np.sum(labels == 0), np.sum(labels == 1)], np.float64)
    if np.any(counts == 0):
        raise CascadeBandError("the balanced_accuracy criterion needs both classes in the calibration data")
    w = 1.0 / (2.0 * counts[labels])
    return ((ref == labels).astype(np.float64) - (first == labels).astype(np.float64)) * w


def band_stats(band: CascadeBand | tuple[float, float], p, threshold: float, ref_decisions,
               labels=None) -> BandStats:
    """Regeneration share, agreement with the reference and balanced accuracies of a band on scored images."""
    lo, hi = (band.lo, band.hi) if isinstance(band, CascadeBand) else band
    p = np.asarray(p, np.float64)
    ref = np.asarray(ref_decisions, np.int64)
    inside = (p >= lo) & (p <= hi)
    dec = np.where(inside, ref, (p >= threshold).astype(np.int64))
    bacc = rbacc = None
    if labels is not None:
        y = np.asarray(labels, np.int64)
        if np.any(y == 0) and np.any(y == 1):
            from ..metrics import balanced_accuracy

            bacc, rbacc = balanced_accuracy(y, dec), balanced_accuracy(y, ref)
    return BandStats(int(p.size), float(inside.mean()) if p.size else 0.0,
                     float((dec == ref).mean()) if p.size else 1.0, bacc, rbacc)


def _cuts(p_sorted: np.ndarray, max_cuts: int) -> np.ndarray:
    """Candidate cut positions k (the band starts/ends between sorted[k-1] and sorted[k])."""
    n = p_sorted.size
    k = np.r_[0, np.flatnonzero(np.diff(p_sorted) > 0) + 1, n]
    if k.size > max_cuts:
        k = np.unique(k[np.round(np.linspace(0, k.size - 1, max_cuts)).astype(np.int64)])
    return k


def _cut_value(p_sorted: np.ndarray, k: int, side: str) -> float:
    """The band's edge at cut k of a non-empty band: 0 / 1 at the ends, else between two distinct scores."""
    if k <= 0:
        return 0.0
    if k >= p_sorted.size:
        return 1.0
    return (float(p_sorted[k - 1]) + float(p_sorted[k])) / 2.0


def fit_band(p, threshold: float, *, labels=None, reference_p=None, reference_threshold: float = 0.5,
             criterion: str = "agreement", tolerance: float = 0.01, max_regen_fraction: float | None = None,
             max_cuts: int = 1024) -> tuple[float, float, list[list[float]]]:
    """Fit ``(lo, hi)`` on first-stage calibrated scores ``p``; also return the trade-off curve.

    ``reference_p``: SemGIR's scores on the same images (its decisions at ``reference_threshold`` are
    the reference); without it the labels are (a perfect second stage). See the module docstring.
    """
    if criterion not in CRITERIA:
        from ..errors import UnknownNameError

        raise UnknownNameError("cascade criterion", criterion, CRITERIA)
    p = np.asarray(p, np.float64).ravel()
    if p.size == 0:
        raise CascadeBandError("no calibration scores")
    y = None if labels is None else np.asarray(labels, np.int64).ravel()
    if reference_p is not None:
        ref = (np.asarray(reference_p, np.float64).ravel() >= reference_threshold).astype(np.int64)
    elif y is not None:
        ref = y
    else:
        raise CascadeBandError("fitting a band needs labels or SemGIR reference scores")
    if ref.size != p.size or (y is not None and y.size != p.size):
        raise CascadeBandError("scores, labels and reference scores must have one entry per image")
    order = np.argsort(p, kind="stable")
    ps = p[order]
    pen = _penalties(ps, threshold, ref[order], None if y is None else y[order], criterion)
    prefix = np.r_[0.0, np.cumsum(pen)]
    k = _cuts(ps, max_cuts)
    i, j = np.meshgrid(k, k, indexing="ij")
    valid = i <= j
    loss = prefix[i] + (prefix[-1] - prefix[j])  # kept outside the band: below lo and above hi
    frac = (j - i) / p.size
    # trade-off curve: the least loss reachable at each regeneration share (as agreement for the criterion)
    curve = []
    for f in np.linspace(0.0, 1.0, 21):
        m = valid & (frac <= f + 1e-12)
        curve.append([float(f), float(1.0 - loss[m].min()) if criterion == "agreement" else float(-loss[m].min())])
    if max_regen_fraction is not None:
        if not 0.0 <= max_regen_fraction <= 1.0:
            raise CascadeBandError(f"max_regen_fraction must be in [0, 1], got {max_regen_fraction}")
        ok = valid & (frac <= max_regen_fraction + 1e-12)
        key = np.where(ok, loss + 1e-9 * frac, np.inf)
    else:
        if tolerance < 0:
            raise CascadeBandError(f"tolerance must be >= 0, got {tolerance}")
        ok = valid & (loss <= tolerance + 1e-12)
        key = np.where(ok, frac + 1e-9 * loss, np.inf)
    if not np.isfinite(key).any():  # cannot happen (the full band loses nothing) but say so if it does
        raise CascadeBandError("no band meets the constraint")
    a, b = np.unravel_index(int(np.argmin(key)), key.shape)
    if k[a] == k[b]:  # the empty band: a point between calibration scores (none of them lies on it)
        u = np.unique(np.r_[0.0, ps, 1.0])
        g = int(np.argmax(np.diff(u))) if u.size > 1 else 0
        mid = float((u[g] + u[min(g + 1, u.size - 1)]) / 2.0)
        return mid, mid, curve
    return _cut_value(ps, int(k[a]), "lo"), _cut_value(ps, int(k[b]), "hi"), curve


def fit_cascade_band(p, threshold: float, *, labels=None, reference_p=None, reference_threshold: float = 0.5,
                     reference: str = "labels", criterion: str = "agreement", tolerance: float = 0.01,
                     max_regen_fraction: float | None = None, holdout_mask=None,
                     first_stage_version: str | None = None, data: dict | None = None) -> CascadeBand:
    """Fit a :class:`CascadeBand` on the images not in ``holdout_mask`` and evaluate it on those that are."""
    p = np.asarray(p, np.float64).ravel()
    y = None if labels is None else np.asarray(labels, np.int64).ravel()
    rp = None if reference_p is None else np.asarray(reference_p, np.float64).ravel()
    hold = np.zeros(p.size, bool) if holdout_mask is None else np.asarray(holdout_mask, bool)
    fit_m = ~hold
    sel = lambda a, m: None if a is None else a[m]  # noqa: E731
    lo, hi, curve = fit_band(p[fit_m], threshold, labels=sel(y, fit_m), reference_p=sel(rp, fit_m),
                             reference_threshold=reference_threshold, criterion=criterion, tolerance=tolerance,
                             max_regen_fraction=max_regen_fraction)
    ref = (rp >= reference_threshold).astype(np.int64) if rp is not None else y
    fit_stats = band_stats((lo, hi), p[fit_m], threshold, ref[fit_m], sel(y, fit_m))
    hold_stats = band_stats((lo, hi), p[hold], threshold, ref[hold], sel(y, hold)) if hold.any() else None
    return CascadeBand(lo, hi, first_stage_version=first_stage_version, first_stage_threshold=float(threshold),
                       reference=reference, criterion=criterion,
                       tolerance=None if max_regen_fraction is not None else float(tolerance),
                       max_regen_fraction=max_regen_fraction, fit=fit_stats, holdout=hold_stats,
                       data=dict(data or {}), curve=curve)


def logit_distance(p: np.ndarray, threshold: float) -> np.ndarray:
    """How far scores lie from the decision threshold, in logits (the most uncertain first when sorted)."""
    eps = 1e-7
    z = lambda q: np.log(np.clip(q, eps, 1 - eps)) - np.log1p(-np.clip(q, eps, 1 - eps))  # noqa: E731
    return np.abs(z(np.asarray(p, np.float64)) - z(np.float64(threshold)))


__all__ = ["BAND_FILE", "BandStats", "CascadeBand", "CascadeBandError", "band_stats", "fit_band",
           "fit_cascade_band", "load_band", "logit_distance", "parse_band"]
