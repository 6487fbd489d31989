"""Training: a tiny model learns a planted signal; checkpoints round-trip; the CLI trains and resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from semgir_engine.patch.augment import NO_AUGMENT  # noqa: E402
from semgir_engine.patch.cli import train_patch  # noqa: E402
from semgir_engine.patch.detector import ModelManifestError, PatchDetector  # noqa: E402
from semgir_engine.patch.train import TrainConfig, TrainingError, train  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _planted(rng, ai: bool, size: int = 72) -> np.ndarray:
    """Smooth random image; AI ones carry a +-24 checkerboard (a generator-like periodic trace)."""
    base = rng.normal(128, 30, (size // 8, size // 8, 3))
    img = np.kron(base, np.ones((8, 8, 1)))
    if ai:
        yy, xx = np.mgrid[:size, :size]
        img += 24.0 * (((yy + xx) % 2) * 2 - 1)[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _manifest(tmp: Path, n: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for src in ("alpha", "beta"):
        for label in ("real", "ai"):
            for i in range(n):
                rel = f"{src}/{label}_{i}.png"
                (tmp / src).mkdir(exist_ok=True)
                Image.fromarray(_planted(rng, label == "ai")).save(tmp / rel)
                rows.append((rel, label, src))
    path = tmp / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "source"])
        w.writerows(rows)
    return path


def test_tiny_model_learns_a_planted_signal_and_round_trips(tmp_path):
    m = _manifest(tmp_path)
    cfg = TrainConfig(preset="test", epochs=6, batch_size=8, lr=1e-2, val_fraction=0.25, threads=1, augment=NO_AUGMENT)
    res = train(cfg, m, tmp_path / "run", progress=False)
    meta = res.manifest
    assert meta["validation"]["roc_auc"] >= 0.95
    assert meta["validation"]["balanced_accuracy"] >= 0.9
    assert 0.0 <= meta["threshold"] <= 1.0 and meta["temperature"] > 0
    assert meta["data"]["manifest_sha256"] and meta["config"]["patch"] == 16
    # checkpoint round trip: the runtime reproduces the validation predictions exactly
    det = PatchDetector.load(tmp_path / "run")
    assert det.version == meta["version"]
    from semgir_engine.datasets import load_pixels, read_manifest
    from semgir_engine.patch.evaluate import model_splits

    _, val_rows, _, verified = model_splits(read_manifest(m), meta)
    assert verified
    imgs, rows = load_pixels(val_rows)
    p = det.predict(imgs, batch_size=4)
    assert p.shape == (len(rows),) and np.all((p >= 0) & (p <= 1))
    from semgir_engine.metrics import roc_auc

    assert roc_auc([r.label for r in rows], p) == pytest.approx(meta["validation"]["roc_auc"], abs=1e-6)
    # a tampered manifest is refused, not trusted because the file exists
    bad = json.loads((tmp_path / "run" / "model.json").read_text())
    bad["weights_sha256"] = "0" * 64
    (tmp_path / "run" / "model.json").write_text(json.dumps(bad))
    with pytest.raises(ModelManifestError, match="does not match"):
        PatchDetector.load(tmp_path / "run" / "model.json")


def test_cli_trains_one_epoch_and_resumes(tmp_path):
    m = _manifest(tmp_path, n=6)
    out = tmp_path / "cli"
    args = ["--manifest", str(m), "--out", str(out), "--preset", "test", "--batch-size", "4",
            "--val-fraction", "0.3", "--threads", "1", "--no-progress", "--holdout-source", "beta"]
    runner = CliRunner()
    r1 = runner.invoke(train_patch, args + ["--epochs", "1"])
    assert r1.exit_code == 0, r1.output
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 0 and len(ck["history"]) == 1
    meta = json.loads((out / "model.json").read_text())
    assert meta["data"]["holdout_sources"] == ["beta"] and set(meta["data"]["train_counts"]) == {"alpha"}
    # refuses to overwrite without --resume; a config change cannot resume
    r2 = runner.invoke(train_patch, args + ["--epochs", "1"])
    assert r2.exit_code == 1 and "--resume" in r2.output
    r3 = runner.invoke(train_patch, args + ["--epochs", "2", "--resume"])
    assert r3.exit_code == 1 and "different configuration" in r3.output


def test_resume_continues_where_it_stopped(tmp_path, monkeypatch):
    m = _manifest(tmp_path, n=6)
    cfg = TrainConfig(preset="test", epochs=2, batch_size=4, val_fraction=0.3, threads=1)
    full = train(cfg, m, tmp_path / "full", progress=False)
    # interrupt a second run during epoch 2's validation (after epoch 1's checkpoint), then resume
    import semgir_engine.patch.train as tr

    calls = {"n": 0}
    real_auc = tr.roc_auc

    def flaky_auc(y, s):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_auc(y, s)

    monkeypatch.setattr(tr, "roc_auc", flaky_auc)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, m, tmp_path / "part", progress=False)
    monkeypatch.setattr(tr, "roc_auc", real_auc)
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["epoch"] == 0
    resumed = train(cfg, m, tmp_path / "part", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.manifest["training"]["history"]] == [0, 1]
    # same seeds per epoch: the resumed run matches the uninterrupted one
    for a, b in zip(full.manifest["training"]["history"], resumed.manifest["training"]["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    with pytest.raises(TrainingError, match="unknown source"):
        train(TrainConfig(preset="test", holdout_sources=("gamma",)), m, tmp_path / "x", progress=False)
