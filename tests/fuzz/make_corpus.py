"""(Re)generate the seed corpus in ``tests/fuzz/corpus/`` (small files; committed).

    python tests/fuzz/make_corpus.py

Images: every format Pillow writes here, in the modes the decoder converts (palette with and
without transparency, L/LA/RGBA, 1-bit, 16-bit, float, CMYK), animated GIF/WebP/APNG, an
EXIF-rotated JPEG, plus a truncated and a header-only image. Service requests: multipart and
JSON, with and without the bearer token. Result files, data manifests, export manifests.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def _img(mode: str, size=(12, 10), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    rgb = Image.fromarray(arr, "RGB")
    if mode == "P":
        return rgb.quantize(8)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0])).astype(np.uint16))
    if mode == "F":
        return Image.fromarray(rng.random((size[1], size[0])).astype(np.float32))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 70000, (size[1], size[0])).astype(np.int32))
    return rgb.convert(mode)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def images() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    rgb = _img("RGB")
    out["rgb.jpg"] = _save(rgb, "JPEG", quality=80)
    out["progressive.jpg"] = _save(rgb, "JPEG", progressive=True)
    out["cmyk.jpg"] = _save(_img("CMYK"), "JPEG")
    out["grey.jpg"] = _save(_img("L"), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    out["exif-rot.jpg"] = _save(rgb, "JPEG", exif=exif.tobytes())
    for mode in ("RGB", "RGBA", "L", "LA", "1", "P", "I;16"):
        out[f"{mode.replace(';', '')}.png"] = _save(_img(mode), "PNG")
    pal = _img("P")
    out["P-trns.png"] = _save(pal, "PNG", transparency=0)
    out["apng.png"] = _save(rgb, "PNG", save_all=True, append_images=[_img("RGB", seed=1)], duration=10)
    out["anim.gif"] = _save(pal, "GIF", save_all=True, append_images=[_img("P", seed=2)], duration=10, loop=0)
    out["trns.gif"] = _save(pal, "GIF", transparency=1)
    out["rgb.webp"] = _save(rgb, "WEBP", quality=50)
    out["rgba-lossless.webp"] = _save(_img("RGBA"), "WEBP", lossless=True)
    out["anim.webp"] = _save(rgb, "WEBP", save_all=True, append_images=[_img("RGB", seed=3)], duration=10)
    out["rgb.bmp"] = _save(rgb, "BMP")
    out["P.bmp"] = _save(pal, "BMP")
    out["rgb.tif"] = _save(rgb, "TIFF")
    out["cmyk-lzw.tif"] = _save(_img("CMYK"), "TIFF", compression="tiff_lzw")
    out["16.tif"] = _save(_img("I;16"), "TIFF")
    out["F.tif"] = _save(_img("F"), "TIFF")
    out["I.tif"] = _save(_img("I"), "TIFF")
    out["multi.tif"] = _save(rgb, "TIFF", save_all=True, append_images=[_img("RGB", seed=4)])
    out["rgb.ppm"] = _save(rgb, "PPM")
    out["L.pgm"] = _save(_img("L"), "PPM")
    out["rgb.ico"] = _save(_img("RGB", (16, 16)), "ICO")
    out["rgb.tga"] = _save(rgb, "TGA")
    out["rgb.pcx"] = _save(rgb, "PCX")
    out["rgb.sgi"] = _save(rgb, "SGI")
    out["rgb.im"] = _save(rgb, "IM")
    out["L.xbm"] = _save(_img("1"), "XBM")
    out["rgb.dds"] = _save(_img("RGBA", (8, 8)), "DDS")
    out["rgb.qoi"] = _save(rgb, "QOI")
    out["rgb.eps-like.psd-header"] = b"8BPS" + b"\x00" * 30
    out["truncated.png"] = out["RGB.png"][: len(out["RGB.png"]) // 2]
    out["header-only.jpg"] = out["rgb.jpg"][:160]
    for name in list(out):
        if len(out[name]) > 4096:
            del out[name]
    return out


def raw_request(body: bytes, ctype: str, token: str | None = "fuzz-token", path: str = "/v1/score") -> bytes:
    head = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", f"content-type: {ctype}", f"content-length: {len(body)}"]
    if token:
        head.append(f"authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def requests(imgs: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    png, jpg = imgs["RGB.png"], imgs["rgb.jpg"]
    b = b"fuzzboundary"
    parts = b""
    for name, data in (("a.png", png), ("b.jpg", jpg)):
        parts += (b"--" + b + b"\r\nContent-Disposition: form-data; name=\"images\"; filename=\"" + name.encode()
                  + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    parts += b"--" + b + b"--\r\n"
    out["multipart.http"] = raw_request(parts, "multipart/form-data; boundary=fuzzboundary")
    field = (b"--" + b + b"\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--" + b + b"--\r\n")
    out["multipart-field-only.http"] = raw_request(field, "multipart/form-data; boundary=fuzzboundary")
    js = json.dumps({"images": [base64.b64encode(png).decode(),
                                {"name": "x.gif", "data": base64.b64encode(imgs["anim.gif"]).decode()}]}).encode()
    out["json.http"] = raw_request(js, "application/json")
    out["json-no-token.http"] = raw_request(js, "application/json", token=None)
    out["json-bad-b64.http"] = raw_request(b'{"images": ["@@@"]}', "application/json")
    out["get-readyz.http"] = b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n"
    out["get-metrics.http"] = b"GET /metrics HTTP/1.1\r\nauthorization: Bearer fuzz-token\r\n\r\n"
    return out


def results() -> dict[str, dict[str, bytes]]:
    row = {"path": "/x/a.png", "sha256": "ab" * 32, "p_ai": 0.25, "label": "real", "method": "patch",
           "model_version": "v1", "random_weights": False, "caption": None, "error": None, "note": None,
           "width": 12, "height": 10, "timings_ms": {"patch": 1.5}, "attribution": None, "generator": None}
    err = dict(row, path="/x/b.png", p_ai=None, label=None, error="not a recognised image")
    jsonl = (json.dumps(row) + "\n" + json.dumps(err) + "\n").encode()
    sys.path.insert(0, str(HERE.parent.parent))
    from semgir_engine.results import COLUMNS, _flat

    buf = io.StringIO()
    import csv

    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerow(_flat(row))
    w.writerow(_flat(err))
    pq = b""
    try:
        import pyarrow as pa
        import pyarrow.parquet as papq

        from semgir_engine.results import parquet_schema

        sink = io.BytesIO()
        papq.write_table(pa.Table.from_pylist([_flat(row), _flat(err)], schema=parquet_schema()), sink)
        pq = sink.getvalue()
    except ImportError:
        pass
    return {"results_jsonl": {"two.jsonl": jsonl, "partial.jsonl": jsonl[:-20]},
            "results_csv": {"two.csv": buf.getvalue().encode()},
            "results_parquet": {"two.parquet": pq, "journal.jsonl": jsonl}}


def manifests() -> dict[str, bytes]:
    return {"ok.csv": b"path,label,source,split\na.png,real,web,train\nsub/b.jpg,ai,sd,val\n",
            "quoted.csv": b'path,label,source\n"x,y.png",AI,"src ""q"""\n'}


