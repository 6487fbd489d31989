"""Cascade scoring (patch detector, then SemGIR on the uncertain band) and the band fit."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_image
from semgir_engine.calibration.cascade import (CascadeBand, CascadeBandError, band_stats, fit_band,
                                               fit_cascade_band, load_band, parse_band)


# -- the band fit (numpy only) ---------------------------------------------------------------------
def _brute(p, thr, ref, tol):
    """Smallest share regenerated over every band [p_i, p_j] (or none) whose agreement >= 1 - tol."""
    best = 1.0
    vals = np.unique(p)
    cands = [(None, None)] + [(a, b) for a, b in itertools.product(vals, vals) if a <= b]
    for a, b in cands:
        inside = np.zeros(p.size, bool) if a is None else (p >= a) & (p <= b)
        dec = np.where(inside, ref, p >= thr)
        if np.mean(dec != ref) <= tol + 1e-12:
            best = min(best, inside.mean())
    return best


@pytest.mark.parametrize("seed", range(4))
def test_fit_band_is_the_narrowest_that_keeps_agreement(seed):
    rng = np.random.default_rng(seed)
    n = 40
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.2, n), 0, 1)
    for tol in (0.0, 0.05, 0.1):
        lo, hi, curve = fit_band(p, 0.5, labels=y, tolerance=tol)
        st = band_stats((lo, hi), p, 0.5, y, y)
        assert st.agreement >= 1 - tol - 1e-12
        assert st.regen_fraction == pytest.approx(_brute(p, 0.5, y, tol))
        assert curve[-1] == [1.0, 1.0]


def test_fit_band_budget_and_reference_scores():
    rng = np.random.default_rng(7)
    p = rng.uniform(0, 1, 200)
    semgir = rng.uniform(0, 1, 200)
    lo, hi, _ = fit_band(p, 0.5, reference_p=semgir, max_regen_fraction=0.25)
    ref = semgir >= 0.5
    st = band_stats((lo, hi), p, 0.5, ref)
    assert st.regen_fraction <= 0.25
    # with a budget of everything, the cascade equals always-regenerate
    lo, hi, _ = fit_band(p, 0.5, reference_p=semgir, max_regen_fraction=1.0)
    assert band_stats((lo, hi), p, 0.5, ref).agreement == 1.0
    # a perfectly separable first stage needs no regeneration at all
    y = (p >= 0.5).astype(int)
    lo, hi, _ = fit_band(p, 0.5, labels=y, tolerance=0.0)
    assert band_stats((lo, hi), p, 0.5, y).regen_fraction == 0.0


def test_fit_band_balanced_accuracy_criterion():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(90, int), np.ones(10, int)]  # imbalanced: balanced accuracy weighs the 10 ai more
    p = np.clip(0.5 + (y - 0.5) * 0.3 + rng.normal(0, 0.2, 100), 0, 1)
    band = fit_cascade_band(p, 0.5, labels=y, criterion="balanced_accuracy", tolerance=0.02)
    assert band.fit.balanced_accuracy >= band.fit.reference_balanced_accuracy - 0.02 - 1e-12
    with pytest.raises(CascadeBandError):
        fit_band(p, 0.5, criterion="balanced_accuracy")  # needs labels


def test_band_file_roundtrip_and_refusal(tmp_path):
    band = fit_cascade_band(np.linspace(0, 1, 50), 0.5, labels=(np.arange(50) % 2), first_stage_version="m1",
                            holdout_mask=np.arange(50) % 5 == 0)
    path = band.save(tmp_path)
    again = load_band(path, "m1")
    assert (again.lo, again.hi, again.holdout) == (band.lo, band.hi, band.holdout)
    with pytest.raises(CascadeBandError, match="fitted for first-stage model 'm1'"):
        load_band(path, "m2")
    assert parse_band("0.2,0.7").contains([0.1, 0.2, 0.5, 0.7, 0.8]).tolist() == [False, True, True, True, False]
    for bad in ("0.7,0.2", "x", "0.1,0.2,0.3", "-1,0.5"):
        with pytest.raises(CascadeBandError):
            parse_band(bad)
    with pytest.raises(CascadeBandError):
        CascadeBand(0.5, 1.5)


# -- the cascade on tiny models ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def images():
    return [np.asarray(make_image(i, size=(64 + 4 * i, 60))) for i in range(10)]


@pytest.fixture(scope="module")
def reference(images):
    """Each image's patch-detector and plain SemGIR scores (tiny models)."""
    pytest.importorskip("torch")
    from semgir_engine.scorer import Scorer, ScorerConfig

    names = [f"im{i}" for i in range(len(images))]
    with Scorer(ScorerConfig(method="patch")) as ps, Scorer(ScorerConfig(method="semgir", models="tiny")) as ss:
        patch = [r.p_ai for r in ps.score(images, names)]
        semgir = [r.p_ai for r in ss.score(images, names)]
    return np.array(patch), np.array(semgir), names


