"""Test inputs for the native runtime (libsemgir): an image matrix covering every decoding rule of
``engine/images.py`` and the bad inputs, plus what the Python runtime makes of each.

Used by ``tests/test_native.py`` and, as a command, by the ctest suite (``native/tests``)::

    python tests/native_fixtures.py OUT_DIR

writes OUT_DIR/images (the matrix, with sizes below, at and above the models' input so every resize
path runs), OUT_DIR/expected.json and three export directories of ``patch_cnn``:

* ``export``: the shipped default model (fused; fit "short", a bicubic resize of the short side to
  384; temperature calibration), fp32 and fp16;
* ``export-patch-shuffle``: the shipped ``patch-shuffle`` model (fit "pad"), fp32;
* ``export-variant``: the patch-shuffle graph with its settings changed to fit "resize" (bilinear
  upscale) and an isotonic calibration, the paths no shipped model uses.

plus OUT_DIR/resample (``resample.json`` and raw RGB files): Pillow resizes of noise images, which
the native resampler must reproduce byte for byte; and for the native SemGIR method ``export-semgir``
(the tiny weights' pipeline graphs), ``expected_semgir.json`` (the Python ONNX Runtime rows on a few
matrix images, two settings) and ``tokenizers.json`` (CLIP BPE encodes, WordPiece decodes and the
initial noise, from the Python code the pipeline runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: files the native decoder refuses on purpose (formats it does not implement); Python scores them
NATIVE_UNSUPPORTED = ("bmp_rgb.bmp",)
#: extra image sizes (width, height) of the matrix
SIZES = ((10, 300), (300, 10), (1, 1), (7, 5), (100, 60), (255, 300), (256, 256), (383, 384), (384, 384),
         (384, 520), (385, 400), (640, 480), (1000, 37), (300, 1400))


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
    # sizes around the models' inputs (crop 256; short side 384 for the default model): tiny, thin,
    # smaller, exactly 384, just above, larger, tall and wide, so that every fit path runs
    for w, h in SIZES:
        files[f"png_size_{w}x{h}.png"] = _save(im.resize((w, h), Image.BICUBIC), "PNG")
    files["jpeg_size_1500x1100.jpg"] = _save(im.resize((1500, 1100)), "JPEG", quality=88)
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


def _scores(det, decoded: dict) -> dict:
    return {n: {"p_ai": (p := float(det.predict([px])[0])), "label": "ai" if p >= det.threshold else "real"}
            for n, px in decoded.items()}


def python_expectations(images: Path, names: list[str], root: Path) -> dict:
    """What the Python runtime does with each input: decode (pixels hash, size, note) or error, and
    the ONNX Runtime patch detector's p_ai / label for each export directory."""
    from semgir_engine.errors import InputError
    from semgir_engine.images import load_image
    from semgir_engine.runtime.ort_patch import OrtPatchDetector

    exp, decoded = {}, {}
    for n in names:
        try:
            d = load_image(images / n)
        except InputError as exc:
            exp[n] = {"ok": False, "error": str(exc)}
            continue
        decoded[n] = d.pixels
        exp[n] = {"ok": True, "width": d.size[0], "height": d.size[1], "note": d.note or "",
                  "pixels_sha256": hashlib.sha256(np.ascontiguousarray(d.pixels).tobytes()).hexdigest(),
                  "sha256": d.sha256}
    det = OrtPatchDetector(root / "export", device="cpu")
    det16 = OrtPatchDetector(root / "export", precision="fp16", device="cpu")
    for n, r in _scores(det, decoded).items():
        exp[n].update(r)
    for n, r in _scores(det16, decoded).items():
        exp[n].update({"p_ai_fp16": r["p_ai"], "label_fp16": r["label"]})
    models = {}
    for name in OTHER_EXPORTS:
        d = OrtPatchDetector(root / name, device="cpu")
        models[name] = {"threshold": d.threshold, "version": d.version,
                        "preprocessing": d.manifest["preprocessing"],
                        "calibration": d.manifest.get("calibration", {}).get("method", "temperature"),
                        "images": _scores(d, decoded)}
    return {"threshold": det.threshold, "version": det.version, "version_fp16": det16.version,
            "preprocessing": det.manifest["preprocessing"], "native_unsupported": list(NATIVE_UNSUPPORTED),
            "images": exp, "models": models}


