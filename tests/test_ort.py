"""ONNX Runtime backend: scores agree with the torch reference on the tiny pipeline, the path runs
without torch installed, and its parts (scheduler, tokenizers) match the libraries they replace.

Stated tolerance: |p_ai(onnxruntime) - p_ai(torch)| < 1e-4 per image, identical captions and
decisions (p_ai >= 0.5); regenerated uint8 pixels differ by at most 2 levels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from export_helpers import images, tiny_export_dir  # noqa: E402

P_TOL = 1e-4


@pytest.fixture(scope="module")
def export_dir():
    return tiny_export_dir()[0]


@pytest.fixture(scope="module")
def ort_scorer(export_dir):
    from semgir_engine.scorer import Scorer, ScorerConfig

    with Scorer(ScorerConfig(backend="onnxruntime", export_dir=str(export_dir), batch_size=3)) as s:
        yield s


def test_scores_match_torch(ort_scorer, tiny_scorer):
    imgs = images(5)
    ours, ref = ort_scorer.score(imgs), tiny_scorer.score(imgs)
    assert ort_scorer.version == tiny_scorer.version
    for a, b in zip(ours, ref):
        assert a.ok and b.ok
        assert a.caption == b.caption
        assert abs(a.p_ai - b.p_ai) < P_TOL, (a.p_ai, b.p_ai)
        assert (a.p_ai >= 0.5) == (b.p_ai >= 0.5)
        assert a.random_weights and a.label is None


def test_stages_match_torch(ort_scorer, tiny_scorer):
    from semgir_engine.semgir.pipeline import image_seed

    o, t = ort_scorer._impl, tiny_scorer._impl
    imgs = images(3)
    caps = t.caption(imgs)
    assert o.caption(imgs) == caps
    seeds = [image_seed(0, f"{i:064x}") for i in range(3)]
    ro, rt = o.regenerate(caps, seeds), t.regenerate(caps, seeds)
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(ro, rt)) <= 2
    eo, et = o.embed_images(imgs), t.embed_images(imgs)
    assert np.abs(eo - et).max() < 1e-4
    # batched == single on the exported path too
    single = np.concatenate([o.regenerate([c], [s])[0][None] for c, s in zip(caps, seeds)])
    assert np.abs(single.astype(int) - np.stack(ro).astype(int)).max() <= 1


def test_cli_score_onnxruntime_equals_torch(export_dir, tmp_path, tiny_scorer):
    from click.testing import CliRunner

    from conftest import make_image
    from semgir_engine.cli import main

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        make_image(i, size=(40 + 8 * i, 48)).save(d / f"img{i}.png")
    out = tmp_path / "ort.jsonl"
    r = CliRunner().invoke(main, ["score", str(d), "--backend", "onnxruntime", "--export-dir", str(export_dir),
                                  "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = {Path(j["path"]).name: j for j in map(json.loads, out.read_text().splitlines())}
    ref = {Path(p).name: res for p, res in zip(sorted(map(str, d.iterdir())),
                                               tiny_scorer.score(sorted(map(str, d.iterdir()))))}
    assert set(rows) == set(ref)
    for name, row in rows.items():
        assert abs(row["p_ai"] - ref[name].p_ai) < P_TOL
        assert (row["p_ai"] >= 0.5) == (ref[name].p_ai >= 0.5)


def test_auto_backend_uses_onnxruntime_with_export_dir(export_dir):
    from semgir_engine.scorer import Scorer, ScorerConfig

    with Scorer(ScorerConfig(backend="auto", export_dir=str(export_dir))) as s:
        assert s.method == "semgir" and s.backend == "onnxruntime" and s._impl.provider.kind == "onnxruntime"


def test_cuda_device_is_refused_clearly_without_a_gpu(export_dir):
    from semgir_engine.errors import SemgirError
    from semgir_engine.runtime.ort import available_providers
    from semgir_engine.scorer import Scorer, ScorerConfig

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(SemgirError, match="cuda:1"):
        Scorer(ScorerConfig(backend="onnxruntime", export_dir=str(export_dir), device="cuda:1")).score(images(1))


def test_incomplete_or_corrupt_export_dir(export_dir, tmp_path):
    import shutil

    from semgir_engine.runtime.ort_semgir import ExportDirError, OrtSemgir

    d = tmp_path / "partial"
    shutil.copytree(export_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    del m["components"]["unet"]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportDirError, match="unet"):
        OrtSemgir(d)
    d2 = tmp_path / "corrupt"
    shutil.copytree(export_dir, d2)
    p = d2 / "semgir_head.fp32.onnx"
    p.write_bytes(p.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ExportDirError, match="sha256"):
        OrtSemgir(d2).classify(np.zeros((1, 64), np.float32))  # sessions open (and are verified) on first use
    with pytest.raises(ExportDirError, match="manifest"):
        OrtSemgir(tmp_path)


def test_scorer_runs_without_torch(export_dir):
    """The ONNX Runtime path imports and scores with torch and the model libraries unimportable, and the
    scoring runtime (API and CLI) imports nothing from the export, benchmark or calibration tooling."""
    ref = json.dumps([float(x) for x in _torch_reference(export_dir)])
    code = textwrap.dedent(f"""
        import sys, json
        for m in ("torch", "torchvision", "diffusers", "transformers", "open_clip", "tensorrt",
                  "semgir_engine.export", "semgir_engine.bench", "semgir_engine.calibration"):
            sys.modules[m] = None  # any import of these now raises ImportError
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from export_helpers import images
        from semgir_engine.scorer import Scorer, ScorerConfig
        import semgir_engine.runtime.trt, semgir_engine.runtime.cache  # import-safe too
        from semgir_engine.cli import main
        from click.testing import CliRunner
        r = CliRunner().invoke(main, ["score", "--help"])
        assert r.exit_code == 0, r.output
        with Scorer(ScorerConfig(export_dir={str(export_dir)!r}, batch_size=2)) as s:
            assert s.backend == "onnxruntime" and type(s._impl).__name__ == "SemgirPipeline", type(s._impl)
            res = s.score(images(3))
        got = [r.p_ai for r in res]
        ref = json.loads({ref!r})
        assert all(abs(a - b) < {P_TOL} for a, b in zip(got, ref)), (got, ref)
        loaded = [m for m in ("torch", "diffusers", "transformers", "open_clip") if sys.modules.get(m) is not None]
        assert not loaded, loaded
        print("OK", got)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", SEMGIR_ORT_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def _torch_reference(export_dir):
    from semgir_engine.scorer import Scorer, ScorerConfig

    with Scorer(ScorerConfig(method="semgir", models="tiny", batch_size=2)) as s:
        return [r.p_ai for r in s.score(images(3))]


