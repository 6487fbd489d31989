"""The shipped default patch-shuffle model: loads, checks its manifest, and reproduces its numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from semgir_engine.errors import WeightsNotFoundError  # noqa: E402
from semgir_engine.patch.detector import DEFAULT_MANIFEST, ModelManifestError, PatchDetector  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aigi" / "manifest.csv"
DATA2 = DATA.parents[1] / "aigi2" / "manifest.csv"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def det():
    torch.set_num_threads(1)
    return PatchDetector.load()


def test_shipped_weights_load_and_give_probabilities(det):
    meta = json.loads(DEFAULT_MANIFEST.read_text())
    assert det.version == meta["version"] and det.threshold == meta["threshold"]
    assert 0.0 < det.threshold < 1.0 and det.temperature > 0
    assert (DEFAULT_MANIFEST.parent / meta["weights_file"]).stat().st_size < 5_000_000
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(100, 120), (256, 256), (300, 500)]]
    imgs.append(np.zeros((64, 64, 3), np.uint8))
    p = det.predict(imgs, batch_size=2)
    assert p.shape == (4,) and np.all((p >= 0) & (p <= 1)) and np.all(np.isfinite(p))
    # batch invariance of the runtime path
    single = np.concatenate([det.predict([im]) for im in imgs])
    assert np.allclose(p, single, atol=1e-5)
    assert det.predict([]).shape == (0,)


def test_foreign_or_missing_weights_are_refused(tmp_path):
    shutil.copy(DEFAULT_MANIFEST, tmp_path / "m.json")
    with pytest.raises(WeightsNotFoundError):
        PatchDetector.load(tmp_path / "m.json")  # weights file not beside it
    with pytest.raises(WeightsNotFoundError):
        PatchDetector.load(tmp_path / "nothing.json")
    meta = json.loads(DEFAULT_MANIFEST.read_text())
    meta["format_version"] = 99
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(ModelManifestError, match="format_version"):
        PatchDetector.load(tmp_path / "v.json")


@pytest.mark.skipif(not DATA.exists(), reason="the aigi data set is not on this machine")
def test_shipped_weights_reproduce_their_validation_metrics(det):
    from semgir_engine.datasets import load_pixels, read_manifest
    from semgir_engine.metrics import balanced_accuracy, roc_auc
    from semgir_engine.patch.evaluate import model_splits

    if det.manifest.get("architecture") == "fused":
        pytest.skip("the fused default is checked by test_shipped_fused_model_reproduces_its_calibration_scores")
    manifest = read_manifest(DATA)
    _, val_rows, _, verified = model_splits(manifest, det.manifest)
    if not verified:
        pytest.skip("the data manifest changed since the shipped model was trained")
    imgs, rows = load_pixels(val_rows)
    y = np.array([r.label for r in rows])
    p = det.predict(imgs, batch_size=32)
    v = det.manifest["validation"]
    assert len(rows) == v["n"]
    assert roc_auc(y, p) == pytest.approx(v["roc_auc"], abs=2e-3)
    assert balanced_accuracy(y, (p >= det.threshold).astype(float)) == pytest.approx(v["balanced_accuracy"], abs=5e-3)


@pytest.mark.skipif(not DATA2.exists(), reason="the aigi2 data set is not on this machine")
def test_shipped_fused_model_reproduces_its_calibration_scores(det):
    """Every calibration-split image of the aigi2 sources scores (from its file, through the whole
    runtime) to a value the model card recorded for that split, and the card's operating point
    follows from those scores."""
    from semgir_engine.datasets import load_pixels, read_manifest
    from semgir_engine.hashing import sha256_file

    meta = det.manifest
    if meta.get("architecture") != "fused":
        pytest.skip("the shipped default is not the fused model")
    cal = set(meta["data"]["calibration_files_sha256"])
    rows = [r for r in read_manifest(DATA2).rows if sha256_file(r.path)[:16] in cal]
    assert len(rows) >= 40
    imgs, rows = load_pixels(rows)
    p = det.predict(imgs, batch_size=32)
    scores = meta["decision"]["calibration_scores"]
    for label, name in ((0, "real"), (1, "ai")):
        ref = np.asarray(scores[name])
        mine = p[np.array([r.label for r in rows]) == label]
        assert np.abs(ref[None, :] - mine[:, None]).min(axis=1).max() < 2e-3
    op = meta["decision"]["operating_points"]["balanced_accuracy"]
    real = np.asarray(scores["real"])
    assert op["fpr"] == pytest.approx(float((real >= det.threshold).mean()), abs=1e-9)
