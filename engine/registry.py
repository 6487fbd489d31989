"""Registry of the exportable components and their specs (torch-free).

``specs(size)`` gives every component's :class:`ComponentSpec` at ``tiny`` or full size (random
and real weights share the full-size shapes); ``get(name, size)`` raises an error listing the
valid names; ``sample_inputs`` makes seeded numpy inputs that follow a spec.
"""

from __future__ import annotations

import numpy as np

from .errors import UnknownNameError
from .semgir import configs
from .spec import ComponentSpec, ImagePreprocess, TensorSpec, Tolerance

_B = "batch"


def _semgir_specs(size: str) -> list[ComponentSpec]:
    d = configs.dims(size)
    clip_pp = ImagePreprocess(size=d.clip_image, resize="shortest", mean=configs.CLIP_MEAN, std=configs.CLIP_STD)
    blip_pp = ImagePreprocess(size=d.blip_image, resize="stretch", mean=configs.CLIP_MEAN, std=configs.CLIP_STD)
    n_patches = (d.blip_image // (8 if size == "tiny" else 16)) ** 2 + 1
    lat = d.unet_sample
    text_cfg = configs.BLIP["tiny" if size == "tiny" else "full"]["text_config"]
    # defaults are transformers' BlipTextConfig (= blip-image-captioning-base): 12 layers, 8 heads, 768 wide
    kv_layers = text_cfg.get("num_hidden_layers", 12)
    kv_heads = text_cfg.get("num_attention_heads", 8)
    kv_dim = text_cfg.get("hidden_size", 768) // kv_heads
    logits_tol = Tolerance(fp32_atol=2e-4, note="logits over a 30k vocabulary")
    kv = (kv_layers, 2, _B, kv_heads)  # stacked (layers, key/value, batch, heads, ...) cache tensors
    # the decoder graphs that take a whole prefix (full recompute, and the first cached step)
    prefix_in = (TensorSpec("input_ids", "int64", (_B, "tokens")),
                 TensorSpec("encoder_hidden_states", "float32", (_B, n_patches, d.blip_hidden)))
    prefix_logits = TensorSpec("logits", "float32", (_B, "tokens", d.blip_vocab))
    prefix_profile = {_B: (1, 2, 16), "tokens": (1, 8, 40)}
    return [
        ComponentSpec(
            "blip_vision", "captioner", "BLIP ViT image encoder",
            inputs=(TensorSpec("pixel_values", "float32", (_B, 3, d.blip_image, d.blip_image)),),
            outputs=(TensorSpec("image_embeds", "float32", (_B, n_patches, d.blip_hidden)),),
            profile={_B: (1, 2, 16)}, preprocess=blip_pp),
        ComponentSpec(
            "blip_text_decoder", "captioner", "BLIP BERT text decoder (logits for every position)",
            inputs=prefix_in, outputs=(prefix_logits,), profile=prefix_profile, tolerance=logits_tol),
        ComponentSpec(
            "blip_text_decoder_init", "captioner",
            "BLIP text decoder, first step with a key/value cache: logits, the prefix's self-attention cache "
            "and the image tokens' cross-attention keys/values",
            inputs=prefix_in,
            outputs=(prefix_logits, TensorSpec("present", "float32", (*kv, "tokens", kv_dim)),
                     TensorSpec("cross_present", "float32", (*kv, n_patches, kv_dim))),
            profile=prefix_profile, tolerance=logits_tol),
        ComponentSpec(
            "blip_text_decoder_with_past", "captioner",
            "BLIP text decoder, later steps: one new token per row plus both caches -> logits and the grown "
            "self-attention cache",
            inputs=(TensorSpec("input_ids", "int64", (_B, 1)),
                    TensorSpec("past", "float32", (*kv, "past", kv_dim)),
                    TensorSpec("cross_past", "float32", (*kv, n_patches, kv_dim))),
            outputs=(TensorSpec("logits", "float32", (_B, 1, d.blip_vocab)),
                     TensorSpec("present", "float32", (*kv, "total", kv_dim))),
            profile={_B: (1, 2, 16), "past": (1, 8, 40)},
            tolerance=logits_tol),
        ComponentSpec(
            "sd_text_encoder", "regenerator", "SD v1.5 CLIP ViT-L/14 text encoder",
            inputs=(TensorSpec("input_ids", "int64", (_B, 77)),),
            outputs=(TensorSpec("last_hidden_state", "float32", (_B, 77, d.sd_hidden)),),
            profile={_B: (1, 2, 16)}),
        ComponentSpec(
            "unet", "regenerator", "SD v1.5 UNet (epsilon prediction)",
            inputs=(TensorSpec("sample", "float32", (_B, 4, "height", "width")),
                    TensorSpec("timestep", "float32", (_B,)),
                    TensorSpec("encoder_hidden_states", "float32", (_B, 77, d.sd_hidden))),
            outputs=(TensorSpec("noise_pred", "float32", (_B, 4, "height", "width")),),
            profile={_B: (1, 2, 32), "height": (lat // 2, lat, lat), "width": (lat // 2, lat, lat)},
            tolerance=Tolerance(fp32_atol=5e-4, note="deep network, many reductions")),
        ComponentSpec(
            "vae_decoder", "regenerator", "SD v1.5 VAE decoder (latents already divided by the scaling factor)",
            inputs=(TensorSpec("latent", "float32", (_B, 4, "height", "width")),),
            outputs=(TensorSpec("image", "float32", (_B, 3, "image_height", "image_width")),),
            profile={_B: (1, 2, 16), "height": (lat // 2, lat, lat), "width": (lat // 2, lat, lat)},
            tolerance=Tolerance(fp32_atol=5e-4)),
        ComponentSpec(
            "clip_image", "embedder", "CLIP RN50x4 image encoder (L2-normalised)",
            inputs=(TensorSpec("pixel_values", "float32", (_B, 3, d.clip_image, d.clip_image)),),
            outputs=(TensorSpec("embedding", "float32", (_B, d.clip_dim)),),
            profile={_B: (1, 8, 64)}, preprocess=clip_pp),
        ComponentSpec(
            "clip_text", "embedder", "CLIP RN50x4 text encoder (L2-normalised)",
            inputs=(TensorSpec("input_ids", "int64", (_B, 77)),),
            outputs=(TensorSpec("embedding", "float32", (_B, d.clip_dim)),),
            profile={_B: (1, 8, 64)}),
        ComponentSpec(
            "semgir_head", "head", "SemGIR MLP on [E(candidate) || E(regenerated)]",
            inputs=(TensorSpec("features", "float32", (_B, 2 * d.clip_dim)),),
            outputs=(TensorSpec("logits", "float32", (_B, 2)),),
            profile={_B: (1, 32, 256)}, tolerance=Tolerance(fp32_atol=1e-5)),
        ComponentSpec(
            "attribution_combiner", "head",
            "SemGIR-A combiner: gated fusion of the candidate's image and caption embeddings (L2-normalised); "
            "each generator's head is a semgir_head on [combined || E(regenerated by it)]",
            inputs=(TensorSpec("emb_image", "float32", (_B, d.clip_dim)),
                    TensorSpec("emb_text", "float32", (_B, d.clip_dim))),
            outputs=(TensorSpec("combined", "float32", (_B, d.clip_dim)),),
            profile={_B: (1, 32, 256)}, tolerance=Tolerance(fp32_atol=1e-5)),
    ]


def _patch_specs() -> list[ComponentSpec]:
    """The patch-shuffle CNN (identity patch order, uncalibrated logit). One size: the shipped model
    is small, so tiny, random and real all export the shipped weights."""
    side = 256
    return [ComponentSpec(
        "patch_cnn", "patch", "patch-shuffle detector: 16 patches of 64x64, shared CNN, linear -> logit",
        inputs=(TensorSpec("pixel_values", "float32", (_B, 3, side, side)),),
        outputs=(TensorSpec("logit", "float32", (_B,)),),
        profile={_B: (1, 8, 64)}, tolerance=Tolerance(fp32_atol=1e-4))]


#: the graphs the SemGIR pipeline runs on an exported backend (the captioner decodes with key/value caches)
PIPELINE_COMPONENTS = ("blip_vision", "blip_text_decoder_init", "blip_text_decoder_with_past", "sd_text_encoder",
                       "unet", "vae_decoder", "clip_image", "semgir_head")
#: what SemGIR-A adds: caption embeddings and the combiner (each generator brings its own regenerator graphs)
ATTRIBUTION_COMPONENTS = ("clip_text", "attribution_combiner")
#: the graphs of one generator's regeneration branch, plus that generator's head
GENERATOR_COMPONENTS = ("sd_text_encoder", "unet", "vae_decoder", "semgir_head")


def specs(size: str = "full") -> dict[str, ComponentSpec]:
    """Every registered component's spec at ``size`` ("tiny", or "full" for random and real)."""
    size = "tiny" if size == "tiny" else "full"
    return {s.name: s for s in _semgir_specs(size) + _patch_specs()}


def names() -> list[str]:
    return list(specs("tiny"))


def get(name: str, size: str = "full") -> ComponentSpec:
    all_specs = specs(size)
    if name not in all_specs:
        raise UnknownNameError("component", name, list(all_specs))
    return all_specs[name]


def sample_inputs(spec: ComponentSpec, which: str = "opt", seed: int = 0, **overrides: int) -> dict[str, np.ndarray]:
    """Seeded numpy inputs shaped by the spec's profile (ids in a safe range, timesteps in [0, 1000))."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in spec.inputs:
        shape = spec.shapes(which, overrides)[t.name]
        if t.dtype == "int64":
            a = rng.integers(1, 1000, size=shape, dtype=np.int64)
        elif t.name == "timestep":
            a = rng.uniform(0, 999, size=shape).astype(np.float32)
        else:
            a = rng.standard_normal(size=shape).astype(np.float32)
        out[t.name] = a
    return out
