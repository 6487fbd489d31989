"""`semgir-engine bench` end to end on tiny models: every section is written, with parity numbers."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from click.testing import CliRunner  # noqa: E402

from semgir_engine.cli import main  # noqa: E402

from test_patch_train import _manifest  # noqa: E402


def test_bench_writes_components_captioning_e2e_and_patch_accuracy(tmp_path):
    (tmp_path / "data").mkdir()
    data = _manifest(tmp_path / "data", n=3)  # 12 images in two sources
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [
        "bench", "--models", "tiny", "--components", "semgir_head,patch_cnn", "--backends", "torch,onnxruntime",
        "--batch-sizes", "1,2", "--repeats", "1", "--threads", "1", "--no-reference", "--e2e-images", "1",
        "--e2e-warmup", "0", "--no-patch", "--data", str(data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    comps = {(c["component"], c["backend"], c["batch"]) for c in res["components"]}
    for name in ("semgir_head", "patch_cnn", "blip_caption"):
        for b in ("torch", "onnxruntime"):
            assert {(name, b, 1), (name, b, 2)} <= comps
    rows = {(c["component"], c["backend"], c["batch"]): c for c in res["components"]}
    assert rows[("patch_cnn", "onnxruntime", 2)]["max_abs_diff"] < 1e-4
    assert rows[("blip_caption", "onnxruntime", 2)]["note"].startswith("2/2 captions identical")
    assert {s["component"] for s in res["speedups"]} == {"semgir_head", "patch_cnn", "blip_caption"}
    labels = [e["label"] for e in res["e2e"]]
    assert len(labels) == 2 and "onnxruntime" in labels[1]
    pa = res["patch_accuracy"]
    assert pa["data"]["images"] == 12 and set(pa["backends"]) == {"torch", "onnxruntime"}
    assert pa["backends"]["onnxruntime"]["parity_vs_torch"]["decision_agreement"] == 1.0
    report = (out / "README.md").read_text()
    for heading in ("## Components", "## End-to-end SemGIR scoring", "accuracy and parity per backend"):
        assert heading in report
    assert "native resolution" in report and "None px" not in report
    assert (out / "components.png").stat().st_size > 1000
