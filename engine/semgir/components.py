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


def _stack(cache) -> torch.Tensor:
    """(layers, 2, batch, heads, tokens, head_dim) from one transformers DynamicCache."""
    return torch.stack([torch.stack([layer.keys, layer.values]) for layer in cache.layers])


def _cache_kw(decoder, cache) -> dict:
    """transformers 5 names the argument ``cache`` (``past_key_values`` is deprecated); 4.x knows only the latter."""
    import inspect

    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    return {name: cache}


def _out_cache(out):
    """The cache an output carries: ``cache`` in transformers 5 (reading ``past_key_values`` warns), else
    ``past_key_values``."""
    c = out.get("cache") if hasattr(out, "get") else None
    return c if c is not None else out.past_key_values


def _unstack(stacked: torch.Tensor, config):
    from transformers.cache_utils import DynamicCache

    return DynamicCache(ddp_cache_data=[(stacked[i, 0], stacked[i, 1]) for i in range(stacked.shape[0])],
                        config=config)


class BlipTextDecoderInit(nn.Module):
    """First decoding step with a key/value cache: logits, the prefix's self-attention cache and the
    cross-attention keys/values of the image tokens (computed once per image, reused at every step)."""

    def __init__(self, blip):
        super().__init__()
        self.decoder = blip.text_decoder

    def forward(self, input_ids, encoder_hidden_states):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cfg = self.decoder.config
        cache = EncoderDecoderCache(DynamicCache(config=cfg), DynamicCache(config=cfg))
        out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                           use_cache=True, **_cache_kw(self.decoder, cache))
        c = _out_cache(out)
        return out.logits, _stack(c.self_attention_cache), _stack(c.cross_attention_cache)


class BlipTextDecoderWithPast(nn.Module):
    """Later decoding steps: new token ids plus both caches (stacked as above) -> logits and the grown
    self-attention cache. The image enters only through the cached cross-attention keys/values, so a
    step costs a few token-sized matrix products instead of re-projecting every image token."""

    def __init__(self, blip):
        super().__init__()
        self.decoder = blip.text_decoder

    def forward(self, input_ids, past, cross_past):
        from transformers.cache_utils import EncoderDecoderCache

        cfg = self.decoder.config
        cache = EncoderDecoderCache(_unstack(past, cfg), _unstack(cross_past, cfg))
        for i in range(cross_past.shape[0]):
            cache.is_updated[i] = True  # cross keys/values are final: use them, never re-project
        # the decoder runs its cross-attention only when encoder states are given; with the cache marked
        # as updated they are never read, so a (batch, 1, hidden) stand-in carries the flag
        flag = cross_past[0, 0, :, :1, :1, :1].reshape(cross_past.shape[2], 1, 1).expand(-1, 1, cfg.hidden_size)
        out = self.decoder(input_ids=input_ids, encoder_hidden_states=flag, use_cache=True,
                           **_cache_kw(self.decoder, cache))
        return out.logits, _stack(_out_cache(out).self_attention_cache)


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


#: component name -> (bundle it comes from, wrapper taking that bundle's torch module)
_WRAPPERS = {
    "blip_vision": ("captioner", lambda b: BlipVision(b.model)),
    "blip_text_decoder": ("captioner", lambda b: BlipTextDecoder(b.model)),
    "blip_text_decoder_init": ("captioner", lambda b: BlipTextDecoderInit(b.model)),
    "blip_text_decoder_with_past": ("captioner", lambda b: BlipTextDecoderWithPast(b.model)),
    "sd_text_encoder": ("regenerator", lambda r: SdTextEncoder(r.text_encoder)),
    "unet": ("regenerator", lambda r: Unet(r.unet)),
    "vae_decoder": ("regenerator", lambda r: VaeDecoder(r.vae)),
    "clip_image": ("embedder", lambda e: ClipImage(e.model)),
    "clip_text": ("embedder", lambda e: ClipText(e.model)),
    "semgir_head": ("head", lambda h: h[0]),
    "attribution_combiner": ("attribution", lambda a: a.combiner),
    "patch_cnn": ("patch", lambda net: net),  # in eval mode its forward is the identity-order logit
}


