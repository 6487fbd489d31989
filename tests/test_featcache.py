"""The persistent feature cache: round trip, verification, crash safety, maintenance, reuse by score."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semgir_engine.featcache import FeatureCache, Features, resolve_cache_option

V1, V2 = "a" * 32, "b" * 32


def feats(k: int, dim: int = 8, text: bool = True) -> Features:
    rng = np.random.default_rng(k)
    return Features(caption=f"caption {k}", regenerated=rng.integers(0, 256, (16, 12, 3), dtype=np.uint8),
                    emb_image=rng.normal(size=dim).astype(np.float32), emb_regen=rng.normal(size=dim).astype(np.float32),
                    emb_text=rng.normal(size=dim).astype(np.float32) if text else None)


def same(a: Features, b: Features) -> bool:
    return (a.caption == b.caption and np.array_equal(a.regenerated, b.regenerated)
            and np.array_equal(a.emb_image, b.emb_image) and np.array_equal(a.emb_regen, b.emb_regen)
            and ((a.emb_text is None and b.emb_text is None) or np.array_equal(a.emb_text, b.emb_text)))


def test_round_trip_and_png_is_an_image(tmp_path):
    with FeatureCache(tmp_path / "c") as c:
        assert c.get(V1, "img0") is None
        c.put(V1, "img0", feats(0))
        c.put(V1, "img1", feats(1, text=False))
        got = c.get(V1, "img0")
        assert got is not None and same(got, feats(0))
        assert c.get(V2, "img0") is None  # other version: a miss
        assert c.get(V1, "img1", need_text=True) is None  # no text embedding: a miss when it is needed
        assert same(c.get(V1, "img1"), feats(1, text=False))
        assert (c.hits, c.misses) == (2, 3)
    pngs = list((tmp_path / "c").rglob("*.png"))
    assert len(pngs) == 2
    with Image.open(next(p for p in pngs if p.name.startswith("img0"))) as im:
        assert im.size == (12, 16) and im.text["caption"] == "caption 0"


def test_rewrite_replaces_files_and_keeps_one_entry(tmp_path):
    with FeatureCache(tmp_path) as c:
        c.put(V1, "x", feats(0))
        c.put(V1, "x", feats(5))
        assert same(c.get(V1, "x"), feats(5))
        assert c.info()["entries"] == 1
    assert len(list(tmp_path.rglob("*.npz"))) == 1  # the old files are gone


@pytest.mark.parametrize("damage", ["truncate_npz", "flip_png_byte", "delete_png", "wrong_shape"])
def test_bad_entry_reads_as_miss_and_is_recomputed(tmp_path, damage):
    with FeatureCache(tmp_path) as c:
        c.put(V1, "x", feats(0))
        npz = next(tmp_path.rglob("*.npz"))
        png = next(tmp_path.rglob("*.png"))
        if damage == "truncate_npz":
            npz.write_bytes(npz.read_bytes()[:40])
        elif damage == "flip_png_byte":
            b = bytearray(png.read_bytes())
            b[len(b) // 2] ^= 0xFF
            png.write_bytes(bytes(b))
        elif damage == "delete_png":
            png.unlink()
        else:  # a consistent file of the wrong shape, with the index updated to its hash
            import hashlib

            import semgir_engine.featcache as fc

            blob = fc._npz_bytes(feats(0, dim=5))
            npz.write_bytes(blob)
            c._db.execute("UPDATE entries SET npz_sha=?", (hashlib.sha256(blob).hexdigest(),))
        assert c.get(V1, "x") is None
        assert c.dropped == 1 and c.info()["entries"] == 0
        c.put(V1, "x", feats(0))  # the caller recomputes and rewrites
        assert same(c.get(V1, "x"), feats(0))


_CHILD = textwrap.dedent("""
    import sys, time, numpy as np
    sys.path.insert(0, {tests!r})
    import semgir_engine.featcache as fc
    from test_featcache import feats
    stage = {stage!r}
    real_write = fc._write_atomic
    calls = []
    def slow_write(path, data):
        calls.append(path)
        if stage == "mid_file" and len(calls) == 2:   # the npz: half written, never renamed
            with open(path.with_name("." + path.name + ".tmp"), "wb") as fh:
                fh.write(data[: len(data) // 2]); fh.flush()
            print("READY", flush=True); time.sleep(60)
        real_write(path, data)
        if stage == "before_index" and len(calls) == 2:  # both files in place, index row not committed
            print("READY", flush=True); time.sleep(60)
    fc._write_atomic = slow_write
    c = fc.FeatureCache({root!r})
    c.put({version!r}, "x", feats(7))
""")


@pytest.mark.parametrize("stage", ["mid_file", "before_index"])
@pytest.mark.parametrize("existing", [False, True])
def test_kill_mid_write_never_reads_back_corrupt(tmp_path, stage, existing):
    root = tmp_path / "cache"
    if existing:  # a valid older entry being rewritten when the kill comes
        with FeatureCache(root) as c:
            c.put(V1, "x", feats(3))
    code = _CHILD.format(tests=str(Path(__file__).parent), stage=stage, root=str(root), version=V1)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with FeatureCache(root) as c:
        got = c.get(V1, "x")
        if existing:
            assert got is not None and same(got, feats(3))  # the old entry is intact, never the torn one
        else:
            assert got is None  # no entry: a miss, recomputed by the caller
        assert c.dropped == 0
        c.put(V1, "x", feats(7))
        assert same(c.get(V1, "x"), feats(7))
        # files the kill left behind are collected by prune (after the grace period)
        import semgir_engine.featcache as fc

        old = fc.ORPHAN_GRACE_S
        fc.ORPHAN_GRACE_S = -1.0
        try:
            res = c.prune()
        finally:
            fc.ORPHAN_GRACE_S = old
        assert res["stray_files"] >= 1
        assert same(c.get(V1, "x"), feats(7))
    assert len(list(root.rglob("*.npz"))) == 1


def test_info_prune_and_cli(tmp_path):
    from click.testing import CliRunner

    from semgir_engine.cli import main

    root = tmp_path / "c"
    with FeatureCache(root) as c:
        c.register_version(V1, {"regenerator": {"scheduler": "dpm++", "steps": 4}, "noise_seed": 0})
        for k in range(3):
            c.put(V1, f"i{k}", feats(k))
        c.put(V2, "i0", feats(9))
        c._db.execute("UPDATE entries SET accessed = accessed - 10 * 86400 WHERE image = 'i2'")
    r = CliRunner().invoke(main, ["cache", "info", "--dir", str(root), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["entries"] == 4 and {v["version"]: v["entries"] for v in info["versions"]} == {V1: 3, V2: 1}
    r = CliRunner().invoke(main, ["cache", "prune", "--dir", str(root), "--older-than", "5"])
    assert r.exit_code == 0 and "removed 1 entries" in r.output
    r = CliRunner().invoke(main, ["cache", "prune", "--dir", str(root), "--version", V2[:8], "--verify"])
    assert r.exit_code == 0 and "removed 1 entries" in r.output
    with FeatureCache(root) as c:
        assert c.info()["entries"] == 2 and c.get(V2, "i0") is None and c.get(V1, "i1") is not None
    r = CliRunner().invoke(main, ["cache", "info", "--dir", str(root)])
    assert r.exit_code == 0 and "2 entries" in r.output and "dpm++4" in r.output


def test_cache_option_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("SEMGIR_CACHE", raising=False)
    assert resolve_cache_option("off") is None
    assert resolve_cache_option("auto", random_weights=True) is None
    assert resolve_cache_option("auto", random_weights=False).name == "features"
    assert resolve_cache_option(str(tmp_path)) == tmp_path
    monkeypatch.setenv("SEMGIR_CACHE", str(tmp_path / "env"))
    assert resolve_cache_option(None, random_weights=True) == tmp_path / "env" / "features"


# ------------------------------------------------------------------------------------------
# Scoring with the cache (tiny models)
# ------------------------------------------------------------------------------------------
def test_second_score_reuses_the_cache(tmp_path, tiny_scorer):
    pytest.importorskip("torch")
    from conftest import make_image

    from semgir_engine.scorer import Scorer, ScorerConfig
    from semgir_engine.semgir.extract import feature_version_of

    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        make_image(40 + i, size=(36 + 4 * i, 40)).save(p)
        paths.append(str(p))
    root = tmp_path / "cache"
    with Scorer(ScorerConfig(method="semgir", models="tiny", feature_cache=str(root), batch_size=3)) as s:
        calls = {"caption": 0, "regenerate": 0, "embed_images": 0, "embed_texts": 0}
        for name in calls:
            orig = getattr(s._impl, name)

            def counted(*a, _n=name, _f=orig):
                calls[_n] += 1
                return _f(*a)

            setattr(s._impl, name, counted)
        first = s.score(paths)
        assert calls == {"caption": 1, "regenerate": 1, "embed_images": 2, "embed_texts": 1}
        second = s.score(paths)
        assert calls == {"caption": 1, "regenerate": 1, "embed_images": 2, "embed_texts": 1}  # no model call
        assert [r.p_ai for r in first] == [r.p_ai for r in second]
        assert [r.caption for r in first] == [r.caption for r in second]
        assert s._features.cache.hits == 3
        assert "cache" in second[0].timings_ms and "caption" not in second[0].timings_ms
        # the key follows what the features depend on: another noise seed is another version
        assert feature_version_of(s._impl, 1).key != s._features.version.key
        assert feature_version_of(s._impl, 0).key == s._features.version.key
    # same numbers as the uncached pipeline (batched the same way)
    plain = tiny_scorer.score(paths, batch_size=3)
    assert [r.caption for r in plain] == [r.caption for r in first]
    assert np.allclose([r.p_ai for r in plain], [r.p_ai for r in first], atol=1e-5)
    # on disk: one entry per image, with a regenerated PNG a person can open
    with FeatureCache(root) as c:
        info = c.info()
    assert info["entries"] == 3 and info["versions"][0]["description"]["regenerator"]["steps"] == 4
