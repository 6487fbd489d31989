"""Per-component torch modules whose ``forward`` follows the registry spec (input names and order).

These wrappers are what export traces and what validation compares against; the pipeline's
bundles (:mod:`.models`) hold the same underlying modules.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnknownNameError
from .sources import ModelSource


class BlipVision(nn.Module):
    def __init__(self, blip):
        super().__init__()
        self.vision = blip.vision_model

    def forward(self, pixel_values):
        return self.vision(pixel_values=pixel_values)[0]


class BlipTextDecoder(nn.Module):
    def __init__(self, blip):
        super().__init__()
        self.decoder = blip.text_decoder

    def forward(self, input_ids, encoder_hidden_states):
        return self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states, use_cache=False).logits


def _stack_self_attention_cache(cache) -> torch.Tensor:
    """(layers, 2, batch, heads, tokens, head_dim) from a transformers cache (self-attention part)."""
    self_cache = getattr(cache, "self_attention_cache", cache)
    return torch.stack([torch.stack([layer.keys, layer.values]) for layer in self_cache.layers])


def _cache_kw(decoder, cache) -> dict:
    """transformers 5 names the argument ``cache`` (``past_key_values`` is deprecated); 4.x knows only the latter."""
    import inspect

    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    return {name: cache}


class BlipTextDecoderInit(nn.Module):
    """First decoding step with a key/value cache: logits and the self-attention cache of the prefix."""

    def __init__(self, blip):
        super().__init__()
        self.decoder = blip.text_decoder

    def forward(self, input_ids, encoder_hidden_states):
        from transformers.cache_utils import DynamicCache

        out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                           use_cache=True, **_cache_kw(self.decoder, DynamicCache(config=self.decoder.config)))
        return out.logits, _stack_self_attention_cache(out.past_key_values)


class BlipTextDecoderWithPast(nn.Module):
    """Later decoding steps: new token ids plus the cache (stacked as above) -> logits and the grown cache.
    Cross-attention keys/values are recomputed from ``encoder_hidden_states`` (not cached)."""

    def __init__(self, blip):
        super().__init__()
        self.decoder = blip.text_decoder

    def forward(self, input_ids, encoder_hidden_states, past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[i, 0], past[i, 1]) for i in range(past.shape[0])],
                             config=self.decoder.config)
        out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states, use_cache=True,
                           **_cache_kw(self.decoder, cache))
        return out.logits, _stack_self_attention_cache(out.past_key_values)


class SdTextEncoder(nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids)[0]


class Unet(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class VaeDecoder(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent).sample


class VaeEncoder(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image).latent_dist.mean


class ClipImage(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values):
        return nn.functional.normalize(self.clip.encode_image(pixel_values), dim=-1)


class ClipText(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids):
        return nn.functional.normalize(self.clip.encode_text(input_ids), dim=-1)


def build_component(name: str, src: ModelSource) -> nn.Module:
    """The torch module of one registered component, in eval mode."""
    from .models import Captioner, Embedder, Regenerator, SemgirHead

    if name in ("blip_vision", "blip_text_decoder", "blip_text_decoder_init", "blip_text_decoder_with_past"):
        blip = Captioner.build(src).model
        mod = {"blip_vision": BlipVision, "blip_text_decoder": BlipTextDecoder,
               "blip_text_decoder_init": BlipTextDecoderInit,
               "blip_text_decoder_with_past": BlipTextDecoderWithPast}[name](blip)
    elif name in ("sd_text_encoder", "unet", "vae_decoder", "vae_encoder"):
        r = Regenerator.build(src)
        mod = {"sd_text_encoder": lambda: SdTextEncoder(r.text_encoder), "unet": lambda: Unet(r.unet),
               "vae_decoder": lambda: VaeDecoder(r.vae), "vae_encoder": lambda: VaeEncoder(r.vae)}[name]()
    elif name in ("clip_image", "clip_text"):
        clip = Embedder.build(src).model
        mod = ClipImage(clip) if name == "clip_image" else ClipText(clip)
    elif name == "semgir_head":
        from . import configs

        key = "tiny" if src.size.value == "tiny" else "full"
        mod, _ = SemgirHead.build(src, configs.CLIP[key]["embed_dim"])
    else:
        from .. import registry

        raise UnknownNameError("component", name, registry.names())
    return mod.eval()


@torch.no_grad()
def run_torch(module: nn.Module, inputs: dict, spec) -> dict:
    """Run a component on numpy inputs (by spec order); numpy outputs by spec name."""
    import numpy as np

    args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in spec.input_names()]
    out = module(*args)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {n: o.detach().cpu().numpy() for n, o in zip(spec.output_names(), outs)}
