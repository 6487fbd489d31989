"""Feature extraction for training and evaluation: PyTorch components, manifests, the cache.

The detection head is not needed here (features come before it), so a models folder without
``head/`` works: that is how a first head is trained on real weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError, SemgirError
from ..featcache import FeatureCache, Features
from ..images import load_image
from ..preprocess import preprocess_batch
from .features import (Branch, FeatureVersion, describe_captioner, describe_embedder, describe_regenerator,
                       extract_features)
from .models import Captioner, Embedder, RegenConfig, Regenerator, to_uint8
from .sources import ModelSource

log = logging.getLogger(__name__)


def regenerator_description(src: ModelSource, regen: Regenerator) -> dict:
    return describe_regenerator(src, regen.scheduler_name, regen.cfg.steps, regen.cfg.guidance_scale,
                                regen.resolution, regen.has_lcm)


def feature_version_of(stages, seed: int) -> FeatureVersion:
    """Version key of a loaded :class:`~.torch_backend.TorchSemgir` (or :class:`TorchFeatureStages`)."""
    src = stages.src
    cap = stages.captioner
    regen = stages.regenerator
    return FeatureVersion.make(captioner=describe_captioner(src, cap.max_new_tokens, cap.num_beams),
                               regenerator=regenerator_description(src, regen) if regen is not None else {},
                               embedder=describe_embedder(src), seed=seed, device=str(stages.device))


class TorchFeatureStages:
    """Captioner, regenerator and embedder of one model source (no head)."""

    def __init__(self, src: ModelSource, regen: RegenConfig | None = RegenConfig(), max_new_tokens: int = 20,
                 num_beams: int = 1, device: str = "cpu"):
        """``regen=None``: no regenerator of its own (attribution brings one per generator)."""
        self.src, self.device = src, torch.device(device)
        self.random_weights = src.random_weights
        self.captioner = Captioner.build(src, max_new_tokens=max_new_tokens, num_beams=num_beams)
        self.regenerator = Regenerator.build(src, regen) if regen is not None else None
        self.embedder = Embedder.build(src)
        mods = [self.captioner.model, self.embedder.model]
        if self.regenerator is not None:
            mods += [self.regenerator.text_encoder, self.regenerator.unet, self.regenerator.vae]
        for m in mods:
            m.to(self.device)

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(self.device)

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return self.captioner(self._tensor(preprocess_batch(images, self.captioner.preprocess)))

    def regenerate(self, captions: list[str], seeds: list[int]) -> list[np.ndarray]:
        if self.regenerator is None:
            raise SemgirError("these feature stages were built without a regenerator")
        return to_uint8(self.regenerator(captions, seeds))

    @torch.no_grad()
    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return self.embedder.images(self._tensor(preprocess_batch(images, self.embedder.preprocess))).cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.embedder.texts(texts).cpu().numpy()


def regenerator_branch(name: str, base: FeatureVersion, src: ModelSource, regen: Regenerator,
                       device: torch.device) -> Branch:
    """A branch that regenerates with ``regen`` (another generator's weights and config)."""
    for m in (regen.text_encoder, regen.unet, regen.vae):
        m.to(device)

    def run(captions: list[str], seeds: list[int]) -> list[np.ndarray]:
        return to_uint8(regen(captions, seeds))

    return Branch(name, base.with_regenerator(regenerator_description(src, regen)), run)


@dataclass
class ExtractedSet:
    """Features of the manifest rows that could be decoded and scored, in manifest order."""

    rows: list  # datasets.Row
    features: list[list[Features]]  # [branch][row]
    skipped: list[tuple[str, str]]  # (path, reason)

    def detection(self, branch: int = 0) -> np.ndarray:
        return np.stack([f.detection() for f in self.features[branch]]) if self.rows else np.zeros((0, 0), np.float32)

    def labels(self) -> np.ndarray:
        return np.asarray([r.label for r in self.rows], np.int64)


def extract_rows(stages, branches: Sequence[Branch], rows: Sequence, seed: int, cache: FeatureCache | None,
                 batch_size: int = 8, progress: bool = True, need_text: bool = False) -> ExtractedSet:
    """Decode every row and compute (or read from the cache) its features for every branch.

    Undecodable images, and images a model fails on, are skipped with a logged reason.
    """
    from tqdm import tqdm

    kept, feats, skipped = [], [[] for _ in branches], []
    bar = tqdm(total=len(rows), desc="features", unit="img", disable=not progress, dynamic_ncols=True)

    def run(batch_rows, batch_imgs, batch_shas):
        try:
            out = extract_features(stages, branches, batch_imgs, batch_shas, seed, cache, need_text=need_text)
        except (KeyboardInterrupt, SemgirError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad image must not end a training run
            if len(batch_rows) == 1:
                log.warning("skipping %s: feature extraction failed: %s", batch_rows[0].path, exc)
                skipped.append((str(batch_rows[0].path), f"feature extraction failed: {exc}"))
                return
            for r, im, s in zip(batch_rows, batch_imgs, batch_shas):
                run([r], [im], [s])
            return
        kept.extend(batch_rows)
        for b in range(len(branches)):
            feats[b].extend(out[b])

    buf_rows, buf_imgs, buf_shas = [], [], []
    try:
        for r in rows:
            try:
                d = load_image(r.path)
            except InputError as exc:
                log.warning("skipping %s: %s", r.path, exc)
                skipped.append((str(r.path), str(exc)))
                bar.update(1)
                continue
            buf_rows.append(r)
            buf_imgs.append(d.pixels)
            buf_shas.append(d.sha256)
            if len(buf_rows) >= batch_size:
                run(buf_rows, buf_imgs, buf_shas)
                bar.update(len(buf_rows))
                buf_rows, buf_imgs, buf_shas = [], [], []
        if buf_rows:
            run(buf_rows, buf_imgs, buf_shas)
            bar.update(len(buf_rows))
    finally:
        bar.close()
    if cache is not None:
        log.info("feature cache %s: %d hits, %d misses", cache.root, cache.hits, cache.misses)
    return ExtractedSet(kept, feats, skipped)


def open_cache(option: str | None, random_weights: bool) -> FeatureCache | None:
    from ..featcache import resolve_cache_option

    root = resolve_cache_option(option, random_weights)
    return FeatureCache(root) if root is not None else None
