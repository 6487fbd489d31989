"""Calibration tensors: the inputs every exported component sees when the pipeline runs on a
calibration set's images (torch-free: ONNX Runtime on the fp32 graphs of an export directory).

Image encoders get the preprocessed pixels of the calibration images (and, for CLIP, of their
regenerations); the text encoder, UNet, VAE decoder and head get the intermediate tensors the
pipeline produces on them: caption token ids, every denoising step's latents/timesteps/text states,
final latents, concatenated embeddings. They are recorded by wrapping each graph's runner
(:class:`RecordingRunner`), so they are exactly what the scoring path feeds.

Tensors are stored as one ``.npz`` per component in the artifact cache, keyed by the calibration
set's digest, the fp32 graphs' sha256, the pipeline settings and the ONNX Runtime version
(:func:`calibration_tensors`): the same set on the same graphs is recorded once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..runtime.cache import ArtifactCache
from .calibset import CalibrationSet

log = logging.getLogger(__name__)

#: components that only the SemGIR pipeline's intermediate tensors can calibrate
PIPELINE_STAGE = {
    "blip_vision": "caption", "blip_text_decoder_init": "caption", "blip_text_decoder_with_past": "caption",
    "sd_text_encoder": "regenerate", "unet": "regenerate", "vae_decoder": "regenerate",
    "clip_image": "embed", "semgir_head": "classify",
}
PATCH_COMPONENTS = ("patch_cnn",)
#: recorded on every pipeline run, whichever were asked for, so that quantizing or benchmarking a
#: subset later reuses the same (slow to produce) recording; the BLIP decoders' key/value caches are
#: large and only recorded when asked for
ALWAYS_RECORDED = ("blip_vision", "sd_text_encoder", "unet", "vae_decoder", "clip_image", "semgir_head")


@dataclass(frozen=True)
class PipelineSettings:
    """The SemGIR settings the intermediate tensors depend on (part of the cache key)."""

    steps: int = 4
    guidance_scale: float = 1.0
    resolution: int | None = None
    seed: int = 0
    batch_size: int = 4
    max_images: int | None = None  # the pipeline part runs on the first N images (the regeneration is slow)


class RecordingRunner:
    """Wraps a runner (``runner(**arrays) -> dict``) and keeps a copy of the inputs of its first
    ``max_calls`` calls."""

    def __init__(self, inner: Callable, store: list, max_calls: int = 64):
        self.inner, self.store, self.max_calls = inner, store, max_calls

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        if len(self.store) < self.max_calls:
            self.store.append({k: np.array(v, copy=True) for k, v in arrays.items()})
        return self.inner(**arrays)


class LazyRunner:
    """Builds its runner on the first call; ``release`` drops it. The recording runs the pipeline
    stage by stage and releases each stage's graphs before the next loads (every full-size graph
    at once, with ONNX Runtime's pre-packed weight copies, went past 11 GB and was OOM-killed)."""

    def __init__(self, build: Callable[[], Callable]):
        self.build, self.inner = build, None

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        if self.inner is None:
            self.inner = self.build()
        return self.inner(**arrays)

    def release(self) -> None:
        self.inner = None


def record_patch(export_dir: str | os.PathLike, images: Sequence[np.ndarray], batch_size: int = 16) -> dict[str, list]:
    """``{"patch_cnn": [feeds...]}`` from the exported patch detector scoring ``images``."""
    from ..runtime.ort import OrtRunner
    from ..runtime.ort_patch import OrtPatchDetector

    store: list = []
    det = OrtPatchDetector(export_dir, precision="fp32", device="cpu",
                           runner_factory=lambda _n, p: RecordingRunner(OrtRunner(p, device="cpu"), store, 10**6))
    det.predict_logits(list(images), batch_size=batch_size, k_shuffles=0)
    return {"patch_cnn": store}


