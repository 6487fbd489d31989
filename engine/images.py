"""Robust image decoding shared by every method (torch-free: Pillow and numpy only).

Every input becomes an 8-bit RGB ``numpy`` array, or raises :class:`InputError` with a message
that says what is wrong with *that* item. Conversions a user would expect are done, and noted:

* EXIF orientation is applied;
* CMYK, greyscale, palette, 1-bit and 16-bit / float images are converted to 8-bit RGB
  (16-bit by scaling the full range, not by clipping);
* transparency is composited onto white;
* animated images (GIF, WebP, APNG) are scored on their first frame.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"}
)

#: Refuse images with more pixels than this (decompression-bomb guard; ~ 8k x 8k).
DEFAULT_MAX_PIXELS = 64_000_000
#: Refuse files larger than this many bytes before reading them.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, "Image.Image", np.ndarray]


@dataclass(frozen=True)
class DecodedImage:
    """One decoded input: RGB uint8 pixels plus what we learned on the way."""

    pixels: np.ndarray  # (H, W, 3) uint8
    sha256: str | None  # of the encoded bytes; None for in-memory PIL/array inputs
    source_format: str | None
    note: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.pixels.shape[:2]
        return w, h


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a file with clear errors for the usual failures."""
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError(f"is a directory, not an image file: {p}")
        size = p.stat().st_size
        if size == 0:
            raise InputError("empty file (0 bytes)")
        if size > max_bytes:
            raise InputError(f"file too large: {size} bytes > limit {max_bytes}")
        with open(p, "rb") as fh:
            return fh.read()
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"file not found: {exc.filename}") from exc
    except PermissionError as exc:
        raise InputError(f"permission denied: {exc.filename}") from exc
    except OSError as exc:
        raise InputError(f"cannot read file: {exc}") from exc


def _to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    notes: list[str] = []
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        elif mode == "I":
            hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
            arr = arr / hi
        else:  # float image: assume [0, 1] unless it is clearly wider; NaN/inf pixels count as 0/max
            if not np.isfinite(arr).all():
                notes.append("non-finite float pixels clipped")
                arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
            hi = arr.max(initial=1.0)
            arr = arr / (hi if hi > 1.0 else 1.0)
        arr8 = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"converted {mode} to 8-bit")
        return Image.fromarray(arr8, "L").convert("RGB"), notes
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        alpha_min = np.asarray(rgba.getchannel("A")).min(initial=255)
        if alpha_min < 255:
            notes.append("transparency composited onto white")
        return Image.alpha_composite(background, rgba).convert("RGB"), notes
    if mode == "CMYK":
        notes.append("converted CMYK to RGB")
    elif mode not in ("RGB", "L", "P", "1"):
        notes.append(f"converted {mode} to RGB")
    return img.convert("RGB"), notes


def _convert(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """:func:`_to_rgb`, with Pillow's refusals (modes it cannot convert, e.g. ``La``, or malformed
    data) as this input's :class:`InputError`."""
    try:
        return _to_rgb(img)
    except Exception as exc:  # noqa: BLE001 - as in decode_bytes: one image's conversion error
        raise InputError(f"cannot convert {img.mode} image to RGB: {type(exc).__name__}: {exc}") from exc


def decode_bytes(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, sha256: str | None = None
) -> DecodedImage:
    """Decode encoded image bytes to RGB uint8, raising :class:`InputError` on any problem."""
    if not data:
        raise InputError("empty file (0 bytes)")
    digest = sha256 or sha256_bytes(bytes(data))
    notes: list[str] = []
    with warnings.catch_warnings():
        # Pillow's own bomb guard warns at MAX_IMAGE_PIXELS; we check our limit explicitly.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            w, h = img.size
            if w <= 0 or h <= 0:
                raise InputError(f"image has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise InputError(
                    f"image too large: {w}x{h} = {w * h} pixels > limit {max_pixels} "
                    "(decompression-bomb guard)"
                )
            n_frames = getattr(img, "n_frames", 1)
            if n_frames > 1:
                img.seek(0)
                notes.append(f"animated ({n_frames} frames): scored the first frame")
            img.load()
            img = ImageOps.exif_transpose(img)
        except InputError:
            raise
        except Image.DecompressionBombError as exc:
            raise InputError(f"image too large (decompression-bomb guard): {exc}") from exc
        except UnidentifiedImageError as exc:
            raise InputError("not a recognised image format (corrupt or not an image)") from exc
        except Exception as exc:  # noqa: BLE001 - see below
            # Pillow's plugins raise whatever their parsing hits on malformed bytes (its own OSS-Fuzz
            # harness catches every Exception): besides OSError/ValueError/SyntaxError/EOFError, the
            # fuzzer found NotImplementedError (DDS pixel format) and TypeError (TIFF without
            # dimensions); MemoryError is one image's problem too. Each is this input's error.
            msg = str(exc) or type(exc).__name__
            if "truncated" in msg.lower():
                raise InputError(f"truncated image: {msg}") from exc
            if not isinstance(exc, (OSError, ValueError, SyntaxError, EOFError)):
                msg = f"{type(exc).__name__}: {msg}"
            raise InputError(f"cannot decode image: {msg}") from exc
        rgb, more = _convert(img)
    notes += more
    pixels = np.asarray(rgb, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"unexpected decoded shape {pixels.shape}")
    return DecodedImage(pixels, digest, fmt, "; ".join(notes) or None)


def decode_array(arr: np.ndarray) -> DecodedImage:
    """Accept an (H, W), (H, W, 3) or (H, W, 4) array: uint8, or float in [0, 1]."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"array must be (H, W), (H, W, 3) or (H, W, 4); got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"array dtype must be uint8 or float in [0, 1]; got {a.dtype}")
        if not np.isfinite(a).all():
            raise InputError("array contains NaN or infinity")
        a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    if a.shape[2] == 4:
        rgb, _ = _to_rgb(Image.fromarray(a, "RGBA"))
        a = np.asarray(rgb)
    return DecodedImage(np.ascontiguousarray(a), sha256_bytes(a.tobytes()), None)


def load_image(item: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> DecodedImage:
    """Decode a path, encoded bytes, a PIL image or an array; raise :class:`InputError` on failure."""
    if isinstance(item, (str, os.PathLike)):
        return decode_bytes(read_bytes(item, max_bytes), max_pixels=max_pixels)
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        if len(data) > max_bytes:
            raise InputError(f"input too large: {len(data)} bytes > limit {max_bytes}")
        return decode_bytes(data, max_pixels=max_pixels)
    if isinstance(item, Image.Image):
        if item.size[0] * item.size[1] > max_pixels:
            raise InputError(f"image too large: {item.size[0]}x{item.size[1]} pixels")
        rgb, notes = _convert(item)
        a = np.asarray(rgb, dtype=np.uint8)
        return DecodedImage(a, sha256_bytes(a.tobytes()), item.format, "; ".join(notes) or None)
    if isinstance(item, np.ndarray):
        return decode_array(item)
    raise InputError(f"unsupported input type {type(item).__name__}; give a path, bytes, PIL image or array")
