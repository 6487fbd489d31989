"""Evaluation: held-out sources are scored in full, pool sources on their validation split only."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from click.testing import CliRunner  # noqa: E402

from semgir_engine.patch.augment import jpeg_roundtrip  # noqa: E402
from semgir_engine.patch.baseline import SpectrumBaseline, residual_spectrum  # noqa: E402
from semgir_engine.patch.cli import eval_cmd  # noqa: E402
from semgir_engine.patch.evaluate import EvaluationError, perturb  # noqa: E402
from semgir_engine.patch.train import TrainConfig, train  # noqa: E402

from test_patch_train import _manifest, _planted  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_eval_cli_splits_rows_honestly_and_writes_artifacts(tmp_path):
    m = _manifest(tmp_path, n=8)
    cfg = TrainConfig(preset="test", epochs=1, batch_size=8, val_fraction=0.25, threads=1,
                      holdout_sources=("beta",))
    train(cfg, m, tmp_path / "run", progress=False)
    out = tmp_path / "eval"
    r = CliRunner().invoke(eval_cmd, ["--manifest", str(m), "--model", str(tmp_path / "run"), "--out", str(out),
                                      "--n-boot", "50", "--k-shuffles", "3", "--threads", "1"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "metrics.json").read_text())
    assert res["data"]["split_verified"] is True
    beta, alpha = res["sources"]["beta"], res["sources"]["alpha"]
    assert beta["split"].startswith("unseen") and alpha["split"].startswith("in-pool")
    assert beta["conditions"]["clean"]["patch"]["n"] == 16  # every beta image
    assert alpha["conditions"]["clean"]["patch"]["n"] == 4  # only alpha's validation rows
    assert set(beta["conditions"]) == {"clean", "jpeg75", "resize0.5"}
    assert set(beta["conditions"]["clean"]) == {"patch", "patch_k3", "baseline"}
    assert (out / "roc.png").stat().st_size > 1000 and "| beta |" in (out / "summary.md").read_text()
    bad = CliRunner().invoke(eval_cmd, ["--manifest", str(m), "--model", str(tmp_path / "run"), "--source", "zeta"])
    assert bad.exit_code == 1 and "valid: alpha, beta" in bad.output


def test_baseline_separates_a_planted_spectral_trace():
    rng = np.random.default_rng(0)
    imgs = [_planted(rng, ai=i % 2 == 1, size=96) for i in range(40)]
    y = [i % 2 for i in range(40)]
    from semgir_engine.patch.preprocess import PreprocessConfig

    b = SpectrumBaseline(bins=16, preprocess=PreprocessConfig(size=64)).fit(imgs[:30], y[:30])
    s = b.decision_function(imgs[30:])
    assert np.all((s > 0) == np.array(y[30:], bool))
    assert residual_spectrum(imgs[0], PreprocessConfig(size=64), bins=16).shape == (16,)


def test_perturbations():
    a = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    assert perturb(a, "clean") is a
    assert perturb(a, "resize0.5").shape == (32, 40, 3)
    j = perturb(a, "jpeg75")
    assert j.shape == a.shape and not np.array_equal(j, a) and np.array_equal(j, jpeg_roundtrip(a, 75))
    with pytest.raises(EvaluationError, match="valid: clean, jpeg75, resize0.5"):
        perturb(a, "blur")
