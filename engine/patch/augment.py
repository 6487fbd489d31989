"""Training augmentations that counter this data's label leaks (numpy + Pillow, no torch).

Both classes get the same treatment: random JPEG re-compression (the format/quantisation leak),
random rescaling (the size leak, and resampling traces), Gaussian blur, occasional greyscale
(faces' reals include greyscale photos) and horizontal flips. Work is done on a random region only
slightly larger than the final crop, so one image costs ~1-2 ms.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class AugmentConfig:
    p_jpeg: float = 0.8
    jpeg_quality: tuple[int, int] = (60, 100)
    p_resize: float = 0.3
    resize_scale: tuple[float, float] = (0.5, 1.5)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.2, 2.0)
    p_gray: float = 0.05
    p_flip: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


NO_AUGMENT = AugmentConfig(p_jpeg=0.0, p_resize=0.0, p_blur=0.0, p_gray=0.0, p_flip=0.0)


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` (4:2:0, Pillow defaults) and decode again."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def rescale(img: np.ndarray, scale: float, resample=Image.BILINEAR) -> np.ndarray:
    h, w = img.shape[:2]
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    return np.asarray(Image.fromarray(img).resize((nw, nh), resample))


def augment(img: np.ndarray, size: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """One random augmentation of a uint8 RGB image; the result still needs fit/crop to ``size``."""
    scale = float(rng.uniform(*cfg.resize_scale)) if rng.random() < cfg.p_resize else 1.0
    # crop a random region just big enough for the final crop after rescaling
    side = int(math.ceil((size + 16) / scale))
    h, w = img.shape[:2]
    rh, rw = min(side, h), min(side, w)
    top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    out = img[top : top + rh, left : left + rw]
    if scale != 1.0:
        out = rescale(out, scale, Image.BICUBIC if rng.random() < 0.5 else Image.BILINEAR)
    if rng.random() < cfg.p_blur:
        sigma = float(rng.uniform(*cfg.blur_sigma))
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(sigma)))
    if rng.random() < cfg.p_gray:
        g = np.asarray(Image.fromarray(out).convert("L"))
        out = np.repeat(g[:, :, None], 3, axis=2)
    if rng.random() < cfg.p_jpeg:
        out = jpeg_roundtrip(out, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    if rng.random() < cfg.p_flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
