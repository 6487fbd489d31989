"""Pixel preprocessing driven by :class:`~semgir_engine.spec.ImagePreprocess` (torch-free)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .spec import ImagePreprocess

_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _center_crop(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return a[top : top + size, left : left + size]


def resize_and_crop(pixels: np.ndarray, pp: ImagePreprocess) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3) following ``pp.resize`` and ``pp.crop``."""
    size = pp.size
    interp = _INTERP[pp.interpolation]
    if pp.resize == "stretch":
        return np.asarray(Image.fromarray(pixels).resize((size, size), interp))
    if pp.resize == "shortest":
        h, w = pixels.shape[:2]
        scale = size / min(h, w)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            pixels = np.asarray(Image.fromarray(pixels).resize((nw, nh), interp))
    elif pp.resize == "pad":
        h, w = pixels.shape[:2]
        if h < size or w < size:
            out = np.zeros((max(h, size), max(w, size), 3), np.uint8)
            out[:h, :w] = pixels  # zero padding on the bottom/right
            pixels = out
    else:
        raise ValueError(f"unknown resize mode {pp.resize!r}")
    if pp.crop != "center":
        raise ValueError(f"unknown crop mode {pp.crop!r}")
    return _center_crop(pixels, size)


def normalize(pixels: np.ndarray, pp: ImagePreprocess) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W), scaled to [0, 1] then (x - mean) / std."""
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.asarray(pp.mean, np.float32)) / np.asarray(pp.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_batch(images: list[np.ndarray], pp: ImagePreprocess) -> np.ndarray:
    """List of uint8 RGB arrays -> float32 (N, 3, size, size)."""
    return np.stack([normalize(resize_and_crop(a, pp), pp) for a in images])
