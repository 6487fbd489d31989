"""PyTorch reference components of SemGIR: captioner (BLIP), regenerator (SD v1.5 parts),
embedder (CLIP RN50x4) and the detection head. Each builds at ``tiny`` / ``random`` / real size.

Imports torch and the model libraries; import this module only on the PyTorch path.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..spec import ModelSize
from . import configs
from .sources import CLIP_FILES, ModelSource

log = logging.getLogger(__name__)

# Every real-weight load goes through these; they never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")


def _key(src: ModelSource) -> str:
    return "tiny" if src.size is ModelSize.TINY else "full"


def _seeded(src: ModelSource, salt: int) -> None:
    torch.manual_seed(src.seed * 1000003 + salt)


# ------------------------------------------------------------------------------------------
# BLIP captioner
# ------------------------------------------------------------------------------------------
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "gu", "he", "ji", "bo", "fe"]
_WORDS = ("a photo of the an in on with and at picture image man woman dog cat tree sky street house "
          "car water field people person room table white black red blue green small large old young "
          "sitting standing next to near front close up view two three some city beach snow grass road").split()


def build_blip_vocab(spec: dict) -> list[str]:
    """A BERT-style WordPiece vocabulary made locally (for tiny and random BLIP only).

    Special tokens sit at the ids the config expects; the rest are real words, then word
    pieces, then made-up syllable words, so that decoded captions are text a tokenizer can take.
    """
    size = spec["size"]
    vocab: list[str | None] = [None] * size
    for name, tok in (("pad", "[PAD]"), ("unk", "[UNK]"), ("cls", "[CLS]"), ("sep", "[SEP]"),
                      ("mask", "[MASK]"), ("dec", "[DEC]")):
        vocab[spec[name]] = tok
    fillers = list(_WORDS) + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    n = len(_SYLLABLES)
    i = 0
    while len(fillers) < size:
        fillers.append(_SYLLABLES[i % n] + _SYLLABLES[(i // n) % n] + _SYLLABLES[(i // n // n) % n] + str(i // n ** 3 or ""))
        i += 1
    it = iter(fillers)
    return [tok if tok is not None else next(it) for tok in vocab]


class Captioner:
    """BLIP captioning weights: the transformers model and its tokenizer (decoding: :mod:`.decoding`)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer

    @classmethod
    def build(cls, src: ModelSource) -> "Captioner":
        from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

        cfg = configs.BLIP[_key(src)]
        if src.size is ModelSize.REAL:
            path = src.find("blip", ("config.json",))
            model = BlipForConditionalGeneration.from_pretrained(path, local_files_only=True)
            from transformers import AutoTokenizer

            return cls(model, AutoTokenizer.from_pretrained(path, local_files_only=True))
        v = cfg["vocab"]
        text_cfg = dict(cfg["text_config"], vocab_size=v["size"], pad_token_id=v["pad"], bos_token_id=v["dec"],
                        sep_token_id=v["sep"], eos_token_id=v["sep"])
        config = BlipConfig(text_config=text_cfg, vision_config=dict(cfg["vision_config"]))
        _seeded(src, 1)
        model = BlipForConditionalGeneration(config)
        with tempfile.TemporaryDirectory() as tmp:
            vocab_file = Path(tmp) / "vocab.txt"
            vocab_file.write_text("\n".join(build_blip_vocab(v)) + "\n")
            tok = BertTokenizer(str(vocab_file), do_lower_case=True)
        tok.add_special_tokens({"bos_token": "[DEC]"})
        return cls(model, tok)


# ------------------------------------------------------------------------------------------
# Stable Diffusion regenerator
# ------------------------------------------------------------------------------------------
#: CLIP's end-of-text id: SD v1.5's tokenizer pads with it (open_clip pads with 0)
EOT = 49407
SD_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                           skip_prk_steps=True)


