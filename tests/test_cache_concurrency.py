"""Caches shared by concurrent processes, and damaged cache entries: the artifact cache (ONNX graphs,
TensorRT engines) builds each artifact once under a per-key lock and rebuilds anything truncated,
corrupt or malformed; the SemGIR feature cache survives two `score` processes writing at once and
starts a new index when its SQLite file is corrupt."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from semgir_engine.featcache import FeatureCache, Features
from semgir_engine.runtime.cache import ArtifactCache

BUILD = textwrap.dedent("""
    import os, sys, time
    from semgir_engine.runtime.cache import ArtifactCache

    root, log = sys.argv[1], sys.argv[2]

    def build(tmp):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        time.sleep(1.0)  # long enough for the other process to arrive while this one builds
        (tmp / "graph.bin").write_bytes(b"x" * 100_000)
        (tmp / "extra.txt").write_text("hello")
        return {"builder": os.getpid()}

    a = ArtifactCache(root).get_or_build({"kind": "test", "n": 1}, build)
    print(a.key, a.meta["builder"], (a.dir / "graph.bin").stat().st_size)
""")


def test_two_processes_build_an_artifact_once(tmp_path):
    root, log = tmp_path / "cache", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(root), str(log)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = [o[0].split() for o in outs]
    assert len(log.read_text().split()) == 1  # one build
    assert lines[0] == lines[1] and lines[0][2] == "100000"  # both got the same, complete artifact
    art, why = ArtifactCache(root).check(lines[0][0])
    assert why == "ok" and sorted(art.files) == ["extra.txt", "graph.bin"]
    assert not [p for p in (root / lines[0][0][:2]).iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "json_list", "json_not_utf8", "json_no_files",
                                    "json_bad_file_record", "json_path_escape"])
def test_damaged_artifact_is_rebuilt(tmp_path, damage, caplog):
    cache = ArtifactCache(tmp_path)
    builds = []

    def build(tmp: Path):
        builds.append(1)
        (tmp / "graph.bin").write_bytes(bytes(range(256)) * 100)

    parts = {"kind": "test", "n": 2}
    a = cache.get_or_build(parts, build)
    f, rec = a.dir / "graph.bin", a.dir / "artifact.json"
    info = json.loads(rec.read_text())
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:1000])
    elif damage == "flip":
        b = bytearray(f.read_bytes())
        b[5000] ^= 1
        f.write_bytes(bytes(b))
    elif damage == "delete":
        f.unlink()
    elif damage == "json_list":
        rec.write_text("[1, 2]")
    elif damage == "json_not_utf8":
        rec.write_bytes(b"\xff\xfe{")
    elif damage == "json_no_files":
        rec.write_text(json.dumps(dict(info, files=[])))
    elif damage == "json_bad_file_record":
        rec.write_text(json.dumps(dict(info, files=[{"name": "graph.bin"}])))
    else:  # a record that points outside its folder
        rec.write_text(json.dumps(dict(info, files=[dict(info["files"][0], name="../x")])))
    assert cache.check(a.key)[0] is None
    with caplog.at_level("WARNING"):
        b = cache.get_or_build(parts, build)
    assert len(builds) == 2 and "discarding artifact" in caplog.text
    assert cache.check(b.key)[1] == "ok" and b.path("graph.bin").read_bytes() == bytes(range(256)) * 100


def _feats(k: int) -> Features:
    rng = np.random.default_rng(k)
    return Features(f"caption {k}", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                    rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zero_page"])
def test_corrupt_feature_index_is_moved_aside_and_restarted(tmp_path, damage, caplog):
    with FeatureCache(tmp_path) as c:
        for k in range(20):
            c.put("v" * 32, f"img{k:02d}", _feats(k))
    index = tmp_path / "index.sqlite"
    data = index.read_bytes()
    if damage == "garbage":
        index.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        index.write_bytes(data[: len(data) // 2])
    else:  # a zeroed page in the middle of the b-tree
        page = 4096
        index.write_bytes(data[:page] + b"\0" * page + data[2 * page:] if len(data) > 2 * page else b"\0" * len(data))
    with caplog.at_level("WARNING"), FeatureCache(tmp_path) as c:
        assert c.get("v" * 32, "img00") is None  # a miss: recomputed by the caller
        c.put("v" * 32, "img00", _feats(0))
        got = c.get("v" * 32, "img00")
        assert got is not None and got.caption == "caption 0"
    assert "corrupt" in caplog.text
    assert len(list(tmp_path.glob("index.sqlite.corrupt-*"))) == 1


STRESS = textwrap.dedent("""
    import sys
    import numpy as np
    from semgir_engine.featcache import FeatureCache, Features

    root, me = sys.argv[1], int(sys.argv[2])

    def feats(k):
        rng = np.random.default_rng(k)
        return Features(f"caption {k}", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                        rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32))

    with FeatureCache(root) as c:
        for rep in range(3):
            for k in range(40):
                key = f"img{(k + 17 * me) % 40:02d}"
                got = c.get("v" * 32, key)
                if got is None:
                    c.put("v" * 32, key, feats(int(key[3:])))
                else:
                    assert got.caption == f"caption {int(key[3:])}", got.caption
                    assert np.array_equal(got.emb_image, feats(int(key[3:])).emb_image)
        print(c.hits, c.misses, c.dropped)
""")


def test_two_processes_hammer_one_feature_cache(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", STRESS, str(tmp_path), str(me)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for me in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = [list(map(int, o[0].split())) for o in outs]
    assert all(d == 0 for _, _, d in counts) and sum(h for h, _, _ in counts) >= 2 * 3 * 40 - 80
    with FeatureCache(tmp_path) as c:
        assert c.prune(verify=True)["corrupt"] == 0 and c.info()["entries"] == 40
        assert all(c.get("v" * 32, f"img{k:02d}").caption == f"caption {k}" for k in range(40))


def test_two_score_processes_share_a_feature_cache(tmp_path):
    """Two `semgir-engine score` runs over the same images with one --feature-cache at the same time:
    both finish with the same rows, and the cache holds one intact entry per image."""
    pytest.importorskip("torch")
    from conftest import make_image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        make_image(60 + i, size=(32 + 4 * i, 36)).save(imgs / f"im{i}.png")
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, "-m", "semgir_engine.cli", "score", str(imgs), "--method", "semgir",
                               "--models", "tiny", "--batch-size", "2", "--feature-cache", str(cache),
                               "--out", str(tmp_path / out)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for out in ("a.jsonl", "b.jsonl")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]

    def rows(name):
        return {r["path"]: r for r in map(json.loads, (tmp_path / name).read_text().splitlines())}

    a, b = rows("a.jsonl"), rows("b.jsonl")
    assert len(a) == len(b) == 4
    for p in a:
        assert a[p]["error"] is None and a[p]["caption"] == b[p]["caption"]
        assert abs(a[p]["p_ai"] - b[p]["p_ai"]) < 1e-5
    with FeatureCache(cache) as fc:
        assert fc.prune(verify=True)["corrupt"] == 0 and fc.info()["entries"] == 4
        version = fc.info()["versions"][0]["version"]
        for p in a:
            got = fc.get(version, hashlib.sha256(Path(p).read_bytes()).hexdigest())
            assert got is not None and got.caption == a[p]["caption"]
