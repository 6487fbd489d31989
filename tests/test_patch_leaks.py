"""Leak neutralisation and the metadata probe; the combined manifest view; LOSO selection."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn")
from semgir_engine.datasets import ManifestError, read_manifests  # noqa: E402
from semgir_engine.patch import leaks, selection  # noqa: E402


def _jpeg(a: np.ndarray, q: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=q)
    return buf.getvalue()


def test_jpeg_quality_estimate_matches_the_encoder():
    a = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for q in (50, 75, 90, 99):
        assert leaks.meta_of_bytes(_jpeg(a, q)).jpeg_quality == q
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    m = leaks.meta_of_bytes(buf.getvalue())
    assert m.format == "PNG" and np.isnan(m.jpeg_quality)


def test_neutralise_is_class_blind_and_the_probe_sees_it():
    """Planted leaks: 'real' files are big PNGs, 'ai' files small JPEGs at q70. The probe finds them
    on the files and not on the neutralised views (whose size and encoding are random)."""
    rng = np.random.default_rng(0)
    metas_before, metas_after, y, src = [], [], [], []
    for i in range(80):
        ai = i % 2
        side = 300 if ai else 520
        img = np.kron(rng.integers(0, 256, (side // 4, side // 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
        data = _jpeg(img, 70) if ai else leaks.encode(img, "PNG")
        metas_before.append(leaks.meta_of_bytes(data))
        view, meta = leaks.neutralise(img, rng, leaks.NeutraliseConfig(crop=128, short_side=(128, 256)))
        assert view.shape == (128, 128, 3) and view.dtype == np.uint8
        metas_after.append(meta)
        y.append(ai)
        src.append("s")
    before = leaks.probe(leaks.metadata_features(metas_before), y, src)
    after = leaks.probe(leaks.metadata_features(metas_after), y, src)
    assert before["per_source"]["s"] > 0.95
    assert abs(after["per_source"]["s"] - 0.5) < 0.2


def _csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "source"])
        w.writerows(rows)


def test_read_manifests_combines_without_copying(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / d / "x.png")
    _csv(tmp_path / "a" / "m.csv", [("x.png", "real", "s1")])
    _csv(tmp_path / "b" / "m.csv", [("x.png", "ai", "s2")])
    m = read_manifests([tmp_path / "a" / "m.csv", tmp_path / "b" / "m.csv"])
    assert m.sources == ["s1", "s2"] and m.path.parent == tmp_path
    assert [r.path for r in m.rows] == [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]
    assert read_manifests(tmp_path / "a" / "m.csv").sources == ["s1"]
    _csv(tmp_path / "b" / "m.csv", [("x.png", "ai", "s1")])
    with pytest.raises(ManifestError, match="source names must be unique"):
        read_manifests([tmp_path / "a" / "m.csv", tmp_path / "b" / "m.csv"])


def test_balanced_weights_give_every_cell_the_same_total():
    y = np.array([0] * 10 + [1] * 90 + [0] * 5)
    s = np.array(["a"] * 100 + ["b"] * 5)
    w = selection.balanced_weights(y, s)
    assert np.isclose(w[:10].sum(), w[10:100].sum()) and np.isclose(w[10:100].sum(), w[100:].sum())


def test_loso_scores_each_source_unseen_and_real_only_sources_by_fpr():
    """Feature 0 carries the label in every source, feature 1 a source-specific leak: LOSO rewards
    the first; the real-only source is scored by its false-positive rate."""
    from semgir_engine.patch.train_fused import lr_fitter

    rng = np.random.default_rng(0)
    src = np.repeat(["a", "b", "c", "r"], 60)
    y = np.r_[np.tile([0, 1], 90), np.zeros(60, int)]
    x = rng.normal(size=(y.size, 2, 2)).astype(np.float32)  # (rows, views: train + test, features)
    x[:, :, 0] += 2.0 * y[:, None]
    res = selection.loso(y, src, np.ones(y.size, bool), lr_fitter(x, y, 1, 1, 1.0), n_boot=50)
    assert set(res["sources"]) == {"a", "b", "c", "r"}
    assert res["sources"]["r"]["auc"] is None and res["sources"]["r"]["n_ai"] == 0
    assert 0.0 <= res["sources"]["r"]["fpr"] <= 0.3
    assert res["mean_auc"] > 0.85 and res["worst_auc"] > 0.8
    assert res["mean_auc_ci"][0] <= res["mean_auc"] <= res["mean_auc_ci"][1]
    assert res["reliability"]["n"] == y.size
    pool = selection.in_pool(y, src, np.ones(y.size, bool), lr_fitter(x, y, 1, 1, 1.0), n_boot=50)
    assert pool["auc"] > 0.85