class Regenerator:
    """SD v1.5 weights: text encoder, UNet, VAE and the scheduler config (the loop: :mod:`.pipeline`)."""

    def __init__(self, text_encoder, unet, vae, scheduler_config: dict, native_resolution: int,
                 has_lcm: bool = False, tokenizer_pad_id: int = EOT):
        self.text_encoder, self.unet, self.vae = text_encoder.eval(), unet.eval(), vae.eval()
        self.scheduler_config, self.has_lcm = dict(scheduler_config), has_lcm
        self.resolution, self.tokenizer_pad_id = int(native_resolution), int(tokenizer_pad_id)
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def build(cls, src: ModelSource, lcm: bool = True) -> "Regenerator":
        """``lcm``: fuse LCM-LoRA weights when they are on disk (real weights only)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        key = _key(src)
        if src.size is ModelSize.REAL:
            from diffusers import StableDiffusionPipeline

            root = src.find("sd", ("model_index.json",))
            pipe = StableDiffusionPipeline.from_pretrained(root, local_files_only=True, safety_checker=None,
                                                           requires_safety_checker=False)
            has_lcm = False
            lcm_dir = src.find("lcm-lora", ("pytorch_lora_weights.safetensors",), required=False) if lcm else None
            if lcm_dir is not None:
                pipe.load_lora_weights(str(lcm_dir), local_files_only=True)
                pipe.fuse_lora()
                has_lcm = True
            sched_cfg = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
            # native resolution from the weights' own config (SD v1.5: 64 latents x 8 = 512 px)
            native = int(pipe.unet.config.sample_size) * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
            return cls(pipe.text_encoder, pipe.unet, pipe.vae, sched_cfg, native, has_lcm,
                       int(pipe.tokenizer.pad_token_id))
        _seeded(src, 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs.SD_TEXT[key]))
        _seeded(src, 3)
        unet = UNet2DConditionModel(**configs.SD_UNET[key])
        _seeded(src, 4)
        vae = AutoencoderKL(**configs.SD_VAE[key])
        return cls(text_encoder, unet, vae, SD_SCHEDULER_CONFIG, configs.SD_RESOLUTION[key])


# ------------------------------------------------------------------------------------------
# CLIP RN50x4 embedder
# ------------------------------------------------------------------------------------------
def _fix_random_resnet(model: nn.Module, image_size: int, seed: int) -> None:
    """Make a randomly initialised CLIP ResNet depend on its input.

    open_clip zero-initialises every ``bn3.weight`` (each residual branch then adds nothing), and
    untrained BatchNorm running statistics leave activations unnormalised, so that random
    embeddings of different images have cosine ~0.9999. We give bn3 non-zero weights and set the
    running statistics from one forward pass over seeded smooth noise (data-free BN calibration).
    """
    g = torch.Generator().manual_seed(seed)
    visual = model.visual
    bns = [m for m in visual.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, mod in visual.named_modules():
            if name.endswith("bn3") and isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(0.5 + 0.5 * torch.rand(mod.weight.shape, generator=g))
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
        x = torch.randn(4, 3, image_size, image_size, generator=g)
        x = nn.functional.avg_pool2d(x, 5, 1, 2) * 3.0
        visual.train()
        visual(x)
        visual.eval()
        for m in bns:
            m.momentum = 0.1


class Embedder:
    """CLIP RN50x4 weights (open_clip); the registry's clip_image / clip_text wrappers L2-normalise."""

    def __init__(self, model, dim: int, image_size: int):
        self.model, self.dim, self.image_size = model.eval(), dim, int(image_size)

    @classmethod
    def build(cls, src: ModelSource) -> "Embedder":
        import open_clip

        key = _key(src)
        cfg = configs.CLIP[key]
        if src.size is ModelSize.REAL:
            folder = src.find("clip", CLIP_FILES)
            ckpt = next(folder / f for f in CLIP_FILES if (folder / f).exists())
            cfg_file = folder / "open_clip_config.json"
            if cfg_file.is_file():  # HF-hub layout: the architecture travels with the weights
                import json

                from open_clip.model import CLIP as OpenClipModel

                model_cfg = json.loads(cfg_file.read_text())["model_cfg"]
                model = OpenClipModel(**model_cfg)
                if ckpt.suffix == ".safetensors":
                    from safetensors.torch import load_file

                    state = load_file(str(ckpt))
                else:
                    state = torch.load(ckpt, map_location="cpu", weights_only=True)
                model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
                dim = int(model_cfg["embed_dim"])
                return cls(model.eval(), dim, model_cfg["vision_cfg"]["image_size"])
            # a bare OpenAI checkpoint: the released RN50x4 uses QuickGELU
            model = open_clip.create_model(cfg["open_clip_name"], pretrained=str(ckpt))
        elif key == "full":
            _seeded(src, 5)
            model = open_clip.create_model(cfg["open_clip_name"], pretrained=None)
            _fix_random_resnet(model, cfg["image_size"], src.seed + 5)
        else:
            from open_clip.model import CLIP as OpenClipModel, CLIPTextCfg, CLIPVisionCfg

            _seeded(src, 5)
            model = OpenClipModel(cfg["embed_dim"], CLIPVisionCfg(**cfg["vision_cfg"]), CLIPTextCfg(**cfg["text_cfg"]))
            _fix_random_resnet(model, cfg["image_size"], src.seed + 5)
        return cls(model, cfg["embed_dim"], cfg["image_size"])


# ------------------------------------------------------------------------------------------
# Detection head
# ------------------------------------------------------------------------------------------
class SemgirHead(nn.Module):
    """MLP on [E(candidate) || E(regenerated)]: 2d -> hidden -> ReLU -> 2 (class 1 = AI)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    @classmethod
    def build(cls, src: ModelSource, dim: int) -> tuple["SemgirHead", dict]:
        """Returns the head and its manifest (threshold, version, ...)."""
        hidden = configs.HEAD[_key(src)]["hidden"]
        if src.size is ModelSize.REAL:
            folder = src.find("head", ("semgir_head.pt",))
            state = torch.load(folder / "semgir_head.pt", map_location="cpu", weights_only=True)
            manifest = state.get("manifest", {})
            head = cls(dim, int(manifest.get("hidden", hidden)))
            head.load_state_dict(state["state_dict"])
            return head.eval(), manifest
        _seeded(src, 6)
        return cls(dim, hidden).eval(), {"version": f"semgir-head-{src.size.value}-seed{src.seed}", "threshold": 0.5}
