"""PyTorch reference components of SemGIR: captioner (BLIP), regenerator (SD v1.5 parts),
embedder (CLIP RN50x4) and the detection head. Each builds at ``tiny`` / ``random`` / real size.

Imports torch and the model libraries; import this module only on the PyTorch path.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SemgirError, WeightsNotFoundError
from ..spec import ImagePreprocess, ModelSize
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
    """BLIP image captioning, batched greedy or beam search."""

    def __init__(self, model, tokenizer, preprocess: ImagePreprocess, max_new_tokens: int = 20, num_beams: int = 1):
        self.model, self.tokenizer, self.preprocess = model.eval(), tokenizer, preprocess
        self.max_new_tokens, self.num_beams = max_new_tokens, num_beams

    @classmethod
    def build(cls, src: ModelSource, **kw) -> "Captioner":
        from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

        cfg = configs.BLIP[_key(src)]
        pp = ImagePreprocess(size=cfg["image_size"], resize="stretch", interpolation="bicubic",
                             mean=configs.CLIP_MEAN, std=configs.CLIP_STD)
        if src.size is ModelSize.REAL:
            path = src.find("blip", ("config.json",))
            model = BlipForConditionalGeneration.from_pretrained(path, local_files_only=True)
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            size = model.config.vision_config.image_size
            pp = ImagePreprocess(size=size, resize="stretch", interpolation="bicubic",
                                 mean=configs.CLIP_MEAN, std=configs.CLIP_STD)
            return cls(model, tok, pp, **kw)
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
        return cls(model, tok, pp, **kw)

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> list[str]:
        ids = self.model.generate(pixel_values=pixel_values, max_new_tokens=self.max_new_tokens,
                                  num_beams=self.num_beams, do_sample=False)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


# ------------------------------------------------------------------------------------------
# CLIP tokenizer (shared by the SD text encoder and the CLIP text tower)
# ------------------------------------------------------------------------------------------
class ClipTokenizer:
    """CLIP BPE tokenizer: from the SD weights folder when present, else open_clip's bundled vocab.

    ``pad_id``: SD v1.5's tokenizer pads with ``<|endoftext|>`` (49407); open_clip pads with 0.
    Without a tokenizer folder the padding follows ``pad_id``, so random and real SD agree.
    """

    EOT = 49407

    def __init__(self, hf_tokenizer=None, context_length: int = 77, pad_id: int = 0):
        self.hf, self.context_length = hf_tokenizer, context_length
        self.pad_id = int(hf_tokenizer.pad_token_id) if hf_tokenizer is not None else pad_id
        if hf_tokenizer is None:
            from open_clip.tokenizer import SimpleTokenizer

            self.simple = SimpleTokenizer(context_length=context_length)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self.hf is not None:
            return self.hf(texts, padding="max_length", max_length=self.context_length, truncation=True,
                           return_tensors="pt").input_ids
        ids = self.simple(texts, context_length=self.context_length)
        if self.pad_id:
            after_eot = (ids == self.EOT).int().cumsum(1) > 0
            ids = torch.where(after_eot & (ids == 0), torch.full_like(ids, self.pad_id), ids)
        return ids


# ------------------------------------------------------------------------------------------
# Stable Diffusion regenerator
# ------------------------------------------------------------------------------------------
SCHEDULERS = ("dpm++", "lcm", "ddim", "pndm", "euler")


@dataclass(frozen=True)
class RegenConfig:
    steps: int = 4
    guidance_scale: float = 1.0
    scheduler: str = "auto"  # auto: lcm when LCM weights are loaded, else dpm++
    resolution: int | None = None  # None: 512 at full size, 32 at tiny size

    @classmethod
    def paper_reference(cls) -> "RegenConfig":
        """The SemGIR paper's setting: 50 steps with classifier-free guidance 7.5 (PNDM, SD v1.5 default)."""
        return cls(steps=50, guidance_scale=7.5, scheduler="pndm")


def make_scheduler(name: str, base_config: dict):
    import diffusers

    cls = {"dpm++": diffusers.DPMSolverMultistepScheduler, "lcm": diffusers.LCMScheduler,
           "ddim": diffusers.DDIMScheduler, "pndm": diffusers.PNDMScheduler,
           "euler": diffusers.EulerDiscreteScheduler}[name]
    extra = {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False} if name == "dpm++" else {}
    return cls.from_config(base_config, **extra)


SD_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                           skip_prk_steps=True)