def record_semgir(export_dir: str | os.PathLike, images: Sequence[np.ndarray], names: Iterable[str],
                  settings: PipelineSettings = PipelineSettings(), max_calls: int = 256) -> dict[str, list]:
    """Run the SemGIR stages (fp32 graphs on ONNX Runtime) on ``images`` and return the recorded
    feeds of ``names``: caption, regenerate, embed the originals and the regenerations, classify.
    Stage by stage over all images, each stage's graphs released before the next stage loads."""
    import gc

    from ..runtime.ort import OrtRunner
    from ..runtime.ort_semgir import OrtSemgir
    from ..semgir.pipeline import RegenConfig

    names = set(names)
    stores: dict[str, list] = {n: [] for n in names}
    lazy: dict[str, LazyRunner] = {}

    def factory(name: str, path: Path):
        r = lazy[name] = LazyRunner(lambda: OrtRunner(path, device="cpu"))
        return RecordingRunner(r, stores[name], max_calls) if name in stores else r

    def release(stage: str) -> None:
        for n, r in lazy.items():
            if PIPELINE_STAGE.get(n) == stage:
                r.release()
        gc.collect()

    regen = RegenConfig(steps=settings.steps, guidance_scale=settings.guidance_scale, resolution=settings.resolution)
    stages = OrtSemgir(export_dir, regen, precision="fp32", runner_factory=factory, kind="calibration-recording")
    todo = list(images)[: settings.max_images] if settings.max_images else list(images)
    need = {PIPELINE_STAGE[n] for n in names if n in PIPELINE_STAGE}
    bs = settings.batch_size
    batches = [todo[i : i + bs] for i in range(0, len(todo), bs)]
    log.info("calibration: captioning %d images", len(todo))
    captions = [stages.caption(b) for b in batches]
    release("caption")
    if need <= {"caption"}:
        return stores
    log.info("calibration: regenerating %d images (%d steps)", len(todo), settings.steps)
    regen = [stages.regenerate(c, [settings.seed + i * bs + k for k in range(len(c))]) for i, c in enumerate(captions)]
    release("regenerate")
    log.info("calibration: embedding and classifying")
    if need <= {"caption", "regenerate"}:
        return stores
    feats = []
    for b, r in zip(batches, regen):
        e = stages.embed_images(list(b) + list(r))
        feats.append(np.concatenate([e[: len(b)], e[len(b):]], axis=1))
    release("embed")
    for f in feats:
        stages.classify(f)
    return stores


def _save_npz(path: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    arrays = {f"{i:05d}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()}
    np.savez(path, **arrays)


def load_npz(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """The list of feeds stored by :func:`calibration_tensors` for one component."""
    with np.load(path) as z:
        out: dict[int, dict[str, np.ndarray]] = {}
        for key in z.files:
            i, name = key.split("/", 1)
            out.setdefault(int(i), {})[name] = z[key]
    return [out[i] for i in sorted(out)]


class StoredFeeds(Mapping):
    """``{component: [feeds, ...]}`` read from the cached ``.npz`` files on each access, so a caller that
    handles one component at a time holds one component's tensors (the BLIP decoders' key/value caches run
    to GBs; held beside nncf's UNet quantization they exhausted 24 GB)."""

    def __init__(self, paths: Mapping[str, Path]):
        self._paths = dict(paths)

    def __getitem__(self, name: str) -> list[dict[str, np.ndarray]]:
        return load_npz(self._paths[name])

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _graph_hashes(manifest: Mapping, names: Iterable[str]) -> dict[str, str]:
    comps = manifest.get("components", {})
    return {n: comps[n]["fp32"]["sha256"] for n in sorted(names) if "fp32" in comps.get(n, {})}


def calibration_tensors(export_dir: str | os.PathLike, calib: CalibrationSet, names: Iterable[str], *,
                        settings: PipelineSettings = PipelineSettings(), data_dir: str | os.PathLike | None = None,
                        cache_dir: str | os.PathLike | None = None) -> StoredFeeds:
    """``{component: [feeds, ...]}`` recorded on ``calib``'s images, from the artifact cache or
    recorded now, loaded from the cache when a component is looked up. Patch and SemGIR components
    are recorded by their own runtimes."""
    import onnxruntime

    from ..runtime.manifest import load_manifest

    names = sorted(set(names))
    manifest = load_manifest(export_dir)
    unknown = [n for n in names if n not in PIPELINE_STAGE and n not in PATCH_COMPONENTS]
    if unknown:
        from ..errors import SemgirError

        raise SemgirError(f"no calibration recipe for {', '.join(unknown)} (the scoring pipeline does not run it); "
                          f"calibrated components: {', '.join(sorted(PIPELINE_STAGE) + list(PATCH_COMPONENTS))}")
    semgir = sorted(set(ALWAYS_RECORDED) | {n for n in names if n in PIPELINE_STAGE}) \
        if any(n in PIPELINE_STAGE for n in names) else []
    patch = [n for n in names if n in PATCH_COMPONENTS]
    out: dict[str, Path] = {}
    cache = ArtifactCache(cache_dir)
    groups = ([(patch, None)] if patch else []) + ([(semgir, settings)] if semgir else [])
    for group, st in groups:
        parts = {"kind": "calibration-tensors", "calibration_set": calib.ref, "graphs": _graph_hashes(manifest, group),
                 "components": group, "settings": st.__dict__ if st else None,
                 "onnxruntime": onnxruntime.__version__, "format": 1}

        def build(tmp: Path, group=group, st=st) -> dict:
            images, ok, failed = calib.load_images(data_dir)
            log.info("calibration: recording %s on %d images of %s", ", ".join(group), len(images), calib.name)
            rec = record_patch(export_dir, images) if st is None else record_semgir(export_dir, images, group, st)
            for n, feeds in rec.items():
                if not feeds:
                    raise RuntimeError(f"calibration: the pipeline never ran {n}")
                _save_npz(tmp / f"{n}.npz", feeds)
            return {"images": len(ok), "failed": [(it.path, why) for it, why in failed]}

        art = cache.get_or_build(parts, build)
        for n in group:
            if n in names:
                out[n] = art.path(f"{n}.npz")
    return StoredFeeds(out)