class Bundles:
    """Builds each SemGIR bundle at most once per source and hands out the per-component modules
    (the full-size UNet takes a while to build; export and benchmarks ask for many components)."""

    def __init__(self, src: ModelSource, patch_model: str | None = None, head=None, attribution=None,
                 lcm: bool = True):
        """``head``: a (module, manifest) pair that replaces the source's detection head (SemGIR-A exports
        each generator's head as that generator's ``semgir_head``); ``attribution``: a trained
        :class:`.attribution.AttributionModel` (its combiner is the ``attribution_combiner`` component);
        ``lcm``: fuse LCM-LoRA weights when present."""
        self.src = src
        self.patch_model = patch_model  # a trained patch-shuffle model; None = the shipped one
        self.lcm = lcm
        self._cache: dict[str, object] = {}
        if head is not None:
            self._cache["head"] = head
        if attribution is not None:
            self._cache["attribution"] = attribution

    def _get(self, key: str, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def captioner(self):
        from .models import Captioner

        return self._get("captioner", lambda: Captioner.build(self.src))

    def regenerator(self):
        from .models import Regenerator

        return self._get("regenerator", lambda: Regenerator.build(self.src, lcm=self.lcm))

    def embedder(self):
        from .models import Embedder

        return self._get("embedder", lambda: Embedder.build(self.src))

    def head(self):
        from .models import SemgirHead

        return self._get("head", lambda: SemgirHead.build(self.src, self.embedder().dim))

    def attribution(self):
        """The SemGIR-A model given at construction; tiny/random sources get a seeded untrained one (the
        combiner then exports and validates like the other random components)."""
        if "attribution" not in self._cache:
            from ..errors import SemgirError
            from ..spec import ModelSize

            if self.src.size is ModelSize.REAL:
                raise SemgirError("the attribution_combiner component needs trained attribution heads "
                                  "(`semgir-engine export --attribute GENERATORS.json`)")
            from . import configs
            from .attribution import AttributionModel

            key = "tiny" if self.src.size is ModelSize.TINY else "full"
            torch.manual_seed(self.src.seed * 1000003 + 7)
            self._cache["attribution"] = AttributionModel(configs.CLIP[key]["embed_dim"], configs.HEAD[key]["hidden"],
                                                          ["generator"]).eval()
        return self._cache["attribution"]

    def patch_detector(self):
        """The patch-shuffle detector (shipped, or ``patch_model``; the same at every model size)."""
        from .. import registry
        from ..errors import SemgirError
        from ..patch.detector import PatchDetector

        def load():
            det = PatchDetector.load(self.patch_model)
            side = registry.get("patch_cnn").inputs[0].shape[-1]
            size = det.model.cfg.preprocess.size
            if size != side:
                raise SemgirError(f"patch model {det.version} takes {size} px images, but the patch_cnn component "
                                  f"is {side} px; it cannot be exported")
            return det

        return self._get("patch", load)

    def patch(self):
        return self.patch_detector().model

    def module(self, name: str) -> nn.Module:
        if name not in _WRAPPERS:
            from .. import registry

            raise UnknownNameError("component", name, registry.names())
        bundle, wrap = _WRAPPERS[name]
        return wrap(getattr(self, bundle)()).eval()


def build_component(name: str, src: ModelSource) -> nn.Module:
    """The torch module of one registered component, in eval mode."""
    return Bundles(src).module(name)


@torch.no_grad()
def run_torch(module: nn.Module, inputs: dict, spec, device: torch.device | str = "cpu") -> dict:
    """Run a component on numpy inputs (by spec order); numpy outputs by spec name."""
    import numpy as np

    args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(device) for n in spec.input_names()]
    out = module(*args)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {n: o.detach().float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy()
            for n, o in zip(spec.output_names(), outs)}


# ------------------------------------------------------------------------------------------
# pipeline settings: what a runtime needs besides the graphs (written into export manifests)
# ------------------------------------------------------------------------------------------
#: the patch-shuffle manifest entries a runtime needs beside the graph (no weights: the graph holds them)
PATCH_RUNTIME_KEYS = ("format", "format_version", "version", "weights_sha256", "config", "preprocessing", "threshold",
                      "temperature", "test_time", "architecture", "calibration", "decision")
CAPTIONER_GRAPHS = {"blip_vision", "blip_text_decoder", "blip_text_decoder_init", "blip_text_decoder_with_past"}


