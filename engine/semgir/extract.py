"""Feature extraction for training and evaluation: PyTorch components, manifests, the cache.

The detection head is not needed here (features come before it), so a models folder without
``head/`` works: that is how a first head is trained on real weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError, SemgirError
from ..featcache import FeatureCache, Features
from ..images import load_image
from .features import Branch, FeatureVersion, extract_features
from .pipeline import CAPTION_COMPONENTS, EMBED_COMPONENTS, REGEN_COMPONENTS, CaptionConfig, RegenConfig, SemgirPipeline
from .sources import ModelSource

log = logging.getLogger(__name__)


def feature_version_of(stages, seed: int) -> FeatureVersion:
    """Version key of the features a loaded pipeline computes (any backend)."""
    regen = stages.regenerator
    return FeatureVersion.make(captioner=stages.captioner.describe(),
                               regenerator=regen.describe() if regen is not None else {},
                               embedder=stages.embedder.describe(), seed=seed, device=stages.device)


class TorchFeatureStages(SemgirPipeline):
    """Captioner, regenerator and embedder of one model source on torch, no head (training comes first)."""

    def __init__(self, src: ModelSource, regen: RegenConfig | None = RegenConfig(), max_new_tokens: int = 20,
                 num_beams: int = 1, device: str = "cpu"):
        """``regen=None``: no regenerator of its own (attribution brings one per generator)."""
        from .torch_backend import TorchSessions

        comps = CAPTION_COMPONENTS + EMBED_COMPONENTS + (REGEN_COMPONENTS if regen is not None else ())
        self.src = src
        super().__init__(TorchSessions(src, device, comps), regen, CaptionConfig(max_new_tokens, num_beams),
                         head=False)


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