@pytest.mark.parametrize("steps", [1, 2, 4, 10])
def test_numpy_dpm_solver_matches_diffusers(steps):
    import torch

    from semgir_engine.runtime.scheduler import DiffusersScheduler, make_scheduler
    from semgir_engine.semgir.models import SD_SCHEDULER_CONFIG

    ours = make_scheduler("dpm++", SD_SCHEDULER_CONFIG)  # the numpy port, trailing spacing
    ref = DiffusersScheduler("dpm++", dict(SD_SCHEDULER_CONFIG, timestep_spacing="trailing")).s
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)
    assert list(ours.timesteps) == ref.timesteps.tolist()
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    xt = torch.from_numpy(x.copy())
    for i, t in enumerate(ours.timesteps):
        x = ours.step(np.tanh(0.7 * x + t / 1000).astype(np.float32), i, x)
        eps = torch.from_numpy(np.tanh(0.7 * xt.numpy() + int(t) / 1000).astype(np.float32))
        xt = ref.step(eps, int(t), xt).prev_sample
    assert np.abs(x - xt.numpy()).max() < 1e-4 * max(1.0, np.abs(x).max())


def test_clip_tokenizer_matches_open_clip():
    import open_clip.tokenizer as oct

    from semgir_engine.runtime.tokenizers import ClipBpeTokenizer

    texts = ["a photo of a cat", "", "Hello, World! It's 2026 & we're   testing&amp; café", "x" * 300,
             " ".join(["word"] * 100), "a dog's ball. don't!?", "日本語 テキスト"]
    ref = oct.SimpleTokenizer()(texts, context_length=77).numpy()
    ours = ClipBpeTokenizer(Path(oct.__file__).with_name("bpe_simple_vocab_16e6.txt.gz"))(texts)
    assert (ours == ref).all()


