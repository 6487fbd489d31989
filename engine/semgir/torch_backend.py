"""PyTorch reference backend of the SemGIR stages."""

from __future__ import annotations

import numpy as np
import torch

from ..preprocess import preprocess_batch
from .models import Captioner, Embedder, RegenConfig, Regenerator, SemgirHead, to_uint8
from .sources import ModelSource


class TorchSemgir:
    """Builds (or loads) every SemGIR component once; implements :class:`.pipeline.SemgirStages`."""

    def __init__(self, src: ModelSource, regen: RegenConfig = RegenConfig(), max_new_tokens: int = 20,
                 num_beams: int = 1, device: str = "cpu"):
        self.src, self.device = src, torch.device(device)
        self.captioner = Captioner.build(src, max_new_tokens=max_new_tokens, num_beams=num_beams)
        self.regenerator = Regenerator.build(src, regen)
        self.embedder = Embedder.build(src)
        self.head, self.head_manifest = SemgirHead.build(src, self.embedder.dim)
        for m in (self.captioner.model, self.regenerator.text_encoder, self.regenerator.unet,
                  self.regenerator.vae, self.embedder.model, self.head):
            m.to(self.device)
        self.random_weights = src.random_weights
        self.threshold = float(self.head_manifest.get("threshold", 0.5))
        r = self.regenerator
        self.version = (f"{self.head_manifest.get('version', 'semgir-head')}"
                        f"+{r.scheduler_name}{r.cfg.steps}-g{r.cfg.guidance_scale:g}-{r.resolution}px")

    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(self.device)

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return self.captioner(self._tensor(preprocess_batch(images, self.captioner.preprocess)))

    def regenerate(self, captions: list[str], seeds: list[int]) -> list[np.ndarray]:
        return to_uint8(self.regenerator(captions, seeds))

    @torch.no_grad()
    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        x = self._tensor(preprocess_batch(images, self.embedder.preprocess))
        return self.embedder.images(x).cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.embedder.texts(texts).cpu().numpy()

    @torch.no_grad()
    def classify(self, features: np.ndarray) -> np.ndarray:
        logits = self.head(self._tensor(features.astype(np.float32)))
        return logits.softmax(-1)[:, 1].double().cpu().numpy()
