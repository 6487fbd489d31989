"""`train semgir` and `eval-semgir` on tiny components with a planted signal.

AI images are made by the tiny text-to-image model that SemGIR's own regenerator uses; real
images are smooth synthetic pictures. Regenerating an AI image lands close to it in CLIP space;
the head must learn that from few images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from semgir_train_fixtures import generated, real_images, write_set  # noqa: E402

N = 24
TRAIN_ARGS = ["--models", "tiny", "--epochs", "300", "--lr", "1e-3", "--patience", "40", "--val-fraction", "0.25",
              "--seed", "0", "--no-progress"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A trained head (through the CLI) on N AI + N real images, plus one corrupt file."""
    from click.testing import CliRunner

    from semgir_engine.cli import main

    d = tmp_path_factory.mktemp("planted")
    items = [(p, "ai", "tiny0") for p in generated(0, N)] + [(p, "real", "") for p in real_images(N)]
    man = write_set(d / "data", items)
    (d / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with open(man, "a") as fh:
        fh.write("broken.png,ai,set,tiny0\n")
    cache, out = d / "cache", d / "run"
    r = CliRunner().invoke(main, ["train", "semgir", "--manifest", str(man), "--out", str(out),
                                  "--feature-cache", str(cache), *TRAIN_ARGS])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return {"manifest": man, "cache": cache, "out": out, "output": r.output}


def test_training_learns_the_planted_signal(planted):
    man = json.loads((planted["out"] / "head" / "semgir_head.json").read_text())
    t, val = man["training"], man["metrics"]["val"]
    assert t["final_train_loss"] < 0.3 * t["first_train_loss"]  # the loss goes down
    assert val["n"] >= 10 and val["n_ai"] >= 5 and val["n_real"] >= 5
    assert val["balanced_accuracy"] >= 0.9 and val["roc_auc"] >= 0.95
    assert man["data"]["used"] == 2 * N and man["data"]["skipped"] == 1  # the broken file was skipped
    assert man["dim"] == 32 and man["hidden"] == 32 and 0.0 < man["threshold"] < 1.0
    assert man["data"]["sha256"] and man["feature_key"] and man["components"]["regenerator"]["steps"] == 4
    assert "wrote" in planted["output"]


def test_checkpoint_round_trip(planted):
    import torch

    from semgir_engine.semgir.models import SemgirHead
    from semgir_engine.semgir.sources import ModelSource
    from semgir_engine.semgir.train import load_head

    out = planted["out"]
    head, manifest = SemgirHead.build(ModelSource.parse(str(out)), 32)  # OUT is a models folder
    again, man2 = load_head(out)
    assert manifest == man2 and manifest["version"].startswith("semgir-head-")
    assert manifest["threshold"] == json.loads((out / "head" / "semgir_head.json").read_text())["threshold"]
    x = torch.randn(7, 64)
    with torch.no_grad():
        assert torch.equal(head(x), again(x))
    # a second save/load keeps the outputs bit for bit
    torch.save({"state_dict": head.state_dict(), "manifest": manifest}, out / "copy.pt")
    third, _ = load_head(out / "copy.pt")
    with torch.no_grad():
        assert torch.equal(head(x), third(x))


def test_refuses_to_overwrite_without_force(planted):
    from click.testing import CliRunner

    from semgir_engine.cli import main

    r = CliRunner().invoke(main, ["train", "semgir", "--manifest", str(planted["manifest"]), "--out",
                                  str(planted["out"]), "--feature-cache", str(planted["cache"]), *TRAIN_ARGS])
    assert r.exit_code == 1 and "--force" in r.output


def test_eval_reads_cached_features_and_reports_metrics(planted, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from semgir_engine.cli import main
    from semgir_engine.semgir.extract import TorchFeatureStages

    def no_models(*a, **k):
        raise AssertionError("a model ran although every feature is cached")

    for name in ("caption", "regenerate", "embed_images", "embed_texts"):
        monkeypatch.setattr(TorchFeatureStages, name, no_models)
    r = CliRunner().invoke(main, ["eval-semgir", "--manifest", str(planted["manifest"]), "--head", str(planted["out"]),
                                  "--feature-cache", str(planted["cache"]), "--n-boot", "100", "--json",
                                  "--no-progress", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = json.loads(r.output[r.output.index("{"):r.output.rindex("}") + 1])
    det = res["detection"]
    assert det["feature_key_matches_head"] is True
    assert det["overall"]["n"] == 2 * N and res["used"] == 2 * N and len(res["skipped"]) == 1
    assert det["overall"]["roc_auc"] >= 0.95 and det["overall"]["balanced_accuracy"] >= 0.9
    lo, hi = det["overall"]["roc_auc_ci"]
    assert lo <= det["overall"]["roc_auc"] <= hi
    assert set(det["per_generator"]) == {"tiny0"} and set(det["per_source"]) == {"set"}
    assert (tmp_path / "ev" / "metrics.json").is_file() and "ROC-AUC" in (tmp_path / "ev" / "summary.md").read_text()


def test_threshold_choice():
    from semgir_engine.semgir.train import choose_threshold

    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.8, 0.9, 0.95])
    t = choose_threshold(y, p)
    assert 0.7 < t <= 0.8
    assert choose_threshold(np.array([1, 1]), np.array([0.2, 0.3])) == 0.5


def _real_setup():
    models = os.environ.get("SEMGIR_MODELS")
    manifest = os.environ.get("SEMGIR_EVAL_MANIFEST")
    if not models or not manifest:
        return None
    m = Path(models)
    need = [m / "blip" / "config.json", m / "sd" / "model_index.json", m / "head" / "semgir_head.pt"]
    if not all(p.exists() for p in need) or not (m / "clip").is_dir() or not Path(manifest).is_file():
        return None
    return m, Path(manifest)


@pytest.mark.real_weights
@pytest.mark.skipif(_real_setup() is None, reason="needs real weights: SEMGIR_MODELS=DIR (blip/ sd/ clip/ head/) "
                                                  "and SEMGIR_EVAL_MANIFEST=CSV")
def test_real_weights_accuracy():
    """The trained head on real weights, on a held-out labelled manifest:

    SEMGIR_MODELS=/weights SEMGIR_EVAL_MANIFEST=/data/test.csv pytest -m real_weights tests/test_train_semgir.py
    (the same numbers as `semgir-engine eval-semgir --manifest /data/test.csv --head /weights --models /weights`).
    """
    from semgir_engine.semgir.evaluate import evaluate_semgir

    models, manifest = _real_setup()
    res = evaluate_semgir(manifest, models, models=str(models), n_boot=200, progress=False)
    overall = res["detection"]["overall"]
    floor = float(os.environ.get("SEMGIR_MIN_BALANCED_ACCURACY", "0.8"))
    assert overall["balanced_accuracy"] >= floor, res
    assert overall["roc_auc"] >= floor, res
