"""Triton model repository: configs checked structurally (Triton itself is not installable here).

Fast tier: an export directory with graphs whose IO follows the registry specs (no weights), the
repository written from it, every config parsed (Triton's own ModelConfig schema when
``tritonclient`` is installed, and our small parser) and checked against the graphs.
Slow tier: a real tiny export, and the BLS pipeline model run with a stand-in for Triton's
Python backend (BLS requests answered by onnxruntime on the repository's graphs) against the
engine's onnxruntime backend.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import types

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from semgir_engine import registry  # noqa: E402
from semgir_engine.export.triton import (  # noqa: E402
    PIPELINE_MODEL, TritonRepoError, load_config, parse_pbtxt, render_config, validate_repo, write_triton_repo)

_ONNX_TYPES = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}


def _fake_export(out, names=None, external=("unet",)):
    """Graphs with the specs' IO (no nodes: never run, only read) and a format-1 manifest."""
    from onnx import helper

    out.mkdir(parents=True, exist_ok=True)
    comps = {}
    for name, spec in registry.specs("tiny").items():
        if names and name not in names:
            continue

        def vi(t):
            return helper.make_tensor_value_info(t.name, _ONNX_TYPES[t.dtype], list(t.shape))

        graph = helper.make_graph([], name, [vi(t) for t in spec.inputs], [vi(t) for t in spec.outputs])
        fname = f"{name}.fp32.onnx"
        onnx.save_model(helper.make_model(graph), str(out / fname))
        files = [{"file": fname, "sha256": "0" * 64, "bytes": (out / fname).stat().st_size}]
        if name in external:  # pretend the weights live beside the graph
            (out / f"{fname}.data").write_bytes(b"\0" * 16)
            files.append({"file": f"{fname}.data", "sha256": "0" * 64, "bytes": 16})
        comps[name] = {"fp32": {"file": fname, "sha256": "0" * 64, "files": files, "spec": spec.to_dict(),
                                "spec_digest": spec.digest(), "precision": "fp32", "opset": 18}}
    (out / "manifest.json").write_text(json.dumps({"format": 1, "components": comps, "pipeline": {}}))
    return out


def test_repository_from_registry_specs(tmp_path):
    export = _fake_export(tmp_path / "export")
    repo = tmp_path / "repo"
    models = write_triton_repo(export, repo, pipeline=False)
    specs = registry.specs("tiny")
    assert sorted(m.name for m in models) == sorted(specs)
    configs = validate_repo(repo)
    assert set(configs) == set(specs)
    for name, spec in specs.items():
        cfg = configs[name]
        assert cfg["name"] == name and cfg["backend"] == "onnxruntime"
        assert (repo / name / "1" / "model.onnx").is_file()
        # a component whose tensors do not all lead with the batch axis (the BLIP KV cache is
        # layers x 2 x batch x ...) cannot use Triton's implicit batching: max_batch_size 0, full dims
        batched = all(t.shape and t.shape[0] == "batch" for t in spec.inputs + spec.outputs)
        assert cfg["max_batch_size"] == (spec.profile["batch"][2] if batched else 0)
        ins = {t["name"]: t for t in cfg["input"]}
        for t in spec.inputs:
            dims = t.shape[1:] if batched else t.shape
            want = [d if isinstance(d, int) else -1 for d in dims] or [1]
            assert ins[t.name]["dims"] == want, (name, t.name)
            assert ins[t.name]["data_type"] == {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}[t.dtype]
        if batched:
            assert cfg["dynamic_batching"]["preferred_batch_size"][-1] == cfg["max_batch_size"]
        else:
            assert "dynamic_batching" not in cfg
        prov = json.loads((repo / name / "semgir_manifest.json").read_text())
        assert prov["component"] == name and prov["spec_digest"] == spec.digest()
    # a tensor that is only the batch axis: dims [1] reshaped to a scalar per item
    timestep = next(t for t in configs["unet"]["input"] if t["name"] == "timestep")
    assert timestep["dims"] == [1] and timestep["reshape"] == {"shape": []}
    assert (repo / "unet" / "1" / "unet.fp32.onnx.data").is_file()  # external data keeps its name

    with pytest.raises(TritonRepoError, match="--force"):
        write_triton_repo(export, repo, pipeline=False)
    write_triton_repo(export, repo, ["semgir_head"], max_batch_size=4, instance_kind="gpu", force=True,
                      pipeline=False)
    cfg = load_config(repo / "semgir_head" / "config.pbtxt")
    assert cfg["max_batch_size"] == 4 and cfg["instance_group"][0]["kind"] == "KIND_GPU"


