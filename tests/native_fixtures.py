"""Test inputs for the native runtime (libsemgir): an image matrix covering every decoding rule of
``engine/images.py`` and the bad inputs, plus what the Python runtime makes of each.

Used by ``tests/test_native.py`` and, as a command, by the ctest suite (``native/tests``)::

    python tests/native_fixtures.py OUT_DIR   # OUT_DIR/export (patch_cnn), OUT_DIR/images, OUT_DIR/expected.json
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: files the native decoder refuses on purpose (formats it does not implement); Python scores them
NATIVE_UNSUPPORTED = ("bmp_rgb.bmp",)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_raw(width: int, height: int, depth: int, ctype: int, rows: bytes | None, extra: bytes = b"") -> bytes:
    """A PNG written by hand (filter 0), for layouts Pillow cannot save (16-bit RGB) or must not (bombs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    idat = zlib.compress(rows) if rows is not None else b"\x00" * 16
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def make_images(out: Path, seed: int = 0) -> list[str]:
    """Write the matrix into ``out``; returns the file names (bad inputs included)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # smooth content plus noise, so that JPEG chroma and IDCT rounding paths are exercised
    yy, xx = np.mgrid[0:240, 0:320]
    base = np.stack([(xx * 0.8) % 256, (yy * 1.1) % 256, ((xx + yy) * 0.5) % 256], -1)
    rgb = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb, "RGB")
    alpha = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (240, 1))
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    files: dict[str, bytes] = {
        "jpeg_rgb_q90.jpg": _save(im, "JPEG", quality=90),
        "jpeg_rgb_444.jpg": _save(im, "JPEG", quality=95, subsampling=0),
        "jpeg_progressive.jpg": _save(im, "JPEG", quality=80, progressive=True),
        "jpeg_grey.jpg": _save(im.convert("L"), "JPEG", quality=90),
        "jpeg_cmyk.jpg": _save(im.convert("CMYK"), "JPEG", quality=90),
        "jpeg_large.jpg": _save(im.resize((900, 700)), "JPEG", quality=85),
        "jpeg_small.jpg": _save(im.resize((120, 90)), "JPEG", quality=85),
        "png_rgb.png": _save(im, "PNG"),
        "png_rgba.png": _save(rgba, "PNG"),
        "png_rgba_opaque.png": _save(im.convert("RGBA"), "PNG"),
        "png_la.png": _save(rgba.convert("LA"), "PNG"),
        "png_grey.png": _save(im.convert("L"), "PNG"),
        "png_1bit.png": _save(im.convert("1"), "PNG"),
        "png_palette.png": _save(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=200), "PNG"),
        "png_palette_4bit.png": _save(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG", bits=4),
        "png_grey16.png": _save(Image.fromarray((rgb[..., 0].astype(np.uint16) * 257 + rng.integers(0, 257, rgb.shape[:2])).astype(np.uint16)), "PNG"),
        "png_rgb16.png": _png_raw(320, 240, 16, 2, b"".join(
            b"\x00" + (rgb[y].astype(">u2") * 257 + np.uint16(y)).astype(">u2").tobytes() for y in range(240))),
        "png_animated.png": _save(im, "PNG", save_all=True, append_images=[im.transpose(Image.Transpose.ROTATE_180)]),
        "webp_lossy.webp": _save(im, "WEBP", quality=80),
        "webp_lossless_alpha.webp": _save(rgba, "WEBP", lossless=True),
        "webp_lossy_alpha.webp": _save(rgba, "WEBP", quality=70),
        "webp_animated.webp": _save(im, "WEBP", save_all=True, append_images=[im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]),
        "bmp_rgb.bmp": _save(im, "BMP"),
        "gif_palette.gif": _save(im, "GIF"),
    }
    small = _save(im.resize((50, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32), "GIF")
    files.update({
        "gif_transparent.gif": _save(p_trns := im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "GIF",
                                     transparency=5),
        "gif_grey.gif": _save(im.convert("L"), "GIF"),
        "gif_animated.gif": _save(im, "GIF", save_all=True, append_images=[im.transpose(Image.Transpose.ROTATE_180)]),
        "gif_frame_offset.gif": _gif_offset(small, 80, 60, 10, 5),
        "bad_truncated.gif": files["gif_palette.gif"][: len(files["gif_palette.gif"]) // 2],
        "bad_bomb.gif": _gif_offset(small, 9000, 9000, 0, 0),
    })
    del p_trns
    p = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p.info["transparency"] = 3
    files["png_palette_trns.png"] = _save(p, "PNG", transparency=3)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        files[f"jpeg_exif_orientation_{o}.jpg"] = _save(im.resize((300, 200)), "JPEG", quality=90, exif=exif.tobytes())
    exif = Image.Exif()
    exif[0x0112] = 6
    files["png_exif_orientation_6.png"] = _save(im, "PNG", exif=exif.tobytes())
    files["webp_exif_orientation_8.webp"] = _save(im, "WEBP", quality=90, exif=_exif8())
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    try:
        files["jpeg_xmp_orientation_6.jpg"] = _save(im, "JPEG", quality=90, xmp=xmp)
    except TypeError:  # an older Pillow without the xmp argument
        pass
    jpg = files["jpeg_rgb_q90.jpg"]
    png = files["png_rgb.png"]
    files.update({
        "bad_empty.jpg": b"",
        "bad_truncated.jpg": jpg[: len(jpg) // 2],
        "bad_truncated_progressive.jpg": files["jpeg_progressive.jpg"][: len(files["jpeg_progressive.jpg"]) // 2],
        "bad_truncated.png": png[: len(png) // 2],
        "bad_not_an_image.jpg": b"this is not an image\n" * 20,
        "bad_bomb.png": _png_raw(9000, 9000, 8, 0, None),
        "bad_bomb.jpg": _bomb_jpeg(jpg),
        "bad_garbage_after_magic.png": b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 200, dtype=np.uint8)),
    })
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "bad_directory.jpg").mkdir(exist_ok=True)
    return sorted(files) + ["bad_directory.jpg"]


def _gif_offset(gif: bytes, screen_w: int, screen_h: int, left: int, top: int) -> bytes:
    """The GIF with its logical screen resized and its first image placed at (left, top)."""
    b = bytearray(gif)
    b[6:10] = struct.pack("<HH", screen_w, screen_h)
    i = 13 + (3 << ((b[10] & 7) + 1) if b[10] & 0x80 else 0)
    while b[i] == 0x21:  # skip extension blocks
        i += 2
        while b[i]:
            i += b[i] + 1
        i += 1
    assert b[i] == 0x2C, "image descriptor expected"
    b[i + 1 : i + 5] = struct.pack("<HH", left, top)
    return bytes(b)


def _exif8() -> bytes:
    e = Image.Exif()
    e[0x0112] = 8
    return e.tobytes()


def _bomb_jpeg(jpg: bytes) -> bytes:
    """The JPEG with its SOF0 frame size patched to 9000 x 9000 (81 M pixels > the 64 M limit)."""
    i = jpg.index(b"\xff\xc0")
    return jpg[: i + 5] + struct.pack(">HH", 9000, 9000) + jpg[i + 9:]


def python_expectations(images: Path, names: list[str], export_dir: Path) -> dict:
    """What the Python runtime does with each input: decode (pixels hash, size, note) or error, and
    the ONNX Runtime patch detector's p_ai / label."""
    from semgir_engine.errors import InputError
    from semgir_engine.images import load_image
    from semgir_engine.runtime.ort_patch import OrtPatchDetector

    det = OrtPatchDetector(export_dir, device="cpu")
    det16 = OrtPatchDetector(export_dir, precision="fp16", device="cpu")
    exp = {}
    for n in names:
        try:
            d = load_image(images / n)
        except InputError as exc:
            exp[n] = {"ok": False, "error": str(exc)}
            continue
        p = float(det.predict([d.pixels])[0])
        p16 = float(det16.predict([d.pixels])[0])
        exp[n] = {"p_ai_fp16": p16, "label_fp16": "ai" if p16 >= det16.threshold else "real","ok": True, "width": d.size[0], "height": d.size[1], "note": d.note or "",
                  "pixels_sha256": hashlib.sha256(np.ascontiguousarray(d.pixels).tobytes()).hexdigest(),
                  "sha256": d.sha256, "p_ai": p, "label": "ai" if p >= det.threshold else "real"}
    return {"threshold": det.threshold, "version": det.version, "version_fp16": det16.version, "native_unsupported": list(NATIVE_UNSUPPORTED),
            "images": exp}


def export_patch(export_dir: Path) -> None:
    """patch_cnn in fp32 and fp16; a graph already there is kept unless its spec is stale."""
    from semgir_engine.runtime.manifest import spec_current

    have = {}
    if (export_dir / "manifest.json").is_file():
        have = json.loads((export_dir / "manifest.json").read_text()).get("components", {}).get("patch_cnn", {})
    for precision in ("fp32", "fp16"):
        if precision not in have or not spec_current("patch_cnn", have[precision]):
            subprocess.run([sys.executable, "-m", "semgir_engine.cli", "-q", "export", "--components", "patch_cnn",
                            "--precision", precision, "--out", str(export_dir), "--force"], check=True)


def main(out: str) -> None:
    root = Path(out)
    export_patch(root / "export")
    names = make_images(root / "images")
    exp = python_expectations(root / "images", names, root / "export")
    (root / "expected.json").write_text(json.dumps(exp, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
