"""Patch-shuffle detector network (Zheng et al., NeurIPS 2024, "Breaking Semantic Artifacts").

A 256x256 crop is cut into a grid of patches (16 of 64x64 by default) with a reshape, the
patch order is shuffled, a CNN shared across patches turns each patch into a feature vector,
the vectors are concatenated in the (shuffled) order and a linear layer gives one logit
(positive = AI). Training shuffles with a fresh random permutation per sample; evaluation uses
the identity order, a given permutation, or averages the logits over K seeded permutations.

Architectures are data: :data:`PRESETS` maps names to :class:`PatchShuffleConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from ..errors import UnknownNameError
from .preprocess import PreprocessConfig


@dataclass(frozen=True)
class PatchShuffleConfig:
    """Architecture and input spec of one patch-shuffle model."""

    patch: int = 64
    stem_channels: int = 16  # stride-1 convs at full patch resolution (keep high frequencies)
    stem_layers: int = 1
    stages: tuple[int, ...] = (32, 64, 96)  # one stride-2 conv (+BN+ReLU) per entry
    blocks_per_stage: int = 1  # extra stride-1 convs per stage
    feature_dim: int = 64  # per-patch feature after global average pooling and a 1x1 projection
    dropout: float = 0.2
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if self.preprocess.size % self.patch:
            raise ValueError(f"crop {self.preprocess.size} is not a multiple of patch {self.patch}")

    @property
    def grid(self) -> int:
        return self.preprocess.size // self.patch

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PatchShuffleConfig":
        d = dict(d)
        d["stages"] = tuple(d["stages"])
        d["preprocess"] = PreprocessConfig.from_dict(d["preprocess"])
        return cls(**d)

    def macs_per_image(self) -> int:
        """Multiply-accumulates of one image (convs and linear layers; BN/ReLU ignored)."""
        macs, c, r = 0, 3, self.patch
        for _ in range(self.stem_layers):
            macs += r * r * self.stem_channels * c * 9
            c = self.stem_channels
        for ch in self.stages:
            r = (r + 1) // 2
            macs += r * r * ch * c * 9
            macs += self.blocks_per_stage * r * r * ch * ch * 9
            c = ch
        macs += c * self.feature_dim
        return macs * self.n_patches + self.n_patches * self.feature_dim


#: Named architectures. "paper" approximates the published per-patch stem (~70 GMAC/image) and
#: is far too heavy for a CPU; "tiny" and "small" are the CPU variants compared in the report.
PRESETS: dict[str, PatchShuffleConfig] = {
    "tiny": PatchShuffleConfig(stem_layers=0, stages=(16, 32, 64), blocks_per_stage=0, feature_dim=32),
    "small": PatchShuffleConfig(stem_layers=0, stages=(24, 48, 96), blocks_per_stage=1, feature_dim=64),
    "paper": PatchShuffleConfig(stem_channels=64, stem_layers=18, stages=(64, 128, 256, 512), blocks_per_stage=3,
                                feature_dim=512),
    # for tests only: a few thousand parameters on 64x64 inputs
    "test": PatchShuffleConfig(patch=16, stem_channels=4, stem_layers=1, stages=(8,), blocks_per_stage=0,
                               feature_dim=8, dropout=0.0, preprocess=PreprocessConfig(size=64)),
}


def get_config(name: str, **overrides) -> PatchShuffleConfig:
    """A preset by name (unknown names raise :class:`UnknownNameError` listing the valid ones)."""
    if name not in PRESETS:
        raise UnknownNameError("patch-shuffle preset", name, list(PRESETS))
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C, patch, patch), row-major patch order; a pure reshape."""
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    if gh * patch != h or gw * patch != w:
        raise ValueError(f"input {h}x{w} not divisible by patch {patch}")
    return x.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch, patch)


def unpatchify(p: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square grid."""
    b, n, c, ph, pw = p.shape
    return p.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * ph, grid * pw)


def shuffle_patches(p: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Reorder patches: ``perm`` is (N,) for the whole batch or (B, N) per sample."""
    b, n = p.shape[:2]
    if perm.dim() == 1:
        return p[:, perm]
    idx = perm.to(p.device).long().view(b, n, 1, 1, 1).expand_as(p)
    return torch.gather(p, 1, idx)


def random_permutations(batch: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, n) independent uniform permutations."""
    return torch.argsort(torch.rand(batch, n, generator=generator), dim=1)


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class PatchCNN(nn.Module):
    """The per-patch feature extractor shared across patches."""

    def __init__(self, cfg: PatchShuffleConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for _ in range(cfg.stem_layers):
            layers += _conv(c, cfg.stem_channels, 1)
            c = cfg.stem_channels
        for ch in cfg.stages:
            layers += _conv(c, ch, 2)
            for _ in range(cfg.blocks_per_stage):
                layers += _conv(ch, ch, 1)
            c = ch
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(c, cfg.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(self.body(x).mean(dim=(2, 3))))


class PatchShuffleNet(nn.Module):
    """Patchify -> shuffle -> shared CNN -> flatten -> linear -> one logit per image."""

    def __init__(self, cfg: PatchShuffleConfig):
        super().__init__()
        self.cfg = cfg
        self.cnn = PatchCNN(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.n_patches * cfg.feature_dim, 1)

    def forward(
        self,
        x: torch.Tensor,
        perm: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits (B,). Training: random per-sample shuffle unless ``perm`` is given; eval: identity
        order unless ``perm`` is given."""
        p = patchify(x, self.cfg.patch)
        b, n = p.shape[:2]
        if perm is None and self.training:
            perm = random_permutations(b, n, generator)
        if perm is not None:
            p = shuffle_patches(p, perm)
        f = self.cnn(p.reshape(b * n, *p.shape[2:])).reshape(b, n * self.cfg.feature_dim)
        return self.head(self.dropout(f)).squeeze(1)

    @torch.no_grad()
    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, feature_dim) per-patch features in row-major patch order (eval helper)."""
        p = patchify(x, self.cfg.patch)
        b, n = p.shape[:2]
        return self.cnn(p.reshape(b * n, *p.shape[2:])).reshape(b, n, self.cfg.feature_dim)

    @torch.no_grad()
    def head_logits(self, f: torch.Tensor, k_shuffles: int = 0, seed: int = 0) -> torch.Tensor:
        """Logits from patch features: identity order (``k_shuffles`` 0) or the mean over K seeded
        permutations (the same K permutations for every image, reproducible from ``seed``)."""
        b, n = f.shape[:2]
        if k_shuffles <= 0:
            return self.head(f.reshape(b, -1)).squeeze(1)
        g = torch.Generator().manual_seed(seed)
        out = torch.zeros(b, dtype=f.dtype)
        for _ in range(k_shuffles):
            perm = torch.randperm(n, generator=g)
            out += self.head(f[:, perm].reshape(b, -1)).squeeze(1)
        return out / k_shuffles

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, k_shuffles: int = 0, seed: int = 0) -> torch.Tensor:
        """Eval-mode logits. The per-patch features do not depend on the order, so the CNN runs
        once and only the linear head is re-applied per permutation."""
        return self.head_logits(self.patch_features(x), k_shuffles, seed)


def build_model(cfg: PatchShuffleConfig | str) -> PatchShuffleNet:
    return PatchShuffleNet(get_config(cfg) if isinstance(cfg, str) else cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