def test_cascade_routes_the_band_to_semgir(images, reference, tmp_path):
    from semgir_engine.scorer import Scorer, ScorerConfig

    patch, semgir, names = reference
    lo, hi = float(np.quantile(patch, 0.3)), float(np.quantile(patch, 0.7))
    cfg = ScorerConfig(method="cascade", models="tiny", cascade_band=f"{lo},{hi}", batch_size=3,
                       first_stage_batch_size=4, save_regenerations=str(tmp_path / "regen"))
    bad = b"not an image"
    with Scorer(cfg) as s:
        rows = s.score(images + [bad], names + ["bad"])
    assert [r.path for r in rows] == names + ["bad"]  # score() keeps input order
    assert rows[-1].error and rows[-1].p_ai is None
    inside = (patch >= lo) & (patch <= hi)
    assert 0 < inside.sum() < len(images)
    for r, p, q, ins in zip(rows, patch, semgir, inside):
        assert r.method == "cascade" and r.p_patch == pytest.approx(p, abs=1e-6)
        if ins:
            assert r.stage == "semgir" and r.p_semgir == pytest.approx(q, abs=1e-4) and r.p_ai == r.p_semgir
            assert r.random_weights and r.label is None and r.caption
            assert r.regeneration and (tmp_path / "regen").joinpath(r.regeneration.split("/")[-1]).is_file()
        else:
            assert r.stage == "patch" and r.p_semgir is None and r.p_ai == r.p_patch
            assert not r.random_weights and r.label in ("ai", "real") and r.regeneration is None


def test_cascade_budget_regenerates_the_most_uncertain(images, reference):
    from semgir_engine.scorer import Scorer, ScorerConfig

    patch, _, names = reference
    thr = Scorer(ScorerConfig(method="patch")).threshold
    cfg = ScorerConfig(method="cascade", models="tiny", cascade_band="0,1", max_regen_fraction=0.3,
                       first_stage_batch_size=len(images))
    with Scorer(cfg) as s:
        rows = s.score(images, names)
    regen = {r.path for r in rows if r.stage == "semgir"}
    assert len(regen) == 3  # floor(0.3 * 10)
    z = lambda q: np.log(q / (1 - q))  # noqa: E731
    closest = {names[i] for i in np.argsort(np.abs(z(patch) - z(thr)))[:3]}
    assert regen == closest
    assert all("budget" in (r.note or "") for r in rows if r.stage == "patch")


def test_cascade_needs_a_band(tmp_path, monkeypatch):
    from semgir_engine import cascade
    from semgir_engine.scorer import Scorer, ScorerConfig

    monkeypatch.setattr(cascade, "band_path_for_patch_model", lambda _m: tmp_path / "none.cascade.json")
    with pytest.raises(CascadeBandError, match="calibrate cascade"):
        Scorer(ScorerConfig(method="cascade", models="tiny"))


def test_shipped_band_matches_the_shipped_detector():
    from semgir_engine.cascade import band_path_for_patch_model
    from semgir_engine.patch.detector import DEFAULT_MANIFEST

    path = band_path_for_patch_model(None)
    band = load_band(path, json.loads(DEFAULT_MANIFEST.read_text())["version"])
    assert band.fit is not None and band.fit.agreement >= 0.99 and band.reference == "labels"