def test_wordpiece_decoder_matches_transformers(export_dir):
    from semgir_engine.runtime.tokenizers import WordPieceDecoder
    from semgir_engine.semgir.models import Captioner
    from semgir_engine.semgir.sources import ModelSource

    tok = Captioner.build(ModelSource.parse("tiny")).tokenizer
    m = json.loads((export_dir / "manifest.json").read_text())["pipeline"]["captioner"]
    dec = WordPieceDecoder(export_dir / m["vocab_file"], m["special_ids"])
    rng = np.random.default_rng(0)
    for _ in range(100):
        ids = rng.integers(0, len(dec.vocab), size=int(rng.integers(1, 15))).tolist()
        assert dec.decode(ids) == tok.decode(ids, skip_special_tokens=True).strip()


def test_session_options_disable_spinning(export_dir):
    from semgir_engine.runtime.ort import choose_providers, session_options

    so = session_options()
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert choose_providers(device="cpu") == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in choose_providers()


def test_tensorrt_module_is_import_safe():
    from semgir_engine.errors import MissingDependencyError
    from semgir_engine.runtime import trt

    if trt.trt_available():
        pytest.skip("TensorRT is installed here")
    with pytest.raises((MissingDependencyError, Exception)) as exc:
        trt.engine_factory("/nonexistent")
    assert isinstance(exc.value, MissingDependencyError) or "CUDA" in str(exc.value)


@pytest.mark.gpu
def test_tensorrt_head_engine_matches_onnxruntime(export_dir, tmp_path):
    pytest.importorskip("tensorrt")
    from semgir_engine import registry
    from semgir_engine.runtime.ort import OrtRunner
    from semgir_engine.runtime.trt import TrtRunner, cached_engine

    m = json.loads((export_dir / "manifest.json").read_text())["components"]["semgir_head"]["fp32"]
    spec = registry.get("semgir_head", "tiny")
    art = cached_engine("semgir_head", export_dir / m["file"], m["sha256"], spec, fp16=True, cache_dir=tmp_path)
    runner = TrtRunner(art.path("semgir_head.engine"))
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    ref = OrtRunner(export_dir / m["file"], device="cpu")(features=x)["logits"]
    for _ in range(3):  # third call replays a CUDA graph
        got = runner(features=x)["logits"]
        assert (got.argmax(-1) == ref.argmax(-1)).all() and np.abs(got - ref).max() < 1e-2


def test_kv_cache_decoding_equals_full_recompute(ort_scorer, export_dir):
    from semgir_engine.runtime.ort import OrtRunner
    from semgir_engine.semgir.decoding import DecoderSteps, generate

    cap = ort_scorer._impl.captioner
    assert cap.steps.kv  # the export holds the init and with-past graphs
    full = DecoderSteps(full=OrtRunner(export_dir / "blip_text_decoder.fp32.onnx", device="cpu"))
    enc = cap.encode(images(4))
    a, b = generate(cap.steps, enc, cap.generation), generate(full, enc, cap.generation)
    assert a.shape == b.shape and (a == b).all()