def export_manifests() -> dict[str, bytes]:
    entry = {"file": "patch_cnn.onnx", "sha256": "0" * 64, "spec_digest": None, "precision": "fp32",
             "files": [{"file": "patch_cnn.onnx", "sha256": "0" * 64}]}
    m = {"format": 1, "components": {"patch_cnn": {"fp32": entry}, "semgir_head": {"fp16": entry}},
         "preprocess": {"size": 256}}
    return {"manifest.json": json.dumps(m).encode(), "empty-components.json": b'{"components": {}}'}


def artifact_records() -> dict[str, bytes]:
    sys.path.insert(0, str(HERE))
    import hashlib

    from targets import ARTIFACT_PARTS

    from semgir_engine.runtime.cache import artifact_key

    rec = {"format": 1, "key": artifact_key(ARTIFACT_PARTS), "parts": ARTIFACT_PARTS, "meta": {"build_seconds": 1},
           "files": [{"name": "graph.bin", "sha256": hashlib.sha256(b"graph").hexdigest(), "bytes": 5}]}
    return {"ok.json": json.dumps(rec).encode(), "wrong-hash.json": json.dumps(
        dict(rec, files=[dict(rec["files"][0], sha256="0" * 64)])).encode()}


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    imgs = images()
    sets = {"image": imgs, "request": requests(imgs), "manifest_csv": manifests(),
            "export_manifest": export_manifests(), "artifact_record": artifact_records(), **results()}
    total = 0
    for target, files in sets.items():
        d = CORPUS / target
        d.mkdir(parents=True)
        for name, data in files.items():
            if data:
                (d / name).write_bytes(data)
                total += len(data)
    print(f"{sum(len(v) for v in sets.values())} seeds, {total} bytes in {CORPUS}")


if __name__ == "__main__":
    main()
