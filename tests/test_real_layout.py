"""The real-weights loaders (local folder, strictly offline) on tiny models saved in the real layout:
they must reproduce the tiny pipeline's scores exactly, and name what is missing when a part is absent."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import make_image

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from real_layout import write_models_dir

    return write_models_dir(tmp_path_factory.mktemp("models"))


def test_real_loaders_reproduce_tiny_scores(models_dir, tiny_scorer):
    from semgir_engine.scorer import Scorer, ScorerConfig

    imgs = [np.asarray(make_image(i, size=(44, 40))) for i in range(3)]
    ref = tiny_scorer.score(imgs)
    with Scorer(ScorerConfig(models=str(models_dir), batch_size=3)) as s:
        assert s.method == "semgir"  # models given: auto picks SemGIR
        assert not s.random_weights
        got = s.score(imgs)
    for a, b in zip(ref, got):
        assert a.caption == b.caption
        assert abs(a.p_ai - b.p_ai) < 1e-5
        assert b.label in ("ai", "real")  # real weights give a verdict


def test_missing_part_names_where_it_looked(models_dir, tmp_path):
    from semgir_engine.errors import WeightsNotFoundError
    from semgir_engine.scorer import Scorer, ScorerConfig

    partial = tmp_path / "partial"
    shutil.copytree(models_dir, partial)
    shutil.rmtree(partial / "clip")
    with pytest.raises(WeightsNotFoundError) as exc:
        Scorer(ScorerConfig(method="semgir", models=str(partial)))
    assert "clip" in str(exc.value) and str(partial / "clip") in str(exc.value)


def test_auto_falls_back_to_patch_without_weights(tmp_path, monkeypatch):
    from semgir_engine.scorer import ScorerConfig, resolve_method

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("SEMGIR_MODELS", raising=False)
    assert resolve_method(ScorerConfig()) == "patch"