#: export directories besides ``export`` (the default model) that the C API tests score
OTHER_EXPORTS = ("export-patch-shuffle", "export-variant")


def _export(export_dir: Path, precisions: tuple[str, ...], model: str | None = None) -> None:
    """patch_cnn of ``model`` (None: the shipped default); a graph already there is kept unless its
    spec is stale or it comes from another model."""
    from semgir_engine.patch.detector import read_model_manifest, resolve_manifest
    from semgir_engine.runtime.manifest import spec_current

    weights = read_model_manifest(resolve_manifest(model))["weights_sha256"]
    have = {}
    if (export_dir / "manifest.json").is_file():
        have = json.loads((export_dir / "manifest.json").read_text()).get("components", {}).get("patch_cnn", {})
    for precision in precisions:
        e = have.get(precision)
        if e is None or not spec_current("patch_cnn", e) or e.get("source", {}).get("weights_sha256") != weights:
            subprocess.run([sys.executable, "-m", "semgir_engine.cli", "-q", "export", "--components", "patch_cnn",
                            "--precision", precision, "--out", str(export_dir), "--force",
                            *(["--patch-model", model] if model else [])], check=True)


def export_patch(root: Path) -> None:
    """The three export directories (see the module docstring)."""
    _export(root / "export", ("fp32", "fp16"))
    _export(root / "export-patch-shuffle", ("fp32",), "patch-shuffle")
    # the variant: patch-shuffle's graph, fit "resize" and an isotonic calibration whose breakpoints
    # span the fixtures' logits (clamped below and above, interpolated in between)
    src, dst = root / "export-patch-shuffle", root / "export-variant"
    dst.mkdir(parents=True, exist_ok=True)
    m = json.loads((src / "manifest.json").read_text())
    for e in m["components"]["patch_cnn"].values():
        for f in e.get("files", [{"file": e["file"]}]):
            shutil.copyfile(src / f["file"], dst / f["file"])
    p = m["pipeline"]["patch"]
    p["preprocessing"]["fit"] = "resize"
    x = [-4.0, -1.5, -0.6, -0.2, 0.0, 0.15, 0.4, 0.9, 2.0, 5.0]
    y = [0.01, 0.05, 0.2, 0.35, 0.35, 0.5, 0.66, 0.8, 0.93, 0.999]
    p["calibration"] = {"method": "isotonic", "temperature": 1.0, "x": x, "y": y, "heldout_log_loss": {}}
    (dst / "manifest.json").write_text(json.dumps(m, indent=1))


#: the SemGIR graphs the native pipeline runs (registry.PIPELINE_COMPONENTS)
SEMGIR_COMPONENTS = ("blip_vision", "blip_text_decoder_init", "blip_text_decoder_with_past", "sd_text_encoder", "unet",
                     "vae_decoder", "clip_image", "semgir_head")
#: the matrix images SemGIR scores (sizes below, at and above both preprocessings' inputs; grey, CMYK, alpha)
SEMGIR_IMAGES = ("jpeg_rgb_q90.jpg", "jpeg_grey.jpg", "jpeg_cmyk.jpg", "jpeg_large.jpg", "jpeg_small.jpg",
                 "png_rgba.png", "png_size_10x300.png", "png_size_1000x37.png")


def export_semgir(root: Path) -> Path:
    """``export-semgir``: the tiny SemGIR weights' pipeline graphs (kept when already there)."""
    out = root / "export-semgir"
    m = out / "manifest.json"
    if not (m.is_file() and all(json.loads(m.read_text()).get("components", {}).get(c) for c in SEMGIR_COMPONENTS)):
        subprocess.run([sys.executable, "-m", "semgir_engine.cli", "-q", "export", "--models", "tiny", "--components",
                        ",".join(SEMGIR_COMPONENTS), "--out", str(out), "--force"], check=True)
    return out


