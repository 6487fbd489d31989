"""Per-image views and frozen features, computed once and cached (for model selection by LOSO).

For every row of a manifest: ``n_train`` randomised, class-blind training views
(:func:`.leaks.neutralise`), the clean test view (the model's own preprocessing: short side
resized to ``test_short_side``, centre crop) and the same after a JPEG quality-75 round trip.
Each view is a 256x256 uint8 crop; the frozen backbone's features are taken at two scales: the
whole crop average-pooled 2x to 128 px ("global") and the centre 128 px at full resolution
("local"). Everything is written to one ``.npz`` per manifest and settings, keyed by their hash,
so heads (and the patch CNN) can be trained many times without decoding or running the backbone
again. The original files' metadata and each training view's re-encoded metadata are kept for the
leak probe.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..datasets import Manifest
from ..errors import InputError
from .augment import jpeg_roundtrip
from .leaks import FileMeta, NeutraliseConfig, file_metadata, metadata_features, neutralise
from .preprocess import PreprocessConfig, crop, fit_min_side

log = logging.getLogger(__name__)

TEST_VIEWS = ("clean", "jpeg75")


@dataclass(frozen=True)
class ViewConfig:
    n_train: int = 2
    neutralise: NeutraliseConfig = field(default_factory=NeutraliseConfig)
    test_short_side: int = 384
    size: int = 256
    backbone: str = "efficientnet-lite0"
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["neutralise"] = self.neutralise.to_dict()
        return d

    def key(self, manifest: Manifest) -> str:
        blob = json.dumps({"manifest": manifest.sha256, "views": self.to_dict(), "v": 1}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def test_preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(size=self.size, fit="short", short_side=self.test_short_side)


def test_crop(img: np.ndarray, cfg: ViewConfig) -> np.ndarray:
    p = cfg.test_preprocess
    return crop(fit_min_side(img, p.size, p.fit, p.short_side), p.size)


def two_scale_inputs(crops: np.ndarray, pcfg: PreprocessConfig):
    """(B, S, S, 3) uint8 crops -> the (global, local) backbone inputs of :func:`.fused.scale_inputs`."""
    import torch

    from .fused import scale_inputs
    from .preprocess import normalize

    v = scale_inputs(torch.from_numpy(np.stack([normalize(c, pcfg) for c in crops])))
    return v["global"], v["local"]


def build(manifest: Manifest, cache_dir: str | Path, cfg: ViewConfig = ViewConfig(), *,
          batch_size: int = 32, progress: bool = True) -> Path:
    """Compute (or find) the cache for ``manifest``; returns the ``.npz`` path."""
    import torch

    from .backbone import FrozenBackbone

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"views-{cfg.key(manifest)}.npz"
    if out.exists():
        return out
    rows = list(manifest.rows)
    n, v = len(rows), cfg.n_train + len(TEST_VIEWS)
    crops_path = cache / f"crops-{cfg.key(manifest)}.npy"
    part = cache / f"views-{cfg.key(manifest)}.part.npz"
    if part.exists() and crops_path.exists():  # the decoding phase finished earlier
        crops = np.load(crops_path, mmap_mode="r")
        pz = np.load(part)
        ok, orig_m, view_m = pz["ok"], pz["orig_meta"], pz["view_meta"]
    else:
        crops, ok, orig_m, view_m = _make_views(rows, crops_path, cfg, progress)
        np.savez(part, ok=ok, orig_meta=orig_m, view_meta=view_m)
    bb = FrozenBackbone(cfg.backbone)
    run = _backbone_runner(bb, cache)
    pcfg = PreprocessConfig(size=cfg.size)
    feats = {s: np.zeros((n, v, bb.feature_dim), np.float16) for s in ("global", "local")}
    idx = np.flatnonzero(ok)
    flat = [(i, j) for i in idx for j in range(v)]
    it2 = range(0, len(flat), batch_size)
    if progress:
        from tqdm import tqdm

        it2 = tqdm(it2, desc=f"{cfg.backbone} features", unit="batch")
    with torch.inference_mode():
        for b in it2:
            chunk = flat[b : b + batch_size]
            g, loc = two_scale_inputs(np.stack([crops[i, j] for i, j in chunk]), pcfg)
            fg, fl = run(g), run(loc.contiguous())
            for t, (i, j) in enumerate(chunk):
                feats["global"][i, j] = fg[t]
                feats["local"][i, j] = fl[t]
    np.savez(out.with_suffix(".tmp.npz"), ok=ok, labels=np.array([r.label for r in rows]),
             sources=np.array([r.source for r in rows]), paths=np.array([str(r.path) for r in rows]),
             global_=feats["global"], local=feats["local"],
             orig_meta=orig_m, view_meta=view_m,
             config=json.dumps(cfg.to_dict()), manifest_sha256=manifest.sha256)
    out.with_suffix(".tmp.npz").replace(out)
    return out


def _backbone_runner(bb, cache: Path):
    """torch tensor -> numpy features: ONNX Runtime when installed (about 3x faster than eager torch
    for the depthwise convolutions on this CPU; parity checked on the first call), else torch."""
    import torch

    from ..deps import available

    if not available("onnxruntime"):
        return lambda x: bb(x).numpy()
    import onnxruntime as ort

    path = cache / f"{bb.name}-{bb.feature_dim}.onnx"
    if not path.exists():
        torch.onnx.export(bb, (torch.zeros(2, 3, 128, 128),), str(path), input_names=["x"], output_names=["f"],
                          dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "f": {0: "b"}}, dynamo=False, opset_version=17)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    checked = []

    def run(x):
        out = sess.run(None, {"x": x.numpy()})[0]
        if not checked:
            ref = bb(x[:2]).numpy()
            if not np.allclose(out[:2], ref, atol=1e-3, rtol=1e-3):
                raise RuntimeError(f"ONNX backbone differs from torch (max {np.abs(out[:2] - ref).max():.2e})")
            checked.append(True)
        return out

    return run


def _make_views(rows, crops_path: Path, cfg: ViewConfig, progress: bool):
    """Decode every row once; write its views into a memory-mapped (N, V, S, S, 3) uint8 array."""
    from ..images import load_image

    n, v = len(rows), cfg.n_train + len(TEST_VIEWS)
    crops = np.lib.format.open_memmap(crops_path, mode="w+", dtype=np.uint8, shape=(n, v, cfg.size, cfg.size, 3))
    ok = np.zeros(n, bool)
    orig_meta: list[FileMeta | None] = [None] * n
    view_meta: list[list[FileMeta]] = [[] for _ in range(n)]
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="views", unit="img")
    for i in it:
        r = rows[i]
        try:
            img = load_image(r.path).pixels
            orig_meta[i] = file_metadata(r.path)
        except (InputError, OSError) as exc:
            log.warning("skipping %s: %s", r.path, exc)
            continue
        rng = np.random.default_rng([cfg.seed, i])
        for k in range(cfg.n_train):
            crops[i, k], m = neutralise(img, rng, cfg.neutralise)
            view_meta[i].append(m)
        crops[i, cfg.n_train] = test_crop(img, cfg)
        crops[i, cfg.n_train + 1] = test_crop(jpeg_roundtrip(img, 75), cfg)
        ok[i] = True
    crops.flush()
    blank = FileMeta("none", 1, 1, 0, float("nan"), False, False)
    orig_m = metadata_features([m or blank for m in orig_meta])
    view_m = np.stack([metadata_features(vm if vm else [blank] * cfg.n_train) for vm in view_meta])
    return crops, ok, orig_m, view_m


def load(path: str | Path) -> dict:
    d = np.load(path, allow_pickle=False)
    out = {k: d[k] for k in d.files}
    out["global"] = out.pop("global_")
    out["config"] = json.loads(str(out["config"]))
    crops = Path(path).with_name(Path(path).name.replace("views-", "crops-").replace(".npz", ".npy"))
    out["crops_path"] = crops
    return out
