"""SemGIR features with the persistent cache: version keys and cached extraction (torch-free).

A *version key* hashes everything that determines an image's features: where each component's
weights come from (for real weights, a fingerprint of every weight file's name, size and
modification time; for tiny/random, the size, seed and architecture config), the resolved
regeneration config, the captioning settings, the run's noise seed, the device type, the
versions of the libraries that compute them and a hash of the engine code that does (a changed
tokenizer or preprocessing is a new version, never a stale hit). Two runs that agree on all of
it share entries.

:func:`extract_features` is the one place that fills the cache; training, evaluation and
scoring all go through it, with one or more *branches* (regenerators): detection uses one,
SemGIR-A attribution one per candidate generator, sharing caption and candidate embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from ..featcache import FeatureCache, Features
from .pipeline import SemgirOutput, StageTimer, image_seed

log = logging.getLogger(__name__)

FEATURE_SCHEMA = 2
_LIBS = ("torch", "diffusers", "transformers", "open_clip_torch", "onnxruntime", "tokenizers")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _lib_versions() -> dict[str, str | None]:
    out = {}
    for name in _LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


#: the engine's source files whose code computes features; an edit to any of them is a new version
_CODE_FILES = ("images.py", "preprocess.py", "spec.py", "registry.py", "semgir/models.py", "semgir/configs.py",
               "semgir/components.py", "semgir/pipeline.py", "semgir/decoding.py", "runtime/scheduler.py",
               "runtime/tokenizers.py")


def _code_digest() -> str:
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for rel in _CODE_FILES:
        try:
            h.update(rel.encode() + (root / rel).read_bytes())
        except OSError:
            h.update(rel.encode() + b"<missing>")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class FeatureVersion:
    """A version key and the description it hashes (stored in the cache for ``cache info``)."""

    key: str
    description: dict

    @classmethod
    def make(cls, *, captioner: dict, regenerator: dict, embedder: dict, seed: int, device: str) -> "FeatureVersion":
        desc = {"schema": FEATURE_SCHEMA, "captioner": captioner, "regenerator": regenerator, "embedder": embedder,
                "noise_seed": int(seed), "device": device.split(":")[0], "libraries": _lib_versions(),
                "code": _code_digest()}
        return cls(_digest(json.loads(json.dumps(desc, default=str)))[:32], desc)

    @property
    def seed(self) -> int:
        return int(self.description["noise_seed"])

    def with_regenerator(self, regenerator: dict) -> "FeatureVersion":
        """The same captioner, embedder, seed and device with another regenerator."""
        d = self.description
        return FeatureVersion.make(captioner=d["captioner"], regenerator=regenerator, embedder=d["embedder"],
                                   seed=d["noise_seed"], device=d["device"])

    def base_key(self) -> str:
        """Hash of the captioner's and embedder's weights and decoding settings (what attribution heads must
        agree on), the same on every backend."""
        d = json.loads(json.dumps(self.description, default=str))
        weights = [d[p].get("weights", {}).get("source") for p in ("captioner", "embedder")]
        return _digest([weights, d["captioner"].get("generation")])[:32]


# ------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------
class BaseStages(Protocol):
    """Caption and embed (the regenerator is per branch)."""

    def caption(self, images: list[np.ndarray]) -> list[str]: ...

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class Branch:
    """One regenerator and the version key of the features it yields."""

    name: str
    version: FeatureVersion
    regenerate: Callable[[list[str], list[int]], list[np.ndarray]]  # e.g. a pipeline.RegenerateStage


def image_key(sha256: str | None, pixels: np.ndarray) -> str:
    """Cache key of an input: its content hash (pixels + shape when no hash was given)."""
    if sha256:
        return sha256
    a = np.ascontiguousarray(pixels)
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def extract_features(base: BaseStages, branches: Sequence[Branch], images: list[np.ndarray],
                     sha256s: Sequence[str | None], seed: int, cache: FeatureCache | None = None,
                     timer: StageTimer | None = None, need_text: bool = False) -> list[list[Features]]:
    """Features of every image for every branch: ``out[b][i]``.

    Cached entries are read back (verified); the rest are computed in one batch per stage and
    written to the cache one entry at a time. Caption and candidate embeddings are computed at
    most once per image and shared by all branches (they do not depend on the regenerator).
    """
    timer = timer or StageTimer()
    n = len(images)
    keys = [image_key(s, im) for s, im in zip(sha256s, images)]
    seeds = [image_seed(seed, s) for s in sha256s]
    embed_texts = getattr(base, "embed_texts", None)
    want_text = need_text or embed_texts is not None
    out: list[list[Features | None]] = [[None] * n for _ in branches]
    if cache is not None:
        t0 = time.perf_counter()
        for b, br in enumerate(branches):
            cache.register_version(br.version.key, br.version.description)
            for i in range(n):
                out[b][i] = cache.get(br.version.key, keys[i], need_text=need_text)
        timer.totals["cache"] = timer.totals.get("cache", 0.0) + time.perf_counter() - t0
    todo = [i for i in range(n) if any(out[b][i] is None for b in range(len(branches)))]
    if not todo:
        return out  # type: ignore[return-value]
    # shared part: borrow it from any branch's hit, compute the rest once
    shared: dict[int, tuple[str, np.ndarray, np.ndarray | None]] = {}
    for i in todo:
        for b in range(len(branches)):
            f = out[b][i]
            if f is not None and (f.emb_text is not None or not want_text):
                shared[i] = (f.caption, f.emb_image, f.emb_text)
                break
    fresh = [i for i in todo if i not in shared]
    if fresh:
        caps = timer.run("caption", base.caption, [images[i] for i in fresh])
        emb = timer.run("embed", base.embed_images, [images[i] for i in fresh])
        txt = timer.run("embed_text", embed_texts, caps) if embed_texts is not None else [None] * len(fresh)
        for j, i in enumerate(fresh):
            shared[i] = (caps[j], np.asarray(emb[j], np.float32),
                         None if txt[j] is None else np.asarray(txt[j], np.float32))
    for b, br in enumerate(branches):
        miss = [i for i in todo if out[b][i] is None]
        if not miss:
            continue
        regen = timer.run("regenerate", br.regenerate, [shared[i][0] for i in miss], [seeds[i] for i in miss])
        remb = timer.run("embed", base.embed_images, list(regen))
        for j, i in enumerate(miss):
            cap, ei, et = shared[i]
            f = Features(cap, np.asarray(regen[j], np.uint8), ei, np.asarray(remb[j], np.float32), et)
            out[b][i] = f
            if cache is not None:
                t0 = time.perf_counter()
                cache.put(br.version.key, keys[i], f)
                timer.totals["cache"] = timer.totals.get("cache", 0.0) + time.perf_counter() - t0
    return out  # type: ignore[return-value]


class Attributor(Protocol):
    """What the scorer needs from SemGIR-A (see :mod:`.attribution`)."""

    names: list[str]
    base_key: str

    def branches(self, base: FeatureVersion) -> list[Branch]: ...

    def predict(self, emb_image: np.ndarray, emb_text: np.ndarray, emb_regen: list[np.ndarray]) -> np.ndarray: ...


class CachedSemgir:
    """The scorer's SemGIR path with the feature cache and, optionally, attribution.

    ``stages`` is the loaded backend (caption/regenerate/embed/classify); ``version`` the key of
    its features. Returns the same :class:`SemgirOutput` as :func:`.pipeline.run_semgir`, plus
    one ``(probabilities by generator, most likely generator)`` pair per image when attributing.
    """

    def __init__(self, stages, version: FeatureVersion, cache: FeatureCache | None,
                 attributor: Attributor | None = None):
        self.stages, self.version, self.cache, self.attributor = stages, version, cache, attributor
        self._attr_branches = attributor.branches(version) if attributor is not None else []
        if attributor is not None and attributor.base_key != version.base_key():
            log.warning("the attribution heads were trained on features of other captioner/embedder weights "
                        "than the ones loaded now; their probabilities may be meaningless")

    def run(self, images: list[np.ndarray], sha256s: list[str | None],
            timer: StageTimer | None = None) -> tuple[SemgirOutput, list[dict[str, float]] | None]:
        """Score one batch (noise seed: the one in ``version``)."""
        timer = timer or StageTimer()
        before = dict(timer.totals)
        seed = int(self.version.description["noise_seed"])
        branches = [Branch("detect", self.version, self.stages.regenerate)] + self._attr_branches
        feats = extract_features(self.stages, branches, images, sha256s, seed, self.cache, timer,
                                 need_text=self.attributor is not None)
        det = np.stack([f.detection() for f in feats[0]])
        p_ai = timer.run("head", self.stages.classify, det)
        attributions = None
        if self.attributor is not None:
            ei = np.stack([f.emb_image for f in feats[0]])
            et = np.stack([f.emb_text for f in feats[0]])
            er = [np.stack([f.emb_regen for f in fb]) for fb in feats[1:]]
            probs = timer.run("attribute", self.attributor.predict, ei, et, er)
            attributions = [{m: float(p) for m, p in zip(self.attributor.names, row)} for row in probs]
        n = len(images)
        per_image = {k: 1000.0 * (v - before.get(k, 0.0)) / n for k, v in timer.totals.items()
                     if v != before.get(k)}  # only the stages this batch ran (cache hits skip the models)
        out = SemgirOutput(np.asarray(p_ai, np.float64), [f.caption for f in feats[0]],
                           [f.regenerated for f in feats[0]], per_image)
        return out, attributions