def semgir_expectations(root: Path, images: Path) -> None:
    """expected_semgir.json: the Python ONNX Runtime backend's rows (`semgir-engine score --method semgir`) on
    SEMGIR_IMAGES, at the defaults (4 DPM-Solver++ steps, guidance 1, seed 0, greedy 20 tokens), at
    guidance 3 with 3 steps and seed 7 (classifier-free guidance, odd step count) and with beam search
    (3 beams, 12 new tokens)."""
    names = [n for n in SEMGIR_IMAGES if (images / n).is_file()]
    runs = {}
    for key, extra in (("default", []), ("cfg", ["--guidance-scale", "3", "--steps", "3", "--seed", "7"]),
                       ("beams", ["--num-beams", "3", "--max-new-tokens", "12"])):
        out = root / f"semgir-{key}.jsonl"
        out.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "semgir_engine.cli", "-q", "score", "--backend", "onnxruntime",
                        "--device", "cpu", "--export-dir", str(root / "export-semgir"), "--method", "semgir",
                        "--format", "jsonl", "--out", str(out), *extra, *[str(images / n) for n in names]], check=True)
        rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
        runs[key] = {"args": extra, "rows": [rows[n] for n in names]}
    (root / "expected_semgir.json").write_text(json.dumps(runs, indent=1))


def tokenizer_cases(root: Path, seed: int = 3, n_clip: int = 3000, n_wordpiece: int = 2000) -> None:
    """tokenizers.json: CLIP BPE ids (the Python ClipBpeTokenizer on the `tokenizers` package, padded as the SD
    text encoder takes them) of random word sequences from the BLIP vocab plus punctuation and digits, and
    WordPiece decodes (the pipeline's WordPieceDecoder + strip) of random id sequences."""
    from semgir_engine.runtime.tokenizers import ClipBpeTokenizer, WordPieceDecoder

    exp = root / "export-semgir"
    p = json.loads((exp / "manifest.json").read_text())["pipeline"]
    rng = np.random.default_rng(seed)
    vocab = [t for t in (exp / p["captioner"]["vocab_file"]).read_text(encoding="utf-8").split("\n") if t]
    words = [t for t in vocab if not t.startswith("[")] + ["photograph", "street's", "don't", "we're", "they've",
                                                            "i'm", "it'll", "he'd", "Hello", "CAT", "x-ray", "3d", "café", "naïve",
                                                            "Über", "straße", "ÉCOLE", "piñata", "日本", "Ωmega",
                                                            "fiancée's", "ﬁne", "ＡＢＣ１", "‘quoted’", "ʼtis"]
    punct = list(".,!?;:'\"()-/[]{}*+=<>#$%@^_|~`") + ["...", "--", "'s", "0", "12", "2024", "7.5", "—", "“", "”",
                                                        "…", "°", "€"]
    spaces = [" ", " ", " ", "  ", "\t", "\n", "", "\u00a0", "\u3000"]
    texts = ["", " ", "a", "<start_of_text>", "a<end_of_text>b", "'s 's", "''s", "a photo of " * 40,
             "  Two  DOGS,\tplaying!! in the 2nd park... (really) "]
    while len(texts) < n_clip:
        k = int(rng.integers(1, 30))
        parts = []
        for _ in range(k):
            pool = words if rng.random() < 0.75 else punct
            parts.append(pool[int(rng.integers(len(pool)))])
            parts.append(spaces[int(rng.integers(len(spaces)))])
        texts.append("".join(parts))
    tok = ClipBpeTokenizer(exp / p["clip_tokenizer"]["bpe_file"], int(p["clip_tokenizer"].get("context_length", 77)),
                           pad_id=int(p["regenerator"].get("tokenizer_pad_id", 0)))
    ids = tok(texts)
    wp = WordPieceDecoder(exp / p["captioner"]["vocab_file"], p["captioner"]["special_ids"])
    seqs = [rng.integers(-2, len(vocab) + 3, int(rng.integers(0, 25))).tolist() for _ in range(n_wordpiece)]
    (root / "tokenizers.json").write_text(json.dumps({
        "clip": {"pad_id": tok.pad_id, "context_length": tok.context_length, "texts": texts, "ids": ids.tolist()},
        "wordpiece": {"ids": seqs, "texts": [wp.decode(s).strip() for s in seqs]},
        "noise": {"seeds": [0, 1, 12345, 2**62 - 1, 2**64 - 1],
                  "values": [initial_noise_values(sd) for sd in (0, 1, 12345, 2**62 - 1, 2**64 - 1)]}}))