class Regenerator:
    """Caption -> image with SD v1.5 parts; the denoising loop is plain code in :meth:`__call__`."""

    def __init__(self, text_encoder, tokenizer: ClipTokenizer, unet, vae, scheduler_config: dict,
                 cfg: RegenConfig, default_resolution: int, has_lcm: bool = False):
        self.text_encoder, self.tokenizer, self.unet, self.vae = text_encoder.eval(), tokenizer, unet.eval(), vae.eval()
        self.scheduler_config, self.has_lcm = dict(scheduler_config), has_lcm
        sched = cfg.scheduler if cfg.scheduler != "auto" else ("lcm" if has_lcm else "dpm++")
        if sched not in SCHEDULERS:
            from ..errors import UnknownNameError

            raise UnknownNameError("scheduler", sched, SCHEDULERS)
        self.scheduler_name = sched
        if sched != "pndm":
            # few-step samplers start from the last training timestep ("trailing"), as diffusers
            # recommends; fixed here so that random, real and exported regenerators agree
            self.scheduler_config["timestep_spacing"] = "trailing"
        self.cfg = cfg
        self.resolution = cfg.resolution or default_resolution
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        if self.resolution % (self.vae_scale * 4):
            raise SemgirError(f"resolution {self.resolution} must be a multiple of {self.vae_scale * 4}")

    @classmethod
    def build(cls, src: ModelSource, cfg: RegenConfig = RegenConfig()) -> "Regenerator":
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        key = _key(src)
        if src.size is ModelSize.REAL:
            from diffusers import StableDiffusionPipeline

            root = src.find("sd", ("model_index.json",))
            pipe = StableDiffusionPipeline.from_pretrained(root, local_files_only=True, safety_checker=None,
                                                           requires_safety_checker=False)
            has_lcm = False
            lcm = src.find("lcm-lora", ("pytorch_lora_weights.safetensors",), required=False)
            if lcm is not None and cfg.scheduler in ("auto", "lcm"):
                pipe.load_lora_weights(str(lcm), local_files_only=True)
                pipe.fuse_lora()
                has_lcm = True
            elif cfg.scheduler == "lcm":
                raise WeightsNotFoundError("lcm-lora", [str(p) for p in src.candidates("lcm-lora")],
                                           "the LCM scheduler needs LCM-LoRA weights")
            sched_cfg = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
            # native resolution from the weights' own config (SD v1.5: 64 latents x 8 = 512 px)
            native = int(pipe.unet.config.sample_size) * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
            return cls(pipe.text_encoder, ClipTokenizer(pipe.tokenizer), pipe.unet, pipe.vae, sched_cfg, cfg,
                       native, has_lcm)
        _seeded(src, 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs.SD_TEXT[key]))
        _seeded(src, 3)
        unet = UNet2DConditionModel(**configs.SD_UNET[key])
        _seeded(src, 4)
        vae = AutoencoderKL(**configs.SD_VAE[key])
        if cfg.scheduler == "lcm":
            log.warning("LCM scheduler with random weights: timing only")
        return cls(text_encoder, ClipTokenizer(None, pad_id=ClipTokenizer.EOT), unet, vae, SD_SCHEDULER_CONFIG, cfg,
                   configs.SD_RESOLUTION[key])

    def new_scheduler(self):
        return make_scheduler(self.scheduler_name, self.scheduler_config)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(captions)
        return self.text_encoder(ids)[0]

    @torch.no_grad()
    def __call__(self, captions: list[str], seeds: list[int]) -> torch.Tensor:
        """Regenerate one image per caption; ``seeds[i]`` fixes image i's noise (batch-invariant).

        Returns float images (N, 3, R, R) in [0, 1].
        """
        n, g = len(captions), self.cfg.guidance_scale
        cond = self.encode_text(captions)
        use_cfg = g > 1.0
        if use_cfg:
            uncond = self.encode_text([""] * n)
            cond = torch.cat([uncond, cond])
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        lat = self.resolution // self.vae_scale
        shape = (self.unet.config.in_channels, lat, lat)
        # initial noise drawn torch-free (numpy), per image: the exported runtimes draw the same
        from ..runtime.scheduler import initial_noise

        latents = torch.from_numpy(np.stack([initial_noise(s, shape) for s in seeds]))
        sched = self.new_scheduler()
        sched.set_timesteps(self.cfg.steps)
        latents = latents * sched.init_noise_sigma
        for t in sched.timesteps:
            x = torch.cat([latents] * 2) if use_cfg else latents
            x = sched.scale_model_input(x, t)
            eps = self.unet(x, t, encoder_hidden_states=cond).sample
            if use_cfg:
                e_uncond, e_text = eps.chunk(2)
                eps = e_uncond + g * (e_text - e_uncond)
            step_kw = {"generator": gens} if self.scheduler_name == "lcm" else {}
            latents = sched.step(eps, t, latents, **step_kw).prev_sample
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return (images / 2 + 0.5).clamp(0, 1)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(N, 3, H, W) float in [0, 1] -> list of (H, W, 3) uint8, as a saved PNG would hold."""
    arr = (images.permute(0, 2, 3, 1).cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    return list(arr)


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
    """CLIP image and text encoders (open_clip); L2-normalised embeddings."""

    def __init__(self, model, preprocess: ImagePreprocess, tokenizer: ClipTokenizer, dim: int):
        self.model, self.preprocess, self.tokenizer, self.dim = model.eval(), preprocess, tokenizer, dim

    @classmethod
    def build(cls, src: ModelSource) -> "Embedder":
        import open_clip

        key = _key(src)
        cfg = configs.CLIP[key]
        pp = ImagePreprocess(size=cfg["image_size"], resize="shortest", interpolation="bicubic",
                             mean=configs.CLIP_MEAN, std=configs.CLIP_STD)
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
                image_size = model_cfg["vision_cfg"]["image_size"]
                pp = ImagePreprocess(size=image_size, resize="shortest", interpolation="bicubic",
                                     mean=configs.CLIP_MEAN, std=configs.CLIP_STD)
                return cls(model.eval(), pp, ClipTokenizer(None), dim)
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
        return cls(model, pp, ClipTokenizer(None), cfg["embed_dim"])

    @torch.no_grad()
    def images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model.encode_image(pixel_values), dim=-1)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return nn.functional.normalize(self.model.encode_text(self.tokenizer(texts)), dim=-1)


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
