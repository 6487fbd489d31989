"""The SemGIR pipeline, written once for every backend (torch-free orchestration).

    decode -> caption (BLIP) -> regenerate (SD) -> embed both (CLIP) -> head -> p_ai
                                                   (+ SemGIR-A: combiner and one head per generator)

Each stage calls *component sessions* -- ``session(**named numpy inputs) -> {output name: array}``,
named and shaped by the registry spec -- that a backend's :class:`SessionProvider` hands out: torch
modules (:mod:`.torch_backend`), ONNX Runtime sessions (:mod:`..runtime.ort_semgir`) or TensorRT
engines (:mod:`..runtime.trt`). Everything else -- preprocessing (from the spec), tokenizers (files
the export carries), the caption decoding loop (:mod:`.decoding`), the scheduler loop, noise,
classifier-free guidance, softmax -- is here, once, so backends differ only in how a graph runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from ..errors import SemgirError
from ..preprocess import preprocess_batch
from ..spec import ImagePreprocess
from .decoding import DecoderSteps, GenerationSettings, generate

log = logging.getLogger(__name__)

Session = Callable[..., dict]

#: the registry components each stage calls
CAPTION_COMPONENTS = ("blip_vision", "blip_text_decoder_init", "blip_text_decoder_with_past")
REGEN_COMPONENTS = ("sd_text_encoder", "unet", "vae_decoder")
EMBED_COMPONENTS = ("clip_image", "clip_text")
HEAD_COMPONENTS = ("semgir_head",)


class SessionProvider(Protocol):
    """What a backend provides: sessions by registry component name, and the pipeline settings
    (the export manifest's ``pipeline`` section, whose relative file names live under ``asset_dir``)."""

    kind: str  # torch | onnxruntime | tensorrt | ...
    settings: dict
    asset_dir: Path
    random_weights: bool

    def session(self, name: str) -> Session: ...

    def has(self, name: str) -> bool: ...

    def describe(self) -> dict: ...


# ------------------------------------------------------------------------------------------
# run settings (shared by the Python API, the CLI and the service)
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegenConfig:
    steps: int = 4
    guidance_scale: float = 1.0
    scheduler: str = "auto"  # auto: lcm when LCM weights are loaded, else dpm++
    resolution: int | None = None  # None: the weights' native size (512 at full size, 32 tiny)

    @classmethod
    def paper_reference(cls) -> "RegenConfig":
        """The SemGIR paper's setting: 50 PNDM steps with classifier-free guidance 7.5 (SD v1.5's default)."""
        return cls(steps=50, guidance_scale=7.5, scheduler="pndm")


@dataclass(frozen=True)
class CaptionConfig:
    max_new_tokens: int | None = 20  # None: the weights' generation config (max_length)
    num_beams: int | None = 1  # None: the weights' generation config


def image_seed(seed: int, sha256: str | None) -> int:
    """Per-image noise seed: depends on the run's seed and the image's content, not on batching."""
    content = int(sha256[:12], 16) if sha256 else 0
    return (content + 1_000_003 * int(seed)) % (2**62)


_M64 = (1 << 64) - 1


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def initial_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Initial latents of one image, standard normal float32 (every backend, and the native runtime).

    Part of the export contract, defined here so that any language reproduces it bit for bit:
    ``key = splitmix64(seed mod 2**64)``; element ``i`` (C order) takes ``a = splitmix64(key ^ 2i)``,
    ``b = splitmix64(key ^ (2i + 1))``, ``u1 = ((a >> 11) + 1) / 2**53`` in (0, 1],
    ``u2 = (b >> 11) / 2**53`` in [0, 1), and is ``float32(sqrt(-2 ln u1) * cos(2 pi u2))``
    (Box-Muller in float64, rounded once to float32; native/src/semgir_model.cpp does the same).
    ``splitmix64(z)``: ``z += 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
    z = (z ^ z >> 27) * 0x94D049BB133111EB; return z ^ z >> 31`` (64-bit wrapping)."""
    n = int(np.prod(shape, dtype=np.int64))
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([int(seed) & _M64], np.uint64))[0]
        i2 = np.arange(n, dtype=np.uint64) * np.uint64(2)
        a = _splitmix64(key ^ i2)
        b = _splitmix64(key ^ (i2 + np.uint64(1)))
    scale = 1.0 / 9007199254740992.0  # 2**-53
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 1.0) * scale
    u2 = (b >> np.uint64(11)).astype(np.float64) * scale
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return z.astype(np.float32).reshape(shape)


def _pp(d: dict) -> ImagePreprocess:
    return ImagePreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _need(provider: SessionProvider, *parts: str) -> dict:
    missing = [p for p in parts if p not in provider.settings]
    if missing:
        raise SemgirError(f"{provider.kind} models lack the {', '.join(missing)} settings (an export needs the "
                          "components of every stage: `semgir-engine export --components all`)")
    return provider.settings


def _softmax_last(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


# ------------------------------------------------------------------------------------------
# stages
# ------------------------------------------------------------------------------------------
class CaptionStage:
    """BLIP: vision encoder, then greedy or beam decoding (:mod:`.decoding`), WordPiece to text."""

    def __init__(self, provider: SessionProvider, cfg: CaptionConfig = CaptionConfig()):
        from ..runtime.tokenizers import WordPieceDecoder

        s = _need(provider, "captioner")["captioner"]
        self.provider = provider
        self.preprocess = _pp(s["preprocess"])
        self.generation = GenerationSettings.from_config(
            s.get("generation", {}), s["bos_token_id"], s["eos_token_id"], s["pad_token_id"],
            cfg.max_new_tokens, cfg.num_beams)
        self.tokenizer = WordPieceDecoder(Path(provider.asset_dir) / s["vocab_file"], s["special_ids"])
        self.vision = provider.session("blip_vision")
        kv = provider.has("blip_text_decoder_init") and provider.has("blip_text_decoder_with_past")
        self.steps = (DecoderSteps(provider.session("blip_text_decoder_init"),
                                   provider.session("blip_text_decoder_with_past")) if kv
                      else DecoderSteps(full=provider.session("blip_text_decoder")))

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        return self.vision(pixel_values=preprocess_batch(images, self.preprocess))["image_embeds"]

    def token_ids(self, images: list[np.ndarray]) -> np.ndarray:
        return generate(self.steps, self.encode(images), self.generation)

    def __call__(self, images: list[np.ndarray]) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(self.token_ids(images))]

    def describe(self) -> dict:
        return {"weights": self.provider.describe(), "generation": self.generation.to_dict()}


class RegenerateStage:
    """SD v1.5: CLIP text encoder, the denoising loop (plain code below), VAE decoder."""

    def __init__(self, provider: SessionProvider, cfg: RegenConfig = RegenConfig()):
        from ..runtime.scheduler import SCHEDULERS, make_scheduler
        from ..runtime.tokenizers import ClipBpeTokenizer

        settings = _need(provider, "regenerator", "clip_tokenizer")
        s = settings["regenerator"]
        self.provider, self.cfg = provider, cfg
        self.has_lcm = bool(s.get("has_lcm"))
        name = cfg.scheduler if cfg.scheduler != "auto" else ("lcm" if self.has_lcm else "dpm++")
        if name not in SCHEDULERS:
            from ..errors import UnknownNameError

            raise UnknownNameError("scheduler", name, SCHEDULERS)
        if name == "lcm" and not self.has_lcm:
            log.warning("LCM scheduler without LCM-LoRA weights: few-step images will be poor (timing only)")
        self.scheduler_name = name
        self.scheduler_config = dict(s["scheduler_config"])
        make_scheduler(name, self.scheduler_config)  # fails now, not mid-run, when the scheduler cannot load
        self._make_scheduler = make_scheduler
        self.vae_scale, self.scaling_factor = int(s["vae_scale"]), float(s["vae_scaling_factor"])
        self.latent_channels = int(s["latent_channels"])
        self.resolution = int(cfg.resolution or s["resolution"])
        if self.resolution % (self.vae_scale * 4):
            raise SemgirError(f"resolution {self.resolution} must be a multiple of {self.vae_scale * 4}")
        ct = settings["clip_tokenizer"]
        self.tokenizer = ClipBpeTokenizer(Path(provider.asset_dir) / ct["bpe_file"], int(ct.get("context_length", 77)),
                                          pad_id=int(s.get("tokenizer_pad_id", 0)))
        self.text_encoder = provider.session("sd_text_encoder")
        self.unet = provider.session("unet")
        self.vae_decoder = provider.session("vae_decoder")

    def encode_text(self, captions: list[str]) -> np.ndarray:
        return self.text_encoder(input_ids=self.tokenizer(captions))["last_hidden_state"]

    def __call__(self, captions: list[str], seeds: list[int]) -> list[np.ndarray]:
        """One image per caption, (R, R, 3) uint8; ``seeds[i]`` fixes image i's noise (batch-invariant)."""
        n, g = len(captions), float(self.cfg.guidance_scale)
        cond = self.encode_text(captions)
        use_cfg = g > 1.0
        if use_cfg:  # classifier-free guidance: unconditional and conditional halves in one batch
            cond = np.concatenate([self.encode_text([""] * n), cond])
        lat = self.resolution // self.vae_scale
        latents = np.stack([initial_noise(s, (self.latent_channels, lat, lat)) for s in seeds])
        sched = self._make_scheduler(self.scheduler_name, self.scheduler_config)
        sched.set_timesteps(self.cfg.steps)
        latents = (latents * np.float32(sched.init_noise_sigma)).astype(np.float32)
        for i, t in enumerate(sched.timesteps):
            x = np.concatenate([latents] * 2) if use_cfg else latents
            x = sched.scale_model_input(x, i)
            ts = np.full((x.shape[0],), float(t), np.float32)
            eps = self.unet(sample=x, timestep=ts, encoder_hidden_states=cond)["noise_pred"]
            if use_cfg:
                e_uncond, e_text = np.split(eps, 2)
                eps = e_uncond + np.float32(g) * (e_text - e_uncond)
            latents = sched.step(eps, i, latents, seeds)
        images = self.vae_decoder(latent=latents / np.float32(self.scaling_factor))["image"]
        images = np.clip(images / 2 + 0.5, 0, 1)
        return list((images.transpose(0, 2, 3, 1) * 255.0).round().clip(0, 255).astype(np.uint8))

    def describe(self) -> dict:
        c = self.cfg
        return {"weights": self.provider.describe(), "scheduler": self.scheduler_name, "steps": int(c.steps),
                "guidance_scale": float(c.guidance_scale), "resolution": self.resolution}


class EmbedStage:
    """CLIP RN50x4: L2-normalised image embeddings (and caption embeddings for SemGIR-A)."""

    def __init__(self, provider: SessionProvider):
        settings = _need(provider, "embedder")
        self.provider = provider
        self.preprocess = _pp(settings["embedder"]["preprocess"])
        self.dim = int(settings["embedder"]["dim"])
        self.image = provider.session("clip_image")
        self._text = None

    def images(self, images: list[np.ndarray]) -> np.ndarray:
        return self.image(pixel_values=preprocess_batch(images, self.preprocess))["embedding"]

    def texts(self, texts: list[str]) -> np.ndarray:
        if self._text is None:
            from ..runtime.tokenizers import ClipBpeTokenizer

            ct = _need(self.provider, "clip_tokenizer")["clip_tokenizer"]
            self._tok = ClipBpeTokenizer(Path(self.provider.asset_dir) / ct["bpe_file"],
                                         int(ct.get("context_length", 77)), pad_id=0)  # open_clip pads with 0
            self._text = self.provider.session("clip_text")
        return self._text(input_ids=self._tok(texts))["embedding"]

    def describe(self) -> dict:
        return {"weights": self.provider.describe()}


def head_probability(head: Session, features: np.ndarray) -> np.ndarray:
    """P(class 1) from a two-logit head session (the detection head, or one generator's head)."""
    return _softmax_last(head(features=np.asarray(features, np.float32))["logits"])[:, 1]


# ------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------
class SemgirPipeline:
    """Every SemGIR stage over one provider's sessions. ``caption``, ``regenerate``, ``embed_images``,
    ``embed_texts`` and ``classify`` each take and return a whole batch; :func:`run_semgir` chains them."""

    def __init__(self, provider: SessionProvider, regen: RegenConfig | None = RegenConfig(),
                 caption: CaptionConfig = CaptionConfig(), head: bool = True):
        """``regen=None``: no regenerator (SemGIR-A brings one per generator); ``head=False``: features
        only (training a first head)."""
        self.provider = provider
        self.device = str(getattr(provider, "device", provider.kind))
        self.captioner = CaptionStage(provider, caption)
        self.regenerator = RegenerateStage(provider, regen) if regen is not None else None
        self.embedder = EmbedStage(provider)
        self.random_weights = bool(provider.random_weights)
        self.head, self.threshold, self.version = None, 0.5, "features"
        if head:
            meta = _need(provider, "head")["head"]
            self.head = provider.session("semgir_head")
            self.threshold = float(meta.get("threshold", 0.5))
            self.version = str(meta.get("version", "semgir-head"))
        if regen is not None:
            r = self.regenerator
            self.version += f"+{r.scheduler_name}{regen.steps}-g{float(regen.guidance_scale):g}-{r.resolution}px"

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def caption(self, images: list[np.ndarray]) -> list[str]:
        return self.captioner(images)

    def regenerate(self, captions: list[str], seeds: list[int]) -> list[np.ndarray]:
        if self.regenerator is None:
            raise SemgirError("this pipeline was built without a regenerator")
        return self.regenerator(captions, seeds)

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return self.embedder.images(images)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.embedder.texts(texts)

    def classify(self, features: np.ndarray) -> np.ndarray:
        if self.head is None:
            raise SemgirError("this pipeline was built without the detection head")
        return head_probability(self.head, features)


@dataclass
class StageTimer:
    """Wall-clock seconds per stage, summed over calls."""

    totals: dict[str, float] = field(default_factory=dict)

    def run(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - t0
        return out


@dataclass(frozen=True)
class SemgirOutput:
    p_ai: np.ndarray
    captions: list[str]
    regenerated: list[np.ndarray]
    timings_ms: dict[str, float]  # this batch's time per stage, per image


def run_semgir(stages: SemgirPipeline, images: list[np.ndarray], sha256s: Sequence[str | None], seed: int,
               timer: StageTimer | None = None) -> SemgirOutput:
    """Score one batch of decoded RGB uint8 images: the whole method in five lines."""
    timer = timer or StageTimer()
    before = dict(timer.totals)
    captions = timer.run("caption", stages.caption, images)
    regenerated = timer.run("regenerate", stages.regenerate, captions, [image_seed(seed, s) for s in sha256s])
    emb = timer.run("embed", stages.embed_images, list(images) + list(regenerated))
    n = len(images)
    p_ai = timer.run("head", stages.classify, np.concatenate([emb[:n], emb[n:]], axis=1))
    per_image = {k: 1000.0 * (v - before.get(k, 0.0)) / n for k, v in timer.totals.items()}
    return SemgirOutput(np.asarray(p_ai, np.float64), captions, regenerated, per_image)
