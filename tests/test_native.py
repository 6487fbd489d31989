"""The native runner (`semgir-score`, libsemgir) against the Python ONNX Runtime backend, row by row.

Needs the native build (`bash scripts/build_native.sh`, which `scripts/install.sh` runs); skipped
without it. Over 50 images of the shared data sets (when present) and the fixture matrix of every
decoding rule: same rows (path, sha256, size, note, label; p_ai within 1e-5), same exit status. And
the SemGIR method on the tiny export (defaults, guidance with odd steps, beam search): same captions,
labels and fields, p_ai within 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from semgir_engine.cli import main

import native_fixtures

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "build" / "native" / "semgir-score"
SHARED = [ROOT.parent / "shared" / "data" / "aigi", ROOT.parent / "shared" / "data" / "aigi2"]
EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif"}

pytestmark = pytest.mark.skipif(not os.access(RUNNER, os.X_OK),
                                reason="native part not built (bash scripts/build_native.sh)")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("native-export")
    r = CliRunner().invoke(main, ["-q", "export", "--components", "patch_cnn", "--out", str(d), "--force"])
    assert r.exit_code == 0, r.output
    return d


def _native(export_dir: Path, paths: list[str], batch_size: int = 8, runtime: str = "onnxruntime") -> tuple[int, list[dict]]:
    env = dict(os.environ, SEMGIR_ORT_THREADS="1")
    p = subprocess.run([str(RUNNER), "--export-dir", str(export_dir), "--batch-size", str(batch_size),
                        "--runtime", runtime, *paths],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode in (0, 3), p.stderr
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines()]


def _python(export_dir: Path, paths: list[str], out: Path) -> tuple[int, list[dict]]:
    r = CliRunner().invoke(main, ["score", *paths, "--backend", "onnxruntime", "--export-dir", str(export_dir),
                                  "--method", "patch", "--out", str(out), "--no-progress"])
    assert r.exit_code in (0, 3), r.output
    return r.exit_code, [json.loads(line) for line in out.read_text().splitlines()]


def _compare(py: list[dict], nat: list[dict], unsupported: tuple[str, ...] = ()) -> int:
    """Every row equal (p_ai within 1e-5); returns how many rows were scored by both."""
    assert [r["path"] for r in nat] == [r["path"] for r in py]
    scored = 0
    for p, n in zip(py, nat):
        name = Path(p["path"]).name
        assert set(n) == set(p), name
        if name in unsupported:
            assert n["error"] and "not supported by the native decoder" in n["error"], name
            continue
        assert (p["error"] is None) == (n["error"] is None), (name, p["error"], n["error"])
        if p["error"] is not None:
            assert n["error"].split(":")[0] == p["error"].split(":")[0], (name, p["error"], n["error"])
            assert n["p_ai"] is None and n["label"] is None
            continue
        for k in ("sha256", "label", "width", "height", "note", "method", "model_version", "random_weights"):
            assert n[k] == p[k], (name, k, p[k], n[k])
        assert abs(n["p_ai"] - p["p_ai"]) <= 1e-5, (name, p["p_ai"], n["p_ai"])
        assert set(n["timings_ms"]) >= {"patch"}
        scored += 1
    return scored


def _shared_images(n: int) -> list[str]:
    files = sorted(str(f) for d in SHARED if d.is_dir() for f in d.rglob("*") if f.suffix.lower() in EXTS)
    if len(files) < n:
        return []
    step = len(files) / n  # spread over every source and both classes
    return [files[int(i * step)] for i in range(n)]


def test_runner_matches_python_on_50_shared_images(export_dir, tmp_path):
    paths = _shared_images(50)
    if not paths:
        pytest.skip("../shared/data images not present")
    rc_py, py = _python(export_dir, paths, tmp_path / "py.jsonl")
    rc_nat, nat = _native(export_dir, paths)
    assert rc_nat == rc_py
    assert _compare(py, nat) == 50
    version = subprocess.run([str(RUNNER), "--version"], capture_output=True, text=True).stdout
    if "openvino" in version:  # the second native runtime, same rows
        rc_ov, ov = _native(export_dir, paths, runtime="openvino")
        assert rc_ov == rc_py
        assert _compare(py, ov) == 50


def test_runner_matches_python_on_every_decoding_rule_and_bad_input(export_dir, tmp_path):
    names = native_fixtures.make_images(tmp_path / "images")
    paths = [str(tmp_path / "images" / n) for n in names] + [str(tmp_path / "missing.jpg")]
    rc_py, py = _python(export_dir, paths, tmp_path / "py.jsonl")
    rc_nat, nat = _native(export_dir, paths, batch_size=5)
    assert rc_py == rc_nat == 3
    scored = _compare(py, nat, native_fixtures.NATIVE_UNSUPPORTED)
    assert scored >= 30
    notes = {Path(r["path"]).name: r["note"] for r in nat if r["note"]}
    assert notes["jpeg_cmyk.jpg"] == "converted CMYK to RGB"
    assert notes["png_grey16.png"] == "converted I;16 to 8-bit"
    assert notes["webp_animated.webp"].startswith("animated (2 frames)")
    assert {r["width"] for r in nat if Path(r["path"]).name == "jpeg_exif_orientation_6.jpg"} == {200}


def test_runner_walks_folders_like_the_python_cli(export_dir, tmp_path):
    d = tmp_path / "tree"
    (d / "b").mkdir(parents=True)
    (d / "a").mkdir()
    names = native_fixtures.make_images(tmp_path / "src")
    for i, n in enumerate(x for x in names if x.startswith(("jpeg_rgb", "png_rgb", "webp_lossy."))):
        (d / ("a" if i % 2 else "b") / n).write_bytes((tmp_path / "src" / n).read_bytes())
    (d / "notes.txt").write_text("not an image, skipped by extension")
    rc_py, py = _python(export_dir, [str(d)], tmp_path / "py.jsonl")
    rc_nat, nat = _native(export_dir, [str(d)])
    assert rc_py == rc_nat == 0
    assert _compare(py, nat) == len(py) >= 4


def test_runner_usage_and_fatal_exit_codes(export_dir, tmp_path):
    assert subprocess.run([str(RUNNER)], capture_output=True).returncode == 2
    assert subprocess.run([str(RUNNER), "--export-dir", str(export_dir), "--batch-size", "0", "x.jpg"],
                          capture_output=True).returncode == 2
    p = subprocess.run([str(RUNNER), "--export-dir", str(tmp_path / "nothing"), "x.jpg"], capture_output=True, text=True)
    assert p.returncode == 1 and "manifest.json" in p.stderr
    p = subprocess.run([str(RUNNER), "--export-dir", str(export_dir), "--method", "semgir", "x.jpg"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "captioner" in p.stderr  # a patch-only export has no SemGIR settings
    p = subprocess.run([str(RUNNER), "--export-dir", str(export_dir), "--method", "semgir", "--num-beams", "0", "x.jpg"],
                       capture_output=True, text=True)
    assert p.returncode == 2


@pytest.fixture(scope="module")
def semgir_export(tmp_path_factory):
    return native_fixtures.export_semgir(tmp_path_factory.mktemp("native-semgir"))


@pytest.mark.parametrize("extra", [[], ["--guidance-scale", "2.5", "--steps", "3", "--seed", "11"],
                                   ["--num-beams", "2", "--max-new-tokens", "9"]], ids=["defaults", "cfg", "beams"])
def test_runner_semgir_matches_python_onnxruntime(semgir_export, tmp_path, extra):
    """`semgir-score --method semgir` against `semgir-engine score --backend onnxruntime --method semgir`: same
    captions, labels (withheld: tiny weights) and fields, p_ai within 1e-4."""
    images = tmp_path / "images"
    names = native_fixtures.make_images(images)
    paths = [str(images / n) for n in native_fixtures.SEMGIR_IMAGES if n in names]
    out = tmp_path / "py.jsonl"
    r = CliRunner().invoke(main, ["score", *paths, "--backend", "onnxruntime", "--device", "cpu", "--export-dir",
                                  str(semgir_export), "--method", "semgir", "--out", str(out), "--no-progress", *extra])
    assert r.exit_code == 0, r.output
    py = [json.loads(line) for line in out.read_text().splitlines()]
    p = subprocess.run([str(RUNNER), "--export-dir", str(semgir_export), "--method", "semgir", *extra, *paths],
                       capture_output=True, text=True, env=dict(os.environ, SEMGIR_ORT_THREADS="1"), timeout=300)
    assert p.returncode == 0, p.stderr
    nat = [json.loads(line) for line in p.stdout.splitlines()]
    assert [n["path"] for n in nat] == [q["path"] for q in py] and len(nat) == len(paths) >= 8
    for q, n in zip(py, nat):
        assert set(n) == set(q)
        for k in ("sha256", "caption", "label", "width", "height", "note", "method", "model_version",
                  "random_weights", "error"):
            assert n[k] == q[k], (n["path"], k, q[k], n[k])
        assert n["random_weights"] is True and n["label"] is None and n["caption"]
        assert abs(n["p_ai"] - q["p_ai"]) <= 1e-4, (n["path"], q["p_ai"], n["p_ai"])
        assert set(n["timings_ms"]) >= set(q["timings_ms"]) == {"caption", "regenerate", "embed", "head"}