def test_score_cli_cascade_summary_and_report(image_dir, tmp_path):
    """`score --method cascade` (shipped band, a budget) -> counts in the summary line -> `report` writes HTML."""
    from semgir_engine.cli import main

    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(main, ["score", str(image_dir), "--method", "cascade", "--models", "tiny",
                                    "--max-regen-fraction", "0.5", "--out", str(out), "--no-progress",
                                    "--save-regenerations", str(tmp_path / "regen")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    n_sem = sum(r["stage"] == "semgir" for r in rows)
    assert n_sem == 3  # floor(0.5 * 6 images)
    assert f"cascade: {len(rows) - n_sem} decided by the patch detector, {n_sem} regenerated by SemGIR" in res.output
    meta = json.loads((tmp_path / "r.jsonl.meta.json").read_text())
    assert meta["summary"]["stage_counts"].get("semgir", 0) == n_sem and meta["config"]["method"] == "cascade"
    assert len(list((tmp_path / "regen").glob("*.png"))) == n_sem
    res = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r.html").read_text()
    assert html.count('data-plot="') == 2  # histogram and cascade routing (no labels)


def test_cascade_usage_errors(image_dir):
    from semgir_engine.cli import main

    res = CliRunner().invoke(main, ["score", str(image_dir), "--method", "cascade", "--models", "tiny",
                                    "--max-regen-fraction", "1.5"])
    assert res.exit_code == 2 and "fraction" in res.output
    res = CliRunner().invoke(main, ["score", str(image_dir), "--method", "cascade", "--models", "tiny",
                                    "--cascade-band", "0.9,0.1"])
    assert res.exit_code == 1 and "lo <= hi" in res.output


def test_service_scores_with_the_cascade():
    """`serve --method cascade`: the HTTP service runs the same routing as the Python API."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from test_serve import LiveServer, png

    from semgir_engine.scorer import Scorer, ScorerConfig
    from semgir_engine.serve import create_app

    cfg = ScorerConfig(method="cascade", models="tiny", cascade_band="0,1", max_regen_fraction=0.5)
    blobs = [png(i, size=(40 + 8 * i, 48)) for i in range(4)]
    names = [f"img{i}.png" for i in range(4)]
    with Scorer(cfg) as s:
        want = s.score(blobs, names)
    app = create_app(cfg, max_batch_size=8, max_wait_ms=50, max_body_bytes=400_000, max_pixels=200 * 200,
                     request_timeout_s=60, max_images_per_request=16)
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        srv.wait_ready(client)
        r = client.post("/v1/score", files=[("images", (n, b, "image/png")) for n, b in zip(names, blobs)])
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [g["path"] for g in got] == names
    assert [g["stage"] for g in got] == [w.stage for w in want] and sum(w.stage == "semgir" for w in want) == 2
    for g, w in zip(got, want):
        assert g["p_ai"] == pytest.approx(w.p_ai, abs=1e-6)



def test_calibrate_cascade_cli(tmp_path):
    """`calibrate cascade` on a labelled folder: against the labels, then against SemGIR's own scores."""
    import csv

    from semgir_engine.cli import main
    from semgir_engine.patch.detector import DEFAULT_MANIFEST

    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(8):
        make_image(i, size=(64, 60 + 2 * i)).save(tmp_path / "imgs" / f"{i}.png")
        rows.append({"path": f"imgs/{i}.png", "label": "ai" if i % 2 else "real", "source": "s"})
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "source"])
        w.writeheader()
        w.writerows(rows)
    version = json.loads(DEFAULT_MANIFEST.read_text())["version"]
    models = tmp_path / "models"
    models.mkdir()
    res = CliRunner().invoke(main, ["calibrate", "cascade", "--manifest", str(tmp_path / "m.csv"), "--holdout", "0",
                                    "--out", str(models), "--no-progress"])
    assert res.exit_code == 0, res.output
    band = load_band(models / "cascade.json", version)
    assert band.reference == "labels" and band.fit.n == 8 and band.fit.agreement >= 0.99
    from semgir_engine.cascade import resolve_band
    from semgir_engine.scorer import ScorerConfig

    found = resolve_band(ScorerConfig(method="cascade", models=str(models)), version)  # `score --models DIR` uses it
    assert (found.lo, found.hi) == (band.lo, band.hi)
    res = CliRunner().invoke(main, ["calibrate", "cascade", "--manifest", str(tmp_path / "m.csv"), "--out",
                                    str(models), "--no-progress"])
    assert res.exit_code == 2 and "--force" in res.output  # never replaced silently
    semgir = tmp_path / "semgir.jsonl"
    res = CliRunner().invoke(main, ["score", str(tmp_path / "imgs"), "--method", "semgir", "--models", "tiny",
                                    "--out", str(semgir), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["calibrate", "cascade", "--manifest", str(tmp_path / "m.csv"), "--holdout", "0",
                                    "--semgir-results", str(semgir), "--tolerance", "0", "--out",
                                    str(tmp_path / "b.json"), "--no-progress"])
    assert res.exit_code == 0, res.output
    band = load_band(tmp_path / "b.json", version)
    assert band.reference.startswith("semgir:") and band.fit.agreement == 1.0