def _generation_config(gen) -> dict:
    """The BLIP generation config's decoding settings (:class:`.decoding.GenerationSettings` reads them)."""
    from .decoding import _UNSUPPORTED_OFF, GenerationSettings

    keys = {f for f in GenerationSettings.__dataclass_fields__} | set(_UNSUPPORTED_OFF) | {"min_new_tokens",
                                                                                            "max_new_tokens"}
    return {k: getattr(gen, k, None) for k in sorted(keys) if not k.endswith("token_id")}


def pipeline_settings(names, bundles: Bundles, out_dir) -> dict:
    """Tokenizer files (written under ``out_dir``) and pipeline settings for the components in ``names``:
    the manifest's ``pipeline`` section, which :class:`.pipeline.SemgirPipeline` reads on every backend."""
    import shutil
    from pathlib import Path

    from .. import registry
    from ..spec import ModelSize
    from .sources import weights_fingerprint

    out = Path(out_dir)
    tok_dir = out / "tokenizers"
    tok_dir.mkdir(parents=True, exist_ok=True)
    names = set(names)
    size = "tiny" if bundles.src.size is ModelSize.TINY else "full"
    pipe: dict = {"size": size, "source": weights_fingerprint(bundles.src)}
    if names & CAPTIONER_GRAPHS:
        cap = bundles.captioner()
        tok = cap.tokenizer
        vocab = tok.get_vocab()
        inv = [None] * (max(vocab.values()) + 1)
        for t, i in vocab.items():
            inv[i] = t
        inv = [t if t is not None else f"[unused_{i}]" for i, t in enumerate(inv)]
        (tok_dir / "blip_vocab.txt").write_text("\n".join(inv) + "\n", encoding="utf-8")
        cfg = cap.model.config.text_config
        pipe["captioner"] = {
            "vocab_file": "tokenizers/blip_vocab.txt",
            "bos_token_id": int(cfg.bos_token_id),  # BlipForConditionalGeneration.generate starts from it
            "eos_token_id": int(cfg.sep_token_id),
            "pad_token_id": int(cfg.pad_token_id),
            "special_ids": sorted(int(i) for i in tok.all_special_ids),
            "do_lower_case": bool(getattr(tok, "do_lower_case", True)),
            # resize, crop, mean and std from the spec; the side from the weights (a real folder may hold another size)
            "preprocess": dict(registry.get("blip_vision", size).to_dict()["preprocess"],
                               size=int(cap.model.config.vision_config.image_size)),
            "generation": _generation_config(cap.model.generation_config),
        }
    if names & {"sd_text_encoder", "unet", "vae_decoder", "clip_text"}:
        import open_clip.tokenizer as oct

        gz = Path(oct.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
        if not (tok_dir / gz.name).is_file():
            shutil.copyfile(gz, tok_dir / gz.name)
        pipe["clip_tokenizer"] = {"bpe_file": f"tokenizers/{gz.name}", "context_length": 77}
    if names & {"sd_text_encoder", "unet", "vae_decoder"}:
        r = bundles.regenerator()
        pipe["regenerator"] = {
            "scheduler_config": {k: v for k, v in r.scheduler_config.items() if not str(k).startswith("_")},
            "has_lcm": r.has_lcm,
            "resolution": r.resolution,
            "vae_scale": r.vae_scale,
            "vae_scaling_factor": float(r.vae.config.scaling_factor),
            "latent_channels": int(r.unet.config.in_channels),
            "tokenizer_pad_id": r.tokenizer_pad_id,
        }
    if names & {"clip_image", "clip_text"}:
        e = bundles.embedder()
        pipe["embedder"] = {"dim": e.dim, "preprocess": dict(registry.get("clip_image", size).to_dict()["preprocess"],
                                                             size=e.image_size)}
    if "patch_cnn" in names:
        # the runtime needs the model's own manifest (preprocessing, temperature, threshold), never its weights
        det = bundles.patch_detector()
        pipe["patch"] = {k: det.manifest[k] for k in PATCH_RUNTIME_KEYS if k in det.manifest}
    if "semgir_head" in names:
        _, head_manifest = bundles.head()
        pipe["head"] = {"threshold": float(head_manifest.get("threshold", 0.5)),
                        "version": str(head_manifest.get("version", "semgir-head"))}
    return pipe