def initial_noise_values(seed: int, n: int = 4096) -> list[float]:
    from semgir_engine.semgir.pipeline import initial_noise

    return initial_noise(seed, (n,)).tolist()


def resample_cases(out: Path, seed: int = 1) -> None:
    """Pillow BICUBIC / BILINEAR resizes of noisy RGB images (what fit "short" / "resize" call), as raw
    bytes: input, and the output window [x0, x0 + w) x [y0, y0 + h) the native resampler must equal."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    inputs = {}
    #   filter,    in (w, h),     out (w, h),     window (x0, y0, w, h) or None (all of it)
    spec = [("bicubic", (640, 480), (512, 384), None),
            ("bicubic", (320, 240), (512, 384), None),
            ("bicubic", (1600, 1200), (512, 384), None),
            ("bicubic", (1200, 1600), (384, 512), (64, 128, 256, 256)),
            ("bicubic", (10, 300), (384, 11520), (64, 5632, 256, 256)),
            ("bicubic", (300, 10), (11520, 384), (5632, 64, 256, 256)),
            ("bicubic", (1000, 37), (10378, 384), (37, 3, 300, 200)),
            ("bicubic", (385, 401), (384, 400), None),
            ("bicubic", (384, 300), (492, 384), None),
            ("bicubic", (1, 1), (384, 384), None),
            ("bicubic", (7, 5), (538, 384), None),
            ("bicubic", (3001, 401), (2873, 384), (1308, 64, 256, 256)),
            ("bilinear", (100, 60), (427, 256), None),
            ("bilinear", (10, 300), (256, 7680), (0, 3712, 256, 256)),
            ("bilinear", (255, 300), (256, 301), None),
            ("bilinear", (1, 1), (256, 256), None),
            ("bilinear", (200, 256), (256, 328), None),
            ("bilinear", (3, 2), (384, 256), None),
            ("bilinear", (640, 480), (320, 240), None)]
    for k, (filt, (iw, ih), (ow, oh), win) in enumerate(spec):
        key = f"{iw}x{ih}"
        if key not in inputs:
            yy, xx = np.mgrid[0:ih, 0:iw]
            base = np.stack([(xx * 3.1) % 256, (yy * 2.3) % 256, ((xx * yy) * 0.01) % 256], -1)
            px = base + rng.normal(0, 60, base.shape) * (rng.random(base.shape[:2]) < 0.5)[..., None]
            px = np.clip(px, 0, 255).astype(np.uint8)
            px[rng.random(px.shape[:2]) < 0.02] = 255  # hard edges: the negative lobes must clip like Pillow's
            px[rng.random(px.shape[:2]) < 0.02] = 0
            inputs[key] = px
            (out / f"in_{key}.rgb").write_bytes(px.tobytes())
        res = np.asarray(Image.fromarray(inputs[key]).resize((ow, oh), Image.BICUBIC if filt == "bicubic"
                                                              else Image.BILINEAR))
        x0, y0, w, h = win or (0, 0, ow, oh)
        (out / f"out_{k}.rgb").write_bytes(np.ascontiguousarray(res[y0 : y0 + h, x0 : x0 + w]).tobytes())
        cases.append({"filter": filt, "input": f"in_{key}.rgb", "in_w": iw, "in_h": ih, "out_w": ow, "out_h": oh,
                      "x0": x0, "y0": y0, "w": w, "h": h, "output": f"out_{k}.rgb"})
    (out / "resample.json").write_text(json.dumps({"pillow": Image.__version__, "cases": cases}, indent=1))


def main(out: str) -> None:
    root = Path(out)
    export_patch(root)
    names = make_images(root / "images")
    exp = python_expectations(root / "images", names, root)
    (root / "expected.json").write_text(json.dumps(exp, indent=1))
    resample_cases(root / "resample")
    export_semgir(root)
    semgir_expectations(root, root / "images")
    tokenizer_cases(root)


if __name__ == "__main__":
    main(sys.argv[1])
