"""The patch-shuffle detector on ONNX Runtime: export, parity with torch, scorer routing, accuracy bench."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from click.testing import CliRunner  # noqa: E402

from semgir_engine.cli import main  # noqa: E402
from semgir_engine.errors import SemgirError  # noqa: E402
from semgir_engine.patch.detector import PatchDetector  # noqa: E402
from semgir_engine.runtime.ort_patch import OrtPatchDetector  # noqa: E402
from semgir_engine.runtime.ort_semgir import ExportDirError  # noqa: E402
from semgir_engine.scorer import Scorer, ScorerConfig  # noqa: E402

from test_patch_train import _manifest  # noqa: E402


@pytest.fixture(scope="module")
def patch_export(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("patch_export")
    for prec in ("fp32", "fp16"):
        r = CliRunner().invoke(main, ["export", "--components", "patch_cnn", "--precision", prec, "--out", str(d),
                                      "--no-progress"])
        assert r.exit_code == 0, r.output
    return d


def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(300, 300), (256, 400), (640, 480), (100, 90), (512, 512), (257, 255)]
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]


def test_ort_matches_torch_within_tolerance(patch_export):
    ref = PatchDetector.load(None)
    ims = _images()
    z_t = ref.predict_logits(ims, batch_size=4)
    ort32 = OrtPatchDetector(patch_export, precision="fp32", device="cpu")
    assert ort32.version == ref.version and ort32.threshold == ref.threshold and ort32.temperature == ref.temperature
    assert np.abs(ort32.predict_logits(ims, batch_size=4) - z_t).max() < 1e-4  # spec tolerance (fp32_atol)
    ort16 = OrtPatchDetector(patch_export, precision="fp16", device="cpu")
    assert ort16.version == ref.version + "+fp16"
    assert np.abs(ort16.predict_logits(ims, batch_size=4) - z_t).max() < 2e-2
    np.testing.assert_allclose(ort32.predict(ims), ref.predict(ims), atol=1e-5)
    with pytest.raises(SemgirError, match="torch backend only"):
        ort32.predict(ims, k_shuffles=3)


def test_scorer_routes_a_patch_only_export_to_the_patch_method(patch_export):
    ims = _images(4, seed=1)
    with Scorer(ScorerConfig(export_dir=str(patch_export), backend="auto")) as s:  # auto -> patch on onnxruntime
        assert s.method == "patch" and isinstance(s._impl, OrtPatchDetector)
        got = s.score(ims)
    with Scorer(ScorerConfig(method="patch")) as s:
        want = s.score(ims)
    assert all(g.ok and abs(g.p_ai - w.p_ai) < 1e-5 and g.label == w.label for g, w in zip(got, want))
    with pytest.raises(SemgirError, match="export directory"):
        Scorer(ScorerConfig(method="patch", backend="onnxruntime"))
    with pytest.raises(SemgirError, match="--patch-model applies to the torch backend"):
        Scorer(ScorerConfig(method="patch", backend="onnxruntime", export_dir=str(patch_export),
                            patch_model=str(PatchDetector.load(None).manifest_path)))


def test_cli_scores_with_the_exported_patch_detector(patch_export, tmp_path):
    from PIL import Image

    for i, im in enumerate(_images(3, seed=2)):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    out = tmp_path / "rows.jsonl"
    r = CliRunner().invoke(main, ["score", str(tmp_path), "--export-dir", str(patch_export), "--precision", "fp16",
                                  "--no-progress", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(x["method"] == "patch" and x["model_version"].endswith("+fp16") for x in rows)


def test_export_refuses_a_patch_model_of_another_geometry(tmp_path):
    from semgir_engine.patch.train import TrainConfig, train

    m = _manifest(tmp_path, n=4)
    train(TrainConfig(preset="test", epochs=1, batch_size=8, val_fraction=0.25, threads=1), m, tmp_path / "run",
          progress=False)
    r = CliRunner().invoke(main, ["export", "--components", "patch_cnn", "--patch-model", str(tmp_path / "run"),
                                  "--out", str(tmp_path / "exp"), "--no-progress"])
    assert r.exit_code != 0 and "cannot be exported" in r.output
    r = CliRunner().invoke(main, ["export", "--components", "unet", "--out", str(tmp_path / "exp2")])
    assert r.exit_code == 2 and "--models is required" in r.output


def test_export_takes_a_shipped_model_by_name(tmp_path):
    r = CliRunner().invoke(main, ["-q", "export", "--components", "patch_cnn", "--patch-model", "patch-shuffle",
                                  "--out", str(tmp_path / "exp"), "--no-progress"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "exp" / "manifest.json").read_text())["pipeline"]["patch"]
    assert meta["version"].startswith("patch-shuffle") and meta["preprocessing"]["fit"] == "pad"
    r = CliRunner().invoke(main, ["export", "--components", "patch_cnn", "--patch-model", "no-such-model",
                                  "--out", str(tmp_path / "exp2"), "--no-progress"])
    assert r.exit_code != 0 and "no-such-model" in r.output
    # the precision benchmark's torch reference is the model the export was made from (not the default)
    from semgir_engine.bench.precision import exported_patch_model
    from semgir_engine.errors import SemgirError

    assert exported_patch_model(tmp_path / "exp") == "patch-shuffle"
    m = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    m["components"]["patch_cnn"]["fp32"]["source"]["weights_sha256"] = "0" * 64
    (tmp_path / "exp" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SemgirError, match="not a shipped model"):
        exported_patch_model(tmp_path / "exp")


def test_accuracy_bench_reports_parity_and_per_source_metrics(patch_export, tmp_path):
    from semgir_engine.bench.patch_accuracy import bench_patch_accuracy, markdown

    m = _manifest(tmp_path, n=4)  # 16 images in two sources
    res = bench_patch_accuracy(m, patch_export, ("torch", "onnxruntime", "onnxruntime-fp16"), n_boot=20, chunk=5)
    assert res["data"]["images"] == 16 and res["data"]["test_images"] == 16  # the shipped model never saw them
    assert set(res["backends"]) == {"torch", "onnxruntime", "onnxruntime-fp16"}
    par = res["backends"]["onnxruntime"]["parity_vs_torch"]
    assert par["max_abs_logit_diff"] < 1e-4 and par["max_abs_p_diff"] < 1e-4
    acc = res["backends"]["onnxruntime"]["accuracy"]
    assert "pooled" in acc and acc["pooled"]["n"] == res["data"]["test_images"] > 0
    assert acc["pooled"]["n"] == res["backends"]["torch"]["accuracy"]["pooled"]["n"]
    table = "\n".join(markdown(res))
    assert "| onnxruntime-fp16 |" in table and "pooled" in table


def test_graph_and_settings_of_different_models_are_refused(patch_export, tmp_path):
    import shutil

    d = tmp_path / "mixed"
    shutil.copytree(patch_export, d)
    m = json.loads((d / "manifest.json").read_text())
    m["pipeline"]["patch"]["weights_sha256"] = "0" * 64  # settings of another model beside this graph
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportDirError, match="different models"):
        OrtPatchDetector(d, device="cpu")
