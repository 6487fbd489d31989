"""ONNX export: every registered component exports at tiny size and validates; each validation
check raises its own typed error when the graph is tampered with; manifest, overwrite refusal,
fp16, CLI and the artifact cache."""

from __future__ import annotations

import json
import shutil

import pytest

from semgir_engine import registry

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from export_helpers import tiny_export_dir  # noqa: E402

from semgir_engine.export import errors as E  # noqa: E402
from semgir_engine.semgir.sources import ModelSource  # noqa: E402
from semgir_engine.spec import Precision  # noqa: E402

TINY = ModelSource.parse("tiny")


@pytest.fixture(scope="module")
def tiny_export():
    return tiny_export_dir()


@pytest.fixture(scope="module")
def manifest(tiny_export):
    return json.loads((tiny_export[0] / "manifest.json").read_text())


@pytest.mark.parametrize("name", registry.names())
def test_every_component_exports_and_validates(tiny_export, manifest, name):
    import onnx

    from semgir_engine.export.onnx_export import sha256_file

    out, _ = tiny_export
    spec = registry.get(name, "tiny")
    entry = manifest["components"][name]["fp32"]
    path = out / entry["file"]
    assert sha256_file(path) == entry["sha256"]
    assert entry["spec_digest"] == spec.digest() and entry["opset"] >= 18
    v = entry["validation"]
    assert [p["point"] for p in v["points"]] == ["opt", "min"]
    assert len({p["batch"] for p in v["points"]}) == 2  # two batch sizes: the batch axis is dynamic
    assert v["max_abs_diff"] <= spec.tolerance.fp32_atol and v["min_cosine"] > 0.9999
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == spec.output_names()
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_manifest_records_versions_source_and_preprocessing(manifest):
    head = manifest["components"]["semgir_head"]["fp32"]
    assert head["versions"]["torch"] and head["versions"]["onnx"] and head["versions"]["onnxruntime"]
    assert head["source"]["kind"] == "tiny" and head["source"]["fingerprint"].startswith("tiny-seed0")
    assert manifest["components"]["clip_image"]["fp32"]["preprocess"]["size"] == registry.get("clip_image", "tiny").preprocess.size
    pipe = manifest["pipeline"]
    assert {"captioner", "regenerator", "embedder", "head", "clip_tokenizer"} <= set(pipe)


def test_refuses_to_overwrite_without_force(tiny_export, tmp_path):
    from semgir_engine.export.onnx_export import export_component, export_components

    out, _ = tiny_export
    with pytest.raises(E.ExportExistsError, match="--force"):
        export_component("semgir_head", TINY, out)
    with pytest.raises(E.ExportExistsError):
        export_components(["semgir_head", "clip_text"], TINY, out)
    # force replaces (in a copy, the session's export stays as it is)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    rec = export_component("semgir_head", TINY, copy, force=True)
    assert rec.validation["max_abs_diff"] < 1e-5


def _tampered(src, dst, edit):
    import onnx

    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def test_validation_typed_errors(tiny_export, tmp_path):
    import torch

    from semgir_engine.export.validate import validate
    from semgir_engine.semgir.components import build_component

    out, _ = tiny_export
    spec = registry.get("semgir_head", "tiny")
    graph = out / "semgir_head.fp32.onnx"
    module = build_component("semgir_head", TINY)
    assert validate("semgir_head", spec, str(graph), module, Precision.FP32).max_abs_diff < 1e-5

    def rename_output(m):
        old = m.graph.output[0].name
        m.graph.output[0].name = "scores"
        for n in m.graph.node:
            for i, o in enumerate(n.output):
                if o == old:
                    n.output[i] = "scores"

    bad = _tampered(graph, tmp_path / "names.onnx", rename_output)
    with pytest.raises(E.OutputNamesMismatch, match="semgir_head.*scores"):
        validate("semgir_head", spec, str(bad), module, Precision.FP32)

    def fix_batch(m):
        d = m.graph.input[0].type.tensor_type.shape.dim[0]
        d.dim_value = 32

    bad = _tampered(graph, tmp_path / "axes.onnx", fix_batch)
    with pytest.raises(E.DynamicAxesMismatch, match="features axis 0"):
        validate("semgir_head", spec, str(bad), module, Precision.FP32)

    class TwoRows(torch.nn.Module):  # a reference whose output shape differs from the graph's
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)[:, :1]

    with pytest.raises(E.ShapeMismatch):
        validate("semgir_head", spec, str(graph), TwoRows(module), Precision.FP32)

    perturbed = build_component("semgir_head", TINY)
    with torch.no_grad():
        perturbed.net[0].weight.add_(0.05)
    with pytest.raises(E.ValuesMismatch) as exc:
        validate("semgir_head", spec, str(graph), perturbed, Precision.FP32)
    assert exc.value.component == "semgir_head" and exc.value.worst > spec.tolerance.fp32_atol
    assert isinstance(exc.value, E.ValidationError)


