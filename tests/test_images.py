"""The bad-input matrix: every item either decodes (converted as a user would expect) or gives
a clear per-item error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from semgir_engine.errors import InputError
from semgir_engine.images import load_image

from conftest import make_image


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgb_jpeg_roundtrip():
    d = load_image(_bytes(make_image(0), "JPEG"))
    assert d.pixels.shape == (40, 48, 3) and d.pixels.dtype == np.uint8 and d.note is None
    assert len(d.sha256) == 64


@pytest.mark.parametrize("data,msg", [
    (b"", "empty"),
    (b"this is text, not an image\n", "not a recognised image"),
])
def test_garbage_bytes(data, msg):
    with pytest.raises(InputError, match=msg):
        load_image(data)


def test_zero_byte_and_text_files(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "zero.jpg")
    with pytest.raises(InputError, match="not a recognised"):
        load_image(tmp_path / "text.jpg")


def test_truncated_jpeg_and_png():
    for fmt in ("JPEG", "PNG"):
        data = _bytes(make_image(1, (200, 200)), fmt)
        with pytest.raises(InputError, match="truncated|cannot decode"):
            load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    big = _bytes(Image.new("L", (4000, 4000)), "PNG")  # small file, 16 M pixels
    with pytest.raises(InputError, match="too large"):
        load_image(big, max_pixels=10_000_000)
    assert load_image(big, max_pixels=20_000_000).pixels.shape == (4000, 4000, 3)


def test_file_size_limit(tmp_path):
    p = tmp_path / "a.png"
    make_image(2).save(p)
    with pytest.raises(InputError, match="too large"):
        load_image(p, max_bytes=100)


def test_cmyk_converted():
    d = load_image(_bytes(make_image(3).convert("CMYK"), "JPEG"))
    assert d.pixels.shape[2] == 3 and "CMYK" in d.note


def test_16bit_greyscale_scaled_not_clipped():
    arr = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    img = Image.fromarray(arr)  # mode I;16
    d = load_image(_bytes(img, "PNG"))
    assert d.pixels.shape == (32, 64, 3)
    assert d.pixels.min() == 0 and d.pixels.max() == 255  # full range kept
    assert len(np.unique(d.pixels[..., 0])) > 200  # not clipped to a few levels


def test_palette_with_alpha_composited_on_white():
    img = Image.new("P", (10, 10), 0)
    img.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    img.info["transparency"] = 0
    d = load_image(_bytes(img, "PNG", transparency=0))
    assert (d.pixels == 255).all()  # fully transparent red -> white
    assert "transparency" in d.note


def test_rgba_partial_alpha():
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255
    arr[..., 3] = 128
    d = load_image(Image.fromarray(arr, "RGBA"))
    assert 120 < d.pixels[0, 0, 1] < 135 and d.pixels[0, 0, 0] == 255


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_uses_first_frame(fmt):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = _bytes(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    d = load_image(data)
    assert "animated (3 frames)" in d.note
    assert d.pixels[8, 8, 0] > 200 and d.pixels[8, 8, 2] < 50


def test_exif_rotation_applied():
    img = make_image(4, (60, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    d = load_image(_bytes(img, "JPEG", exif=exif))
    assert d.pixels.shape[:2] == (60, 30)


def test_unreadable_paths(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path / "dir.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "broken.jpg")


def test_wrong_types():
    with pytest.raises(InputError, match="unsupported input type"):
        load_image(12345)
    with pytest.raises(InputError, match="shape"):
        load_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InputError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan, np.float32))
    assert load_image(np.zeros((4, 4), np.uint8)).pixels.shape == (4, 4, 3)
