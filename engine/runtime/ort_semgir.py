"""The SemGIR stages on ONNX Runtime, from an export directory (torch-free).

Implements :class:`semgir_engine.semgir.pipeline.SemgirStages` with onnxruntime, numpy, Pillow
and the ``tokenizers`` package only: BLIP vision + greedy decoding (caption), SD text encoder +
numpy DPM-Solver++ + UNet + VAE decoder (regenerate), CLIP image encoder (embed), head (classify).
Initial noise and per-image seeds follow the torch reference exactly (see
:func:`.scheduler.initial_noise`), so scores agree within the exported graphs' tolerance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import SemgirError
from ..preprocess import preprocess_batch
from ..spec import ImagePreprocess
from .ort import OrtRunner
from .scheduler import DpmSolverPP, initial_noise
from .tokenizers import ClipBpeTokenizer, WordPieceDecoder

log = logging.getLogger(__name__)

PIPELINE_COMPONENTS = ("blip_vision", "blip_text_decoder_init", "blip_text_decoder_with_past", "sd_text_encoder",
                       "unet", "vae_decoder", "clip_image", "semgir_head")
SUPPORTED_SCHEDULERS = ("dpm++",)


class ExportDirError(SemgirError):
    """The export directory is missing, incomplete, or its files do not match the manifest."""


def _preprocess(d: dict) -> ImagePreprocess:
    return ImagePreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def load_manifest(export_dir: str | Path) -> dict:
    p = Path(export_dir) / "manifest.json"
    if not p.is_file():
        raise ExportDirError(f"{export_dir} has no manifest.json: export it with `semgir-engine export --out {export_dir}`")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ExportDirError(f"{p} is not valid JSON: {exc}") from exc


def spec_current(name: str, entry: dict) -> bool:
    """True when a manifest entry was exported from the spec this engine registers (at either size)."""
    from .. import registry

    digest = entry.get("spec_digest")
    return digest is None or digest in {registry.get(name, size).digest() for size in ("tiny", "full")}


def component_entry(export_dir: str | Path, manifest: dict, name: str, precision: str = "fp32",
                    verify: bool = False) -> tuple[Path, dict]:
    """(path, manifest entry) of one exported graph: the requested precision, else the one exported
    (with a warning); refused when stale (older spec), missing, or (``verify``) not matching its sha256."""
    entries = manifest.get("components", {}).get(name)
    if not entries:
        raise ExportDirError(f"{export_dir} holds no {name!r} graph (has: {sorted(manifest.get('components', {}))}); "
                             f"export it with `semgir-engine export --components {name}`")
    entry = entries.get(precision)
    if entry is None:
        got, entry = next(iter(entries.items()))
        log.warning("%s: no %s graph of %s in %s; using the %s one", name, precision, name, export_dir, got)
    if not spec_current(name, entry):
        raise ExportDirError(f"{export_dir}: {name} was exported with another version of its spec (inputs/outputs "
                             f"changed since); re-export it with `semgir-engine export --components {name} --force`")
    path = Path(export_dir) / entry["file"]
    if not path.is_file():
        raise ExportDirError(f"{path} is listed in the manifest but missing")
    if verify:
        from ..hashing import sha256_file

        for f in entry.get("files", [{"file": entry["file"], "sha256": entry["sha256"]}]):
            if sha256_file(Path(export_dir) / f["file"]) != f["sha256"]:
                raise ExportDirError(f"{f['file']}: sha256 differs from the manifest (corrupt or replaced); re-export")
    return path, entry


def component_file(export_dir: str | Path, manifest: dict, name: str, precision: str = "fp32",
                   verify: bool = False) -> Path:
    """Path of one exported graph (see :func:`component_entry`)."""
    return component_entry(export_dir, manifest, name, precision, verify)[0]


class OrtCaptioner:
    """BLIP captioning on exported graphs: vision encoder, then greedy decoding with the key/value-cache
    graphs when exported (else full recompute of the prefix at every step)."""

    def __init__(self, export_dir: Path, manifest: dict, runner: Callable[[str], Callable], max_new_tokens: int = 20):
        cap = manifest.get("pipeline", {}).get("captioner")
        if not cap:
            raise ExportDirError(f"{export_dir}: manifest lacks the captioner settings; export blip_vision and "
                                 "the blip_text_decoder graphs")
        self.max_new_tokens = max_new_tokens
        self.bos, self.eos, self.pad = int(cap["bos_token_id"]), int(cap["eos_token_id"]), int(cap["pad_token_id"])
        self.generation = cap.get("generation", {}) or {}
        self.preprocess = _preprocess(cap["preprocess"])
        self.decoder = WordPieceDecoder(Path(export_dir) / cap["vocab_file"], cap["special_ids"])
        self.blip_vision = runner("blip_vision")
        comps = manifest.get("components", {})
        self.kv_cache = "blip_text_decoder_init" in comps and "blip_text_decoder_with_past" in comps
        if self.kv_cache:  # generation reuses the prefix's keys/values instead of recomputing them
            self.decoder_init, self.decoder_with_past = (runner("blip_text_decoder_init"),
                                                         runner("blip_text_decoder_with_past"))
        else:
            self.blip_decoder = runner("blip_text_decoder")

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        return self.blip_vision(pixel_values=preprocess_batch(images, self.preprocess))["image_embeds"]

    def __call__(self, images: list[np.ndarray]) -> list[str]:
        return self.decoder.batch_decode(self.greedy(self.encode(images)))

    def greedy(self, encoder_hidden_states: np.ndarray) -> np.ndarray:
        """Greedy decoding as ``generate(do_sample=False, num_beams=1)``: start at BOS, stop at EOS,
        finished rows continue with PAD. With the key/value-cache graphs each step feeds only the new
        token; otherwise the decoder re-runs on the whole prefix."""
        n = encoder_hidden_states.shape[0]
        ids = np.full((n, 1), self.bos, np.int64)
        done = np.zeros(n, bool)
        rep = float(self.generation.get("repetition_penalty") or 1.0)
        min_len = int(self.generation.get("min_length") or 0)
        past = cross = None
        for _ in range(self.max_new_tokens):
            if not self.kv_cache:
                out = self.blip_decoder(input_ids=ids, encoder_hidden_states=encoder_hidden_states)
            elif past is None:
                out = self.decoder_init(input_ids=ids, encoder_hidden_states=encoder_hidden_states)
            else:
                out = self.decoder_with_past(input_ids=ids[:, -1:], past=past, cross_past=cross)
            past = out.get("present")
            cross = out.get("cross_present", cross)
            logits = out["logits"][:, -1, :]
            logits = logits.astype(np.float32, copy=True)
            if rep != 1.0:
                for r in range(n):
                    seen = np.unique(ids[r])
                    s = logits[r, seen]
                    logits[r, seen] = np.where(s < 0, s * rep, s / rep)
            if ids.shape[1] < min_len:
                logits[:, self.eos] = -np.inf
            nxt = logits.argmax(-1).astype(np.int64)
            nxt = np.where(done, self.pad, nxt)
            ids = np.concatenate([ids, nxt[:, None]], 1)
            done |= nxt == self.eos
            if done.all():
                break
        return ids


class OrtSemgir:
    """Every SemGIR stage on ONNX Runtime; implements :class:`..semgir.pipeline.SemgirStages`."""

    def __init__(self, export_dir: str | Path, steps: int = 4, guidance_scale: float = 1.0, scheduler: str = "auto",
                 resolution: int | None = None, max_new_tokens: int = 20, num_beams: int = 1,
                 precision: str = "fp32", providers: Sequence[str] | None = None, device: str = "auto",
                 verify: bool = True, runner_factory: Callable[[str, Path], Callable] | None = None):
        self.dir = Path(export_dir)
        m = load_manifest(self.dir)
        pipe = m.get("pipeline", {})
        for need in ("captioner", "regenerator", "clip_tokenizer", "embedder", "head"):
            if need not in pipe:
                raise ExportDirError(f"{self.dir}: manifest lacks the {need!r} settings; export every pipeline "
                                     f"component: {', '.join(PIPELINE_COMPONENTS)}")
        if num_beams != 1:
            raise SemgirError("the onnxruntime backend decodes greedily; use --num-beams 1 (or the torch backend)")
        reg = pipe["regenerator"]
        sched = scheduler if scheduler != "auto" else ("lcm" if reg.get("has_lcm") else "dpm++")
        if sched not in SUPPORTED_SCHEDULERS:
            raise SemgirError(f"scheduler {sched!r} is not available on the onnxruntime backend "
                              f"(supported: {', '.join(SUPPORTED_SCHEDULERS)}); use the torch backend")
        self.steps, self.guidance_scale, self.scheduler_name = steps, float(guidance_scale), sched
        self.scheduler_config = reg["scheduler_config"]
        self.vae_scale, self.scaling_factor = int(reg["vae_scale"]), float(reg["vae_scaling_factor"])
        self.latent_channels = int(reg["latent_channels"])
        self.resolution = int(resolution or reg["resolution"])
        if self.resolution % (self.vae_scale * 4):
            raise SemgirError(f"resolution {self.resolution} must be a multiple of {self.vae_scale * 4}")
        self.clip_pp = _preprocess(pipe["embedder"]["preprocess"])
        ct = pipe["clip_tokenizer"]
        self.clip_tokenizer = ClipBpeTokenizer(self.dir / ct["bpe_file"], int(ct.get("context_length", 77)),
                                               pad_id=int(reg.get("tokenizer_pad_id", 0)))

        def runner(name):
            path = component_file(self.dir, m, name, precision, verify)
            if runner_factory is not None:  # e.g. TensorRT engines built from these graphs
                return runner_factory(name, path)
            return OrtRunner(path, providers, device)

        self.captioner = OrtCaptioner(self.dir, m, runner, max_new_tokens)
        self.text_encoder, self.unet, self.vae_decoder = runner("sd_text_encoder"), runner("unet"), runner("vae_decoder")
        self.clip_image, self.head = runner("clip_image"), runner("semgir_head")
        self.random_weights = pipe.get("source", {}).get("kind", "real") != "real"
        self.threshold = float(pipe["head"]["threshold"])
        self.version = (f"{pipe['head']['version']}+{sched}{steps}-g{self.guidance_scale:g}-{self.resolution}px")
        self.providers = self.unet.session.get_providers() if hasattr(self.unet, "session") else ["tensorrt"]

    # -- caption -------------------------------------------------------------------------------
    def caption(self, images: list[np.ndarray]) -> list[str]:
        return self.captioner(images)

    # -- regenerate ----------------------------------------------------------------------------
    def encode_text(self, captions: list[str]) -> np.ndarray:
        return self.text_encoder(input_ids=self.clip_tokenizer(captions))["last_hidden_state"]

    def regenerate(self, captions: list[str], seeds: list[int]) -> list[np.ndarray]:
        n, g = len(captions), self.guidance_scale
        cond = self.encode_text(captions)
        use_cfg = g > 1.0
        if use_cfg:
            cond = np.concatenate([self.encode_text([""] * n), cond])
        lat = self.resolution // self.vae_scale
        latents = np.stack([initial_noise(s, (self.latent_channels, lat, lat)) for s in seeds])
        sched = DpmSolverPP.from_config(self.scheduler_config)
        sched.set_timesteps(self.steps)
        latents = latents * np.float32(sched.init_noise_sigma)
        for t in sched.timesteps:
            x = np.concatenate([latents] * 2) if use_cfg else latents
            ts = np.full((x.shape[0],), float(t), np.float32)
            eps = self.unet(sample=x, timestep=ts, encoder_hidden_states=cond)["noise_pred"]
            if use_cfg:
                e_uncond, e_text = np.split(eps, 2)
                eps = e_uncond + g * (e_text - e_uncond)
            latents = sched.step(eps, latents)
        images = self.vae_decoder(latent=latents / np.float32(self.scaling_factor))["image"]
        images = np.clip(images / 2 + 0.5, 0, 1)
        arr = (images.transpose(0, 2, 3, 1) * 255.0).round().clip(0, 255).astype(np.uint8)
        return list(arr)

    # -- embed, classify -----------------------------------------------------------------------
    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return self.clip_image(pixel_values=preprocess_batch(images, self.clip_pp))["embedding"]

    def classify(self, features: np.ndarray) -> np.ndarray:
        logits = self.head(features=features.astype(np.float32))["logits"].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        return (p[:, 1] / p.sum(-1)).astype(np.float64)