def test_validation_catches_broken_repositories(tmp_path):
    export = _fake_export(tmp_path / "export", names={"clip_image", "semgir_head", "unet"})
    repo = tmp_path / "repo"
    write_triton_repo(export, repo)
    validate_repo(repo)
    head = repo / "semgir_head" / "config.pbtxt"
    head.write_text(head.read_text().replace('"features"', '"feature"').replace('name: "semgir_head"', 'name: "x"'))
    clip = repo / "clip_image" / "config.pbtxt"
    clip.write_text(clip.read_text().replace("TYPE_FP32", "TYPE_INT64", 1))
    shutil.rmtree(repo / "unet" / "1")
    with pytest.raises(TritonRepoError) as err:
        validate_repo(repo, schema=False)
    msg = str(err.value)
    assert "semgir_head: config name 'x'" in msg
    assert "semgir_head: config inputs ['feature']" in msg
    assert "clip_image: input 'pixel_values' is TYPE_INT64" in msg
    assert "unet: no numeric version folder" in msg


def test_export_directory_errors(tmp_path):
    with pytest.raises(TritonRepoError, match="no manifest.json"):
        write_triton_repo(tmp_path, tmp_path / "repo")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 99, "components": {}}))
    with pytest.raises(TritonRepoError, match="format"):
        write_triton_repo(tmp_path, tmp_path / "repo")
    export = _fake_export(tmp_path / "e2", names={"semgir_head"})
    with pytest.raises(TritonRepoError, match="holds no 'unet'"):
        write_triton_repo(export, tmp_path / "repo", ["unet"])
    with pytest.raises(TritonRepoError, match="pipeline model needs"):
        write_triton_repo(export, tmp_path / "repo", pipeline=True)
    (export / "semgir_head.fp32.onnx").unlink()
    with pytest.raises(TritonRepoError, match="missing"):
        write_triton_repo(export, tmp_path / "repo")


def test_pbtxt_parser_and_schema(tmp_path):
    export = _fake_export(tmp_path / "export", names={"unet"})
    write_triton_repo(export, tmp_path / "repo")
    text = (tmp_path / "repo" / "unet" / "config.pbtxt").read_text()
    mine = parse_pbtxt(text + "\n# a comment\n")
    assert mine["name"] == "unet" and len(mine["input"]) == 3 and mine["version_policy"] == {"latest": {"num_versions": 1}}
    with pytest.raises(TritonRepoError):
        parse_pbtxt("input [ { name: \"a\" ")
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert cfg.name == "unet" and cfg.max_batch_size == mine["max_batch_size"]
    assert [list(i.dims) for i in cfg.input] == [i["dims"] for i in mine["input"]]
    assert json_format.MessageToDict(cfg)["input"][1]["reshape"] == {} or cfg.input[1].HasField("reshape")
    bad = text.replace("TYPE_FP32", "TYPE_FLOAT32", 1)
    (tmp_path / "repo" / "unet" / "config.pbtxt").write_text(bad)
    with pytest.raises(TritonRepoError, match="schema"):
        validate_repo(tmp_path / "repo")


def test_render_config_rejects_unknown_instance_kind():
    from semgir_engine.errors import UnknownNameError
    from semgir_engine.export.triton import pipeline_model

    with pytest.raises(UnknownNameError, match="gpu"):
        render_config(pipeline_model(4, {}), instance_kind="tpu")


