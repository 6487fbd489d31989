"""Simple baseline: logistic regression on the azimuthal log-spectrum of a high-pass noise residual.

Per image: centre crop (the patch model's own fit/crop), greyscale, residual = image minus its
3x3 box blur, 2-D FFT power in dB, azimuthal mean over ``bins`` rings out to the spectrum's corner.
Standardised features, L2 logistic regression (scikit-learn, the ``eval`` extra). It exists to
show whether the CNN earns its cost, on the same splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..deps import require
from .preprocess import PreprocessConfig, crop, fit_min_side


def _ring_index(size: int, bins: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    r = np.sqrt(fx**2 + fy**2) / np.sqrt(0.5)  # 1.0 at the corner (Nyquist on both axes)
    return np.minimum((r * bins).astype(np.int64), bins - 1)


def residual_spectrum(img: np.ndarray, pcfg: PreprocessConfig = PreprocessConfig(), bins: int = 64) -> np.ndarray:
    """(bins,) azimuthally averaged log power spectrum of the high-pass residual of one image."""
    a = crop(fit_min_side(img, pcfg.size, pcfg.fit, pcfg.short_side), pcfg.size).astype(np.float64)
    g = a @ np.array([0.299, 0.587, 0.114])
    pad = np.pad(g, 1, mode="reflect")
    blur = sum(pad[i : i + g.shape[0], j : j + g.shape[1]] for i in range(3) for j in range(3)) / 9.0
    res = g - blur
    power = np.abs(np.fft.fft2(res)) ** 2
    idx = _ring_index(g.shape[0], bins).ravel()
    sums = np.bincount(idx, weights=power.ravel(), minlength=bins)
    counts = np.bincount(idx, minlength=bins)
    return 10.0 * np.log10(sums / np.maximum(counts, 1) + 1e-8)


def features(images: Sequence[np.ndarray], pcfg: PreprocessConfig = PreprocessConfig(), bins: int = 64) -> np.ndarray:
    return np.stack([residual_spectrum(im, pcfg, bins) for im in images]) if len(images) else np.zeros((0, bins))


@dataclass
class SpectrumBaseline:
    """Standardise + logistic regression on :func:`residual_spectrum` features."""

    bins: int = 64
    C: float = 1.0
    preprocess: PreprocessConfig = PreprocessConfig()
    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None
    coef_: np.ndarray | None = None
    intercept_: float = 0.0

    def fit(self, images: Sequence[np.ndarray], labels, seed: int = 0) -> "SpectrumBaseline":
        lm = require("sklearn.linear_model", "the spectrum baseline")
        x = features(images, self.preprocess, self.bins)
        self.mean_ = x.mean(0)
        self.scale_ = x.std(0) + 1e-8
        clf = lm.LogisticRegression(C=self.C, max_iter=5000, random_state=seed)
        clf.fit((x - self.mean_) / self.scale_, np.asarray(labels))
        self.coef_, self.intercept_ = clf.coef_.ravel(), float(clf.intercept_[0])
        return self

    def decision_function(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("baseline not fitted")
        x = features(images, self.preprocess, self.bins)
        return ((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({
            "bins": self.bins, "C": self.C, "preprocess": self.preprocess.to_dict(),
            "mean": self.mean_.tolist(), "scale": self.scale_.tolist(), "coef": self.coef_.tolist(),
            "intercept": self.intercept_}))

    @classmethod
    def load(cls, path: str | Path) -> "SpectrumBaseline":
        d = json.loads(Path(path).read_text())
        return cls(d["bins"], d["C"], PreprocessConfig.from_dict(d["preprocess"]), np.array(d["mean"]),
                   np.array(d["scale"]), np.array(d["coef"]), d["intercept"])
