"""Class leaks of a data pool, and the randomised pipeline that neutralises them (numpy + Pillow).

Every public real-vs-AI source leaks its label through how its files were made: format, size,
bytes per pixel, JPEG quality. A detector trained on the files learns those. Here:

* :func:`neutralise` puts one image of *either* class through the same randomised pipeline:
  decode -> resize so the short side is a random length (content scale and pixel count no longer
  depend on the original size) -> re-encode as JPEG at a random quality or as PNG -> decode ->
  random crop (+ flip). It returns the crop and the metadata of the re-encoded file as the model
  sees it (:func:`as_seen`: the crop's geometry, the file's format, quality and bytes per pixel).
* :func:`file_metadata` / :func:`metadata_features` read the same metadata from the original
  files, and :func:`probe` measures how well a metadata-only logistic regression separates the
  classes within each source (cross-validated ROC-AUC; 0.5 = no leak). Run it on the original
  files and on the pipeline's outputs: afterwards it should be near chance.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

#: IJG's standard luminance quantisation table (quality 50), natural order.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)
_Q = np.arange(1, 101)
_SCALES = np.where(_Q < 50, 5000.0 / _Q, 200.0 - 2.0 * _Q)
_IJG_TABLES = np.clip(np.floor((_STD_LUMA[None, :] * _SCALES[:, None] + 50.0) / 100.0), 1, 255)

#: Names of the columns of :func:`metadata_features`.
FEATURES = ("is_jpeg", "log_pixels", "aspect", "bytes_per_pixel", "jpeg_quality", "greyscale", "exif")


def jpeg_quality(img: Image.Image) -> float:
    """IJG-equivalent quality (1-100) of a JPEG's luminance table; NaN for other formats."""
    q = getattr(img, "quantization", None)
    if not q or 0 not in q:
        return float("nan")
    table = np.sort(np.asarray(q[0], np.float64))  # zig-zag vs natural order does not matter sorted
    d = np.abs(np.sort(_IJG_TABLES, axis=1) - table[None, :]).sum(1)
    return float(_Q[int(np.argmin(d))])


@dataclass(frozen=True)
class FileMeta:
    """What a file says about itself without its pixels being looked at."""

    format: str
    width: int
    height: int
    n_bytes: int
    jpeg_quality: float
    greyscale: bool
    exif: bool

    def to_dict(self) -> dict:
        return asdict(self)


def meta_of_bytes(data: bytes) -> FileMeta:
    with Image.open(io.BytesIO(data)) as im:
        return FileMeta(str(im.format), im.width, im.height, len(data), jpeg_quality(im),
                        im.mode in ("L", "LA", "1", "I;16", "I"), bool(im.info.get("exif")))


def file_metadata(path: str | Path) -> FileMeta:
    return meta_of_bytes(Path(path).read_bytes())


def metadata_features(metas: Sequence[FileMeta]) -> np.ndarray:
    """(N, len(FEATURES)) numeric features; a missing JPEG quality becomes 100 (lossless)."""
    out = np.zeros((len(metas), len(FEATURES)))
    for i, m in enumerate(metas):
        px = max(1, m.width * m.height)
        q = 100.0 if np.isnan(m.jpeg_quality) else m.jpeg_quality
        out[i] = (m.format == "JPEG", np.log(px), m.width / max(1, m.height), m.n_bytes / px, q, m.greyscale,
                  m.exif)
    return out


@dataclass(frozen=True)
class NeutraliseConfig:
    """The randomised, class-blind pipeline (training only)."""

    short_side: tuple[int, int] = (256, 512)  # resize so the short side is uniform in this range
    p_jpeg: float = 0.75  # else PNG (lossless)
    jpeg_quality: tuple[int, int] = (60, 95)
    crop: int = 256
    p_flip: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NeutraliseConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


_RESAMPLE = (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX)


def resize_short_side(img: np.ndarray, short: int, resample=Image.BICUBIC) -> np.ndarray:
    """Resize (keeping the aspect ratio) so that the short side is ``short`` pixels."""
    h, w = img.shape[:2]
    s = short / min(h, w)
    nw, nh = max(short, int(round(w * s))), max(short, int(round(h * s)))
    if (nw, nh) == (w, h):
        return img
    return np.asarray(Image.fromarray(img).resize((nw, nh), resample))


def encode(img: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    else:
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def neutralise(img: np.ndarray, rng: np.random.Generator,
               cfg: NeutraliseConfig = NeutraliseConfig()) -> tuple[np.ndarray, FileMeta]:
    """One randomised view of a uint8 RGB image: (crop x crop uint8 RGB, metadata of the re-encoded file)."""
    short = int(rng.integers(cfg.short_side[0], cfg.short_side[1] + 1))
    out = resize_short_side(img, max(short, cfg.crop), _RESAMPLE[int(rng.integers(len(_RESAMPLE)))])
    if rng.random() < cfg.p_jpeg:
        data = encode(out, "JPEG", int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    else:
        data = encode(out, "PNG")
    with Image.open(io.BytesIO(data)) as im:
        out = np.asarray(im.convert("RGB"))
    h, w = out.shape[:2]
    meta = as_seen(meta_of_bytes(data), cfg.crop)
    top, left = int(rng.integers(0, h - cfg.crop + 1)), int(rng.integers(0, w - cfg.crop + 1))
    out = out[top : top + cfg.crop, left : left + cfg.crop]
    if rng.random() < cfg.p_flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out), meta


def as_seen(m: FileMeta, crop: int) -> FileMeta:
    """The metadata of a re-encoded file as the model sees it: only a ``crop`` x ``crop`` window
    reaches the network, so its geometry is the crop's (bytes scaled to the window)."""
    return FileMeta(m.format, crop, crop, int(round(m.n_bytes * crop * crop / max(1, m.width * m.height))),
                    m.jpeg_quality, m.greyscale, m.exif)


def probe(features: np.ndarray, labels, sources: Sequence[str], *, folds: int = 5, seed: int = 0) -> dict:
    """Metadata-only leak probe: per source with both classes, the ROC-AUC of a standardised logistic
    regression on ``features`` under stratified ``folds``-fold cross-validation (out-of-fold scores);
    plus the same on the pooled data (all sources). 0.5 = the features carry no label."""
    from ..deps import require

    require("sklearn", "the metadata leak probe")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, np.float64)
    y = np.asarray(labels).astype(int)
    src = np.asarray(sources)

    def auc(idx: np.ndarray) -> float | None:
        yy = y[idx]
        k = min(folds, int(np.bincount(yy, minlength=2).min()))
        if k < 2:
            return None
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        cv = StratifiedKFold(k, shuffle=True, random_state=seed)
        s = cross_val_predict(clf, x[idx], yy, cv=cv, method="decision_function")
        return float(roc_auc_score(yy, s))

    out = {"features": list(FEATURES), "per_source": {}, "pooled": auc(np.arange(y.size))}
    for s in sorted(set(src.tolist())):
        out["per_source"][s] = auc(np.flatnonzero(src == s))
    return out