# -- slow: a real tiny export, and the BLS pipeline run against a stand-in Triton -------------------
class _FakeTriton:
    """Just enough of ``triton_python_backend_utils``: BLS requests run the repository's graphs on
    onnxruntime, after checking them against the model's config (names, types, batch limit)."""

    _DT = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_FP64": np.float64}

    def __init__(self, repo):
        from semgir_engine.runtime.ort import OrtRunner

        self.repo = repo
        self.configs = validate_repo(repo)
        self.runners = {n: OrtRunner(repo / n / "1" / "model.onnx", device="cpu") for n, c in self.configs.items()
                        if c["backend"] == "onnxruntime"}
        self.calls: dict[str, int] = {}
        fake = self

        class Tensor:
            def __init__(self, name, array):
                self._name, self._a = name, np.asarray(array)

            def name(self):
                return self._name

            def as_numpy(self):
                return self._a

        class TritonError:
            def __init__(self, msg):
                self._m = msg

            def message(self):
                return self._m

        class InferenceResponse:
            def __init__(self, output_tensors, error=None):
                self._out, self._err = output_tensors, error

            def has_error(self):
                return self._err is not None

            def error(self):
                return self._err

            def output_tensors(self):
                return self._out

        class InferenceRequest:
            def __init__(self, model_name, requested_output_names, inputs):
                self.model_name, self.outputs, self.inputs = model_name, requested_output_names, inputs

            def exec(self):
                cfg = fake.configs[self.model_name]
                fake.calls[self.model_name] = fake.calls.get(self.model_name, 0) + 1
                want = {t["name"]: t for t in cfg["input"]}
                arrays = {t.name(): t.as_numpy() for t in self.inputs}
                assert set(arrays) == set(want), (self.model_name, sorted(arrays))
                for n, a in arrays.items():
                    assert a.dtype == self._dtype(want[n]["data_type"]), (self.model_name, n, a.dtype)
                    assert a.shape[0] <= cfg["max_batch_size"], (self.model_name, n, a.shape)
                out = fake.runners[self.model_name](**arrays)
                return InferenceResponse([Tensor(n, out[n]) for n in self.outputs])

            @staticmethod
            def _dtype(t):
                return np.dtype(_FakeTriton._DT[t])

        def get_output_tensor_by_name(resp, name):
            return next(t for t in resp.output_tensors() if t.name() == name)

        def get_input_tensor_by_name(req, name):
            return next(t for t in req.inputs if t.name() == name)

        self.module = types.SimpleNamespace(Tensor=Tensor, TritonError=TritonError, InferenceResponse=InferenceResponse,
                                            InferenceRequest=InferenceRequest,
                                            get_output_tensor_by_name=get_output_tensor_by_name,
                                            get_input_tensor_by_name=get_input_tensor_by_name)
        self.Request = types.SimpleNamespace


@pytest.mark.slow
def test_bls_pipeline_matches_the_onnxruntime_backend(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    import importlib.util

    from conftest import make_image
    from semgir_engine.export.onnx_export import export_components
    from semgir_engine.export.triton import PIPELINE_COMPONENTS
    from semgir_engine.images import load_image
    from semgir_engine.runtime.ort_semgir import OrtSemgir
    from semgir_engine.semgir.pipeline import run_semgir
    from semgir_engine.semgir.sources import ModelSource

    export = tmp_path / "export"
    export_components(list(PIPELINE_COMPONENTS), ModelSource.parse("tiny"), export, check=False)
    repo = tmp_path / "repo"
    write_triton_repo(export, repo, max_batch_size=4)
    fake = _FakeTriton(repo)
    spec = importlib.util.spec_from_file_location("semgir_bls_model", repo / PIPELINE_MODEL / "1" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["triton_python_backend_utils"] = fake.module
    params = load_config(repo / PIPELINE_MODEL / "config.pbtxt")["parameters"]
    cfg_json = json.dumps({"parameters": {p["key"]: p["value"] for p in (params if isinstance(params, list) else [params])}})
    try:
        spec.loader.exec_module(mod)
        model = mod.TritonPythonModel()
        model.initialize({"model_config": cfg_json, "model_repository": str(repo / PIPELINE_MODEL),
                          "model_version": "1"})
        blobs = []
        for i in range(3):
            buf = io.BytesIO()
            make_image(i, size=(40 + 8 * i, 48)).save(buf, "PNG")
            blobs.append(buf.getvalue())
        T = fake.module.Tensor
        requests = [fake.Request(inputs=[T("image", np.array([[blobs[0]], [blobs[1]]], dtype=object))]),
                    fake.Request(inputs=[T("image", np.array([[b"not an image"]], dtype=object))]),
                    fake.Request(inputs=[T("image", np.array([[blobs[2]]], dtype=object))])]
        responses = model.execute(requests)
    finally:
        sys.modules.pop("triton_python_backend_utils", None)
    assert responses[1].has_error() and "not a recognised image" in responses[1].error().message()
    got = np.concatenate([responses[0].output_tensors()[0].as_numpy(), responses[2].output_tensors()[0].as_numpy()])
    captions = [c[0].decode() for r in (responses[0], responses[2]) for c in r.output_tensors()[1].as_numpy()]

    direct = OrtSemgir(export, device="cpu")
    decoded = [load_image(b) for b in blobs]
    want = run_semgir(direct, [d.pixels for d in decoded], [d.sha256 for d in decoded], 0)
    np.testing.assert_allclose(got[:, 0], want.p_ai, atol=1e-6)
    assert captions == want.captions
    assert fake.calls["unet"] == 4 and fake.calls["blip_vision"] == 1 and fake.calls["semgir_head"] == 1