@pytest.mark.parametrize("name", ["semgir_head", "vae_decoder"])
def test_fp16_export_validates_by_cosine(tmp_path, name):
    import onnx

    from semgir_engine.export.onnx_export import export_component

    rec = export_component(name, TINY, tmp_path, precision=Precision.FP16)
    spec = registry.get(name, "tiny")
    assert rec.validation["min_cosine"] >= spec.tolerance.fp16_min_cosine
    model = onnx.load(rec.path)
    types = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
    # inputs and outputs stay fp32; sensitive ops stay fp32
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    if name == "semgir_head":
        assert all(p["decision_agreement"] == 1.0 for p in rec.validation["points"])


def test_cli_export(tmp_path):
    from click.testing import CliRunner

    from semgir_engine.cli import main

    out = tmp_path / "cli"
    args = ["export", "--components", "semgir_head", "--models", "tiny", "--out", str(out), "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert (out / "semgir_head.fp32.onnx").is_file() and (out / "manifest.json").is_file()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "--force" in r.output
    r = CliRunner().invoke(main, args + ["--force", "--triton-repo", str(tmp_path / "triton")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "triton" / "semgir_head" / "config.pbtxt").is_file()
    assert (tmp_path / "triton" / "semgir_head" / "1" / "model.onnx").is_file()
    r = CliRunner().invoke(main, ["export", "--components", "unett", "--models", "tiny", "--out", str(out)])
    assert r.exit_code == 2 and "clip_image" in r.output


def test_cache_rebuilds_tampered_or_foreign_artifact(tmp_path, caplog):
    """The content-keyed artifact cache (TensorRT engines use it): a hit is not rebuilt; a corrupt or
    foreign artifact is detected and rebuilt."""
    from semgir_engine.runtime.cache import ArtifactCache

    builds = []

    def build(tmp):
        builds.append(1)
        (tmp / "graph.bin").write_bytes(bytes(range(256)) * 64)
        return {"file": "graph.bin"}

    cache = ArtifactCache(tmp_path / "cache")
    parts = {"kind": "test", "component": "semgir_head", "precision": "fp32"}
    a = cache.get_or_build(parts, build)
    b = cache.get_or_build(parts, build)  # hit: not rebuilt
    assert b.key == a.key and len(builds) == 1
    assert a.key == cache.dir_for(a.key).name
    assert cache.get_or_build(dict(parts, precision="fp16"), build).key != a.key  # other inputs, other key

    path = a.path("graph.bin")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cache.check(a.key)[0] is None
    with caplog.at_level("WARNING"):
        c = cache.get_or_build(parts, build)
    assert "sha256 differs" in caplog.text and len(builds) == 3
    assert cache.check(c.key)[0] is not None

    rec = c.dir / "artifact.json"
    info = json.loads(rec.read_text())
    info["parts"]["component"] = "unet"
    rec.write_text(json.dumps(info))
    assert "foreign" in cache.check(c.key)[1]
    d = cache.get_or_build(parts, build)
    assert cache.check(d.key)[1] == "ok"


def test_cache_root_from_environment(monkeypatch, tmp_path):
    from semgir_engine.runtime.cache import default_root

    monkeypatch.setenv("SEMGIR_CACHE", str(tmp_path))
    assert default_root() == tmp_path / "artifacts"
    assert default_root(tmp_path / "x") == tmp_path / "x"


def test_ssa_fix_renames_duplicate_producers():
    import onnx
    from onnx import helper

    from semgir_engine.export.onnx_export import _fix_ssa

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [1])
    nodes = [helper.make_node("Relu", ["x"], ["embedding"]), helper.make_node("Neg", ["embedding"], ["embedding"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    assert _fix_ssa(model) == 1
    onnx.checker.check_model(model)
    assert model.graph.node[1].input[0] == "embedding__ssa1" and model.graph.node[1].output[0] == "embedding"
