"""Reduced precision: calibration sets, calibration tensors, INT8 quantization (ONNX Runtime QDQ /
dynamic, nncf for OpenVINO), the OpenVINO runner at fp32 / bf16 / int8, and precision plumbing.

Stated tolerances (tiny graphs, against the fp32 graph on the same inputs):
- OpenVINO fp32 vs ONNX Runtime fp32: max |diff| <= 1e-4 (same math, other kernels).
- bf16 (OpenVINO precision hint): cosine >= 0.999 per output.
- INT8 (static QDQ, dynamic, nncf): cosine >= 0.98 per output (the spec's default INT8 tier).
- patch detector INT8 end to end: >= 90% of decisions equal to fp32 on 12 synthetic images.
- tiny SemGIR end to end on OpenVINO bf16 / int8: every p_ai within 0.05 of fp32 ONNX Runtime.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

from export_helpers import images, tiny_export_dir  # noqa: E402

from semgir_engine.calibration.calibset import (CalibrationSetError, draw_calibration_set,  # noqa: E402
                                                load_calibration_set, split_items)
from semgir_engine.calibration.quantize import compare, quantize_openvino, quantize_ort  # noqa: E402
from semgir_engine.precision import PrecisionError, resolve_precision  # noqa: E402
from semgir_engine.runtime.openvino import OvRunner  # noqa: E402
from semgir_engine.runtime.ort import OrtRunner  # noqa: E402
from semgir_engine.spec import Precision, PrecisionTier  # noqa: E402

INT8 = PrecisionTier(Precision.INT8, 0.98)
BF16 = PrecisionTier(Precision.BF16, 0.999)


# ------------------------------------------------------------------------------------------
# tiny graphs
# ------------------------------------------------------------------------------------------
class _ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 8, 3, padding=1))

    def forward(self, x):
        return self.body(x)


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 32))

    def forward(self, x):
        return self.net(x)


def _export(module, example, path, in_name, out_name):
    torch.onnx.export(module.eval(), (example,), str(path), input_names=[in_name], output_names=[out_name],
                      dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}}, opset_version=18, dynamo=False)
    return path


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinygraphs")
    conv = _export(_ConvNet(), torch.randn(2, 3, 16, 16), d / "conv.onnx", "x", "y")
    mlp = _export(_Mlp(), torch.randn(2, 64), d / "mlp.onnx", "x", "y")
    rng = np.random.default_rng(0)
    conv_feeds = [{"x": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)} for _ in range(6)]
    mlp_feeds = [{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(6)]
    return d, conv, mlp, conv_feeds, mlp_feeds


def test_openvino_runner_fp32_matches_onnxruntime(graphs):
    _, conv, _, feeds, _ = graphs
    ov, ort = OvRunner(conv, "fp32"), OrtRunner(conv, device="cpu")
    assert ov.input_names == ["x"] and ov.output_names == ["y"]
    for f in feeds[:2]:
        a, b = ov(**f)["y"], ort(**f)["y"]
        assert a.shape == b.shape == (4, 8, 8, 8)
        assert np.max(np.abs(a - b)) <= 1e-4
    # float64 input is cast to the graph's dtype; a missing input names itself
    assert ov(x=feeds[0]["x"].astype(np.float64))["y"].dtype == np.float32
    with pytest.raises(KeyError, match="x"):
        ov(z=feeds[0]["x"])


def test_openvino_bf16_within_tier(graphs):
    _, conv, mlp, conv_feeds, mlp_feeds = graphs
    for path, feeds in ((conv, conv_feeds), (mlp, mlp_feeds)):
        par = compare("tiny", BF16, "openvino", OrtRunner(path, device="cpu"), OvRunner(path, "bf16"), feeds)
        assert par.accepted, par
        assert par.min_cosine >= 0.999 and par.max_abs_diff > 0  # bf16 is really on: outputs differ a little


def test_static_qdq_int8_conv(graphs):
    import onnx

    d, conv, _, feeds, _ = graphs
    cal, val = split_items(feeds, 0.34, seed=0)
    out = d / "conv.int8.onnx"
    info = quantize_ort(conv, out, "patch_cnn", cal)
    assert info["method"] == "static-qdq" and info["calibration_batches"] == len(cal)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    par = compare("conv", INT8, "onnxruntime", OrtRunner(conv, device="cpu"), OrtRunner(out, device="cpu"), val)
    assert par.accepted and par.min_cosine >= 0.98, par


def test_dynamic_int8_matmul(graphs):
    import onnx

    d, _, mlp, _, feeds = graphs
    out = d / "mlp.int8.onnx"
    assert quantize_ort(mlp, out, "semgir_head", feeds)["method"] == "dynamic"
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "DynamicQuantizeLinear" in ops and ("MatMulInteger" in ops or "MatMulIntegerToFloat" in ops)
    par = compare("mlp", INT8, "onnxruntime", OrtRunner(mlp, device="cpu"), OrtRunner(out, device="cpu"), feeds)
    assert par.accepted, par


def test_nncf_int8_openvino(graphs):
    d, conv, _, feeds, _ = graphs
    cal, val = split_items(feeds, 0.34, seed=0)
    xml = d / "conv.int8.openvino.xml"
    info = quantize_openvino(conv, xml, "patch_cnn", cal)
    assert xml.is_file() and xml.with_suffix(".bin").is_file() and info["method"] == "nncf"
    assert "FakeQuantize" in xml.read_text()  # really quantized, not a copy of the fp32 graph
    par = compare("conv", INT8, "openvino", OrtRunner(conv, device="cpu"), OvRunner(xml, "int8"), val)
    assert par.accepted, par


def test_compare_rejects_below_tier(graphs):
    _, conv, _, feeds, _ = graphs
    ref = OrtRunner(conv, device="cpu")
    noisy = lambda **f: {"y": ref(**f)["y"] + np.random.default_rng(0).normal(0, 5, (4, 8, 8, 8)).astype(np.float32)}  # noqa: E731
    par = compare("conv", INT8, "onnxruntime", ref, noisy, feeds[:2])
    assert not par.accepted and "cosine" in par.reason
    strict = PrecisionTier(Precision.INT8, 0.0, max_abs=1e-9)
    assert "max |diff|" in compare("conv", strict, "x", ref, OvRunner(conv, "bf16"), feeds[:1]).reason


# ------------------------------------------------------------------------------------------
# precision type and plumbing
# ------------------------------------------------------------------------------------------
def test_precision_values_and_backends():
    from semgir_engine import registry
    from semgir_engine.errors import UnknownNameError
    from semgir_engine.scorer import PRECISIONS

    assert PRECISIONS == ("fp32", "fp16", "bf16", "int8")
    assert Precision.parse("int8") is Precision.INT8
    with pytest.raises(UnknownNameError, match="bf16"):
        Precision.parse("int4")
    assert resolve_precision("openvino", "int8") is Precision.INT8
    assert resolve_precision("tensorrt", None) is Precision.FP16
    with pytest.raises(PrecisionError, match="openvino"):
        resolve_precision("onnxruntime", "bf16")
    with pytest.raises(PrecisionError):
        resolve_precision("torch", "int8")
    spec = registry.get("unet", "tiny")
    assert spec.tier("int8").min_cosine == 0.98 and spec.tier(Precision.BF16).min_cosine == 0.99
    from dataclasses import replace

    # tiers gate validation only: they leave the spec digest (and so every exported graph) current
    assert replace(spec, tiers=(PrecisionTier(Precision.INT8, 0.5),)).digest() == spec.digest()
    assert replace(spec, tiers=(PrecisionTier(Precision.INT8, 0.5),)).tier("int8").min_cosine == 0.5


# ------------------------------------------------------------------------------------------
# calibration sets
# ------------------------------------------------------------------------------------------
def _data(tmp: Path, n: int = 12) -> Path:
    from conftest import make_image

    root = tmp / "data" / "pool"
    rows = []
    for i in range(n):
        label = "ai" if i % 2 else "real"
        src = "a" if i % 3 else "b"
        p = root / src / label / f"im{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        make_image(i, size=(280 + 4 * i, 260)).save(p)
        rows.append({"path": str(p.relative_to(root)), "label": label, "source": src})
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "source"])
        w.writeheader()
        w.writerows(rows)
    return root / "manifest.csv"


def test_calibration_set_roundtrip_and_tamper(tmp_path):
    manifest = _data(tmp_path)
    excl = [str(manifest.parent / "a" / "ai" / "im1.png")]
    cs = draw_calibration_set(manifest, "t", n_real=4, n_ai=4, exclude=excl)
    assert cs.counts() == {"real": 4, "ai": 4} and cs.data_root == "pool"
    assert all(not it.path.endswith("im1.png") for it in cs.items)
    assert {it.source for it in cs.items} == {"a", "b"}  # spread over the sources
    assert draw_calibration_set(manifest, "t", n_real=4, n_ai=4, exclude=excl).digest == cs.digest  # seeded
    f = cs.save(tmp_path / "t.json")
    back = load_calibration_set(f)
    assert back.digest == cs.digest and back.items == cs.items
    ims, ok, failed = back.load_images(tmp_path / "data")
    assert len(ims) == 8 and not failed
    # a changed image is reported for that item; the others load
    (manifest.parent / back.items[0].path).write_bytes(b"not the same image")
    ims, ok, failed = back.load_images(tmp_path / "data", min_fraction=0.5)
    assert len(ims) == 7 and failed[0][0] == back.items[0] and "sha256" in failed[0][1]
    with pytest.raises(CalibrationSetError, match="only 7/8"):
        back.load_images(tmp_path / "data", min_fraction=1.0)
    # a hand-edited file no longer matches its digest
    d = json.loads(f.read_text())
    d["items"][0]["label"] = "ai" if d["items"][0]["label"] == "real" else "real"
    f.write_text(json.dumps(d))
    with pytest.raises(CalibrationSetError, match="digest"):
        load_calibration_set(f)
    with pytest.raises(CalibrationSetError, match="aigi-train-128"):
        load_calibration_set("no-such-set")
    with pytest.raises(CalibrationSetError, match="available"):
        draw_calibration_set(manifest, "t", n_real=40, n_ai=1)


def test_committed_calibration_set():
    cs = load_calibration_set("aigi-train-128")
    assert cs.counts() == {"real": 64, "ai": 64} and len({it.sha256 for it in cs.items}) == 128
    assert cs.drawn_from["excluded"] > 0  # the patch detector's evaluation images are left out
    try:
        root = cs.root()
    except CalibrationSetError:
        pytest.skip("../shared/data is not on this machine")
    from semgir_engine.calibration.calibset import patch_eval_paths

    evald = {str(Path(p).resolve()) for p in patch_eval_paths(root / "manifest.csv")}
    assert not evald & {str((root / it.path).resolve()) for it in cs.items}


# ------------------------------------------------------------------------------------------
# the quantize step on exported graphs (tiny SemGIR pipeline and the shipped patch CNN)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qexport(tmp_path_factory):
    """A copy of the tiny export (the shared one stays untouched), quantized on a small set."""
    from semgir_engine.calibration.quantize import quantize_export
    from semgir_engine.calibration.tensors import PipelineSettings

    tmp = tmp_path_factory.mktemp("quant")
    d = tmp / "export"
    shutil.copytree(tiny_export_dir()[0], d)
    cs = draw_calibration_set(_data(tmp, 16), "tiny-cal", n_real=8, n_ai=8)
    cache = tmp / "c" / "artifacts"  # = the CLI's cache under SEMGIR_CACHE=tmp/c: later tests reuse the recording
    names = ["patch_cnn", "vae_decoder", "unet", "semgir_head"]
    res = quantize_export(d, names, cs, settings=PipelineSettings(batch_size=4), data_dir=tmp / "data",
                          cache_dir=cache)
    return d, cs, cache, res, tmp


def test_quantize_export_records_manifest(qexport):
    d, cs, cache, res, _ = qexport
    m = json.loads((d / "manifest.json").read_text())
    by = {(r.component, r.backend, r.precision): r for r in res}
    assert len(by) == 4 * 3
    for name in ("patch_cnn", "vae_decoder", "unet", "semgir_head"):
        q = m["quantization"][name]
        assert set(q) == {"onnxruntime-int8", "openvino-int8", "openvino-bf16"}
        assert q["openvino-int8"]["calibration_set"] == cs.ref
        ent = m["components"][name]
        for key, r in (("onnxruntime-int8", by[(name, "onnxruntime", "int8")]),
                       ("openvino-int8", by[(name, "openvino", "int8")])):
            assert q[key]["accepted"] == r.accepted
            assert r.accepted == (q[key]["parity"]["min_cosine"] >= 0.98), q[key]["reason"]
        if q["onnxruntime-int8"]["accepted"]:
            assert ent["int8"]["file"] == f"{name}.int8.onnx" and (d / ent["int8"]["file"]).is_file()
        if q["openvino-int8"]["accepted"]:
            assert (d / ent["int8"]["openvino"]["file"]).is_file()
        if q["openvino-bf16"]["accepted"]:
            assert ent["bf16"]["file"] == ent["fp32"]["file"]
    # at least the conv graphs quantize within the tier on these tiny models
    assert by[("vae_decoder", "openvino", "int8")].accepted and by[("patch_cnn", "openvino", "int8")].accepted
    assert res[0].info.get("seconds") is not None


def test_quantize_is_cached(qexport):
    """A second run on the same graphs and set rebuilds nothing (the artifact cache is keyed by graph
    sha256, spec digest, calibration set digest, recipe and versions)."""
    from semgir_engine.calibration.quantize import quantize_export

    d, cs, cache, res, tmp = qexport
    before = sorted(p.name for p in cache.rglob("artifact.json"))
    n_dirs = len(list(cache.glob("*/*")))
    res2 = quantize_export(d, ["patch_cnn"], cs, data_dir=tmp / "data", cache_dir=cache)
    assert sorted(p.name for p in cache.rglob("artifact.json")) == before and len(list(cache.glob("*/*"))) == n_dirs
    assert [r.parity for r in res2] == [r.parity for r in res if r.component == "patch_cnn"]


def test_calibration_tensors_load_per_component(qexport):
    """The recorded tensors come back from the cache one component at a time (each lookup reads that
    component's file; nothing else is held), equal on every lookup."""
    from semgir_engine.calibration.tensors import PipelineSettings, StoredFeeds, calibration_tensors

    d, cs, cache, _, tmp = qexport
    t = calibration_tensors(d, cs, ["unet", "vae_decoder"], settings=PipelineSettings(batch_size=4),
                            data_dir=tmp / "data", cache_dir=cache)
    assert isinstance(t, StoredFeeds) and sorted(t) == ["unet", "vae_decoder"] and len(t) == 2
    a, b = t["unet"], t["unet"]
    assert a and a is not b and a[0].keys() == b[0].keys()
    for k in a[0]:
        assert a[0][k] is not b[0][k] and np.array_equal(a[0][k], b[0][k])
    with pytest.raises(KeyError):
        t["clip_image"]


def test_patch_detector_int8_and_bf16_agree_with_fp32(qexport):
    from semgir_engine.runtime.ort_patch import OrtPatchDetector
    from semgir_engine.scorer import Scorer, ScorerConfig

    d = qexport[0]
    rng = np.random.default_rng(3)
    ims = [rng.integers(0, 256, (280, 300, 3), dtype=np.uint8) for _ in range(12)]
    ref = OrtPatchDetector(d, device="cpu")
    p32 = ref.predict(ims)
    for prec in ("bf16", "int8"):
        det = Scorer(ScorerConfig(method="patch", backend="openvino", precision=prec, export_dir=str(d)))._impl
        assert det.precision == prec and det.version.endswith(prec)
        p = det.predict(ims)
        assert np.mean((p >= ref.threshold) == (p32 >= ref.threshold)) >= 0.9, (prec, p, p32)


def test_scorer_openvino_backend(qexport):
    from semgir_engine.scorer import Scorer, ScorerConfig

    d = qexport[0]
    ims = images(4)
    with Scorer(ScorerConfig(method="semgir", backend="onnxruntime", export_dir=str(d), batch_size=2)) as s:
        ref = s.score(ims)
    for prec in ("bf16", "int8"):
        with Scorer(ScorerConfig(method="semgir", backend="openvino", export_dir=str(d), precision=prec,
                                 batch_size=2)) as s:
            got = s.score(ims)
            assert s._impl.provider.describe()["backend"] == f"openvino-{prec}"
        for a, b in zip(got, ref):
            assert a.ok and abs(a.p_ai - b.p_ai) < 0.05, (prec, a.p_ai, b.p_ai)
    with pytest.raises(PrecisionError, match="bf16"):
        Scorer(ScorerConfig(method="patch", backend="onnxruntime", export_dir=str(d), precision="bf16"))
    # auto picks OpenVINO for bf16 / int8 (no TensorRT here)
    with Scorer(ScorerConfig(method="patch", backend="auto", export_dir=str(d), precision="int8")) as s:
        assert s._impl.backend == "openvino-int8" and s.version.endswith("+int8")
        assert all(r.ok for r in s.score(ims))


def test_cli_quantize_and_score(qexport, tmp_path):
    from click.testing import CliRunner

    from semgir_engine.cli import main

    _, cs, cache, _, tmp = qexport
    f = cs.save(tmp_path / "cs.json")
    d = tmp_path / "px"
    # export --precision int8 = the fp32 graph, then the quantize step on the calibration set
    r = CliRunner().invoke(main, ["export", "--components", "patch_cnn", "--precision", "int8", "--out", str(d),
                                  "--calibration-set", str(f), "--no-progress"],
                           env={"SEMGIR_CACHE": str(tmp / "clicache"), "SEMGIR_DATA_DIR": str(tmp / "data")})
    assert r.exit_code == 0, r.output
    assert "patch_cnn" in r.output and "openvino" in r.output
    m = json.loads((d / "manifest.json").read_text())
    assert {"fp32", "int8", "bf16"} <= set(m["components"]["patch_cnn"])
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(images(1)[0]).save(img)
    out = tmp_path / "o.jsonl"
    r = CliRunner().invoke(main, ["score", str(img), "--method", "patch", "--backend", "openvino", "--precision",
                                  "int8", "--export-dir", str(d), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text().splitlines()[0])
    assert row["p_ai"] is not None and row["model_version"].endswith("+int8")
    r = CliRunner().invoke(main, ["score", str(img), "--method", "patch", "--backend", "onnxruntime", "--precision",
                                  "bf16", "--export-dir", str(d), "--no-progress"])
    assert r.exit_code == 1 and "cannot run bf16" in r.output


def test_tensorrt_int8_import_safe(graphs, tmp_path):
    """TensorRT INT8 cannot run here (no GPU); its module imports, tells QDQ graphs apart, and its
    entry points raise the typed missing-dependency error."""
    import importlib.util

    from semgir_engine.errors import MissingDependencyError
    from semgir_engine.runtime import trt_int8

    d, conv, _, feeds, _ = graphs
    q = tmp_path / "c.int8.onnx"
    quantize_ort(conv, q, "patch_cnn", feeds[:2])
    assert trt_int8.has_qdq(q) and not trt_int8.has_qdq(conv)
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(MissingDependencyError, match="tensorrt"):
            trt_int8.int8_engine_factory(d)


def test_bench_precision_tiny(qexport, tmp_path):
    """The benchmark's one table: every configuration of a component, agreement against torch fp32."""
    from click.testing import CliRunner

    from semgir_engine.cli import main

    d, cs, _, _, tmp = qexport
    f = cs.save(tmp_path / "cs.json")
    out = tmp_path / "bp"
    r = CliRunner().invoke(main, ["bench-precision", "--export-dir", str(d), "--components", "vae_decoder",
                                  "--batch-sizes", "2", "--models", "tiny", "--calibration-set", str(f),
                                  "--data-dir", str(tmp / "data"), "--repeats", "1", "--threads", "1",
                                  "--out", str(out)], env={"SEMGIR_CACHE": str(tmp / "c")})
    assert r.exit_code == 0, r.output
    data = json.loads((out / "results.json").read_text())
    rows = {(x["backend"], x["precision"]): x for x in data["components"]}
    assert set(rows) == {("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                         ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")}
    assert rows[("torch", "fp32")]["cosine"] == pytest.approx(1.0)
    assert rows[("onnxruntime", "fp32")]["max_abs_diff"] < 1e-3
    assert all(x["cosine"] >= 0.98 for x in rows.values())
    assert "| vae_decoder | openvino | int8 | 2 |" in (out / "README.md").read_text()


def test_bench_precision_semgir_e2e_with_paper_reference(qexport, tmp_path):
    """End to end per precision in one run: ONNX Runtime fp32 is the agreement reference, the paper's
    50-step CFG setting (torch) is timed on its subset, and every row gets its speed-up over it."""
    from click.testing import CliRunner

    from semgir_engine.cli import main

    d, cs, _, _, tmp = qexport
    f = cs.save(tmp_path / "cs.json")
    out = tmp_path / "e2e"
    r = CliRunner().invoke(main, ["bench-precision", "--export-dir", str(d), "--models", "tiny",
                                  "--calibration-set", str(f), "--data-dir", str(tmp / "data"), "--semgir-images", "2",
                                  "--semgir-precisions", "int8", "--paper-reference-images", "1", "--resolution", "64",
                                  "--semgir-batch-sizes", "1,2", "--threads", "1", "--out", str(out)],
                           env={"SEMGIR_CACHE": str(tmp / "c")})
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "results.json").read_text())["semgir_e2e"]
    assert [(x["backend"], x["precision"], x.get("batch")) for x in rows] == [
        ("torch", "fp32", None), ("onnxruntime", "fp32", 1), ("openvino", "int8", 1), ("onnxruntime", "fp32", 2),
        ("openvino", "int8", 2)]
    ref, ort, ov, ort2, ov2 = rows
    assert ref["paper_reference"] and ref["images"] == 1 and ref["speedup_vs_paper_reference"] == pytest.approx(1.0)
    assert ort["images"] == ov["images"] == ort2["images"] == 2 and ort["max_abs_p_diff"] == 0.0
    # the scorer batches without changing results: ONNX Runtime fp32 at batch 2 = batch 1
    assert ort2["max_abs_p_diff"] < 1e-5 and ort2["decision_agreement"] == 1.0 and ort2["captions_identical"] == 2
    # 50 steps with CFG (100 UNet calls per image) against 4 without: the few-step rows are faster
    assert all(x["speedup_vs_paper_reference"] > 1 for x in (ort, ov, ort2, ov2))
    assert {"caption", "regenerate"} <= set(ort["stage_ms_per_image"])
    text = (out / "README.md").read_text()
    assert "| paper reference: torch fp32, 50 PNDM steps, CFG 7.5 |" in text
    assert "| few-step: openvino int8, batch 1 |" in text and "| few-step: openvino int8, batch 2 |" in text


def test_openvino_fallbacks(qexport):
    """int8 without an accepted IR runs bf16; bf16 rejected at validation runs fp32."""
    import copy

    from semgir_engine.runtime.manifest import load_manifest
    from semgir_engine.runtime.openvino import openvino_graph

    d = qexport[0]
    m = load_manifest(d)
    path, p = openvino_graph(d, m, "patch_cnn", "int8")
    assert p is Precision.INT8 and path.name.endswith(".xml")
    m2 = copy.deepcopy(m)
    m2["components"]["patch_cnn"].pop("int8")
    assert openvino_graph(d, m2, "patch_cnn", "int8") == (d / m["components"]["patch_cnn"]["fp32"]["file"], Precision.BF16)
    m2["quantization"]["patch_cnn"]["openvino-bf16"]["accepted"] = False
    assert openvino_graph(d, m2, "patch_cnn", "int8")[1] is Precision.FP32
    assert openvino_graph(d, m2, "patch_cnn", "bf16")[1] is Precision.FP32
