"""Where a component's weights come from: ``tiny``, ``random`` or real weights on disk (torch-free).

Real weights are looked up, strictly offline, in this order:

1. a models directory given with ``--models DIR`` (or ``SEMGIR_MODELS``), laid out as::

       DIR/blip/          transformers BlipForConditionalGeneration + processor files
       DIR/sd/            diffusers StableDiffusionPipeline layout (unet/ vae/ text_encoder/ tokenizer/ scheduler/)
       DIR/lcm-lora/      optional LCM-LoRA weights (pytorch_lora_weights.safetensors)
       DIR/clip/          open_clip RN50x4 checkpoint (open_clip_pytorch_model.bin, *.safetensors or RN50x4.pt)
       DIR/head/          semgir_head.pt (+ .json manifest), written by `semgir-engine train semgir`

2. the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``), for the public repositories below.
   Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsNotFoundError
from ..spec import ModelSize

HF_REPOS = {
    "blip": ("Salesforce/blip-image-captioning-base",),
    "sd": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5"),
    "clip": ("timm/resnet50x4_clip.openai",),
    "lcm-lora": ("latent-consistency/lcm-lora-sdv1-5",),
}
CLIP_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors", "RN50x4.pt")


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def _hf_snapshot(repo: str) -> Path | None:
    """Newest snapshot folder of ``repo`` in the HF cache, without any network access."""
    base = hf_cache_dir() / ("models--" + repo.replace("/", "--"))
    ref = base / "refs" / "main"
    if ref.is_file():
        snap = base / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((base / "snapshots").glob("*")) if (base / "snapshots").is_dir() else []
    return snaps[-1] if snaps else None


@dataclass(frozen=True)
class ModelSource:
    """One choice for every component: ``tiny``, ``random``, or real weights (``root`` or HF cache)."""

    size: ModelSize
    root: Path | None = None
    seed: int = 0

    @classmethod
    def parse(cls, value: str | None, seed: int = 0) -> "ModelSource":
        if value in (None, "", "auto", "real"):
            env = os.environ.get("SEMGIR_MODELS")
            return cls(ModelSize.REAL, Path(env) if env else None, seed)
        if value in ("tiny", "random"):
            return cls(ModelSize(value), None, seed)
        return cls(ModelSize.REAL, Path(value).expanduser(), seed)

    @property
    def random_weights(self) -> bool:
        return self.size is not ModelSize.REAL

    def describe(self) -> str:
        if self.size is ModelSize.REAL:
            return f"real weights from {self.root}" if self.root else "real weights from the HF cache"
        return f"{self.size.value} (random weights)"

    # -- real-weight lookup -------------------------------------------------------------
    def candidates(self, part: str) -> list[Path]:
        out = []
        if self.root is not None:
            out.append(self.root / part)
        for repo in HF_REPOS.get(part, ()):
            snap = _hf_snapshot(repo)
            out.append(snap if snap is not None else hf_cache_dir() / ("models--" + repo.replace("/", "--")))
        return out

    def find(self, part: str, must_contain: tuple[str, ...] = (), required: bool = True) -> Path | None:
        """First candidate folder for ``part`` that holds one of ``must_contain`` (any file if empty)."""
        looked = []
        for cand in self.candidates(part):
            looked.append(str(cand))
            if not cand.is_dir():
                continue
            if not must_contain or any((cand / m).exists() for m in must_contain):
                return cand
        if required:
            raise WeightsNotFoundError(
                part,
                looked,
                "Weights are never downloaded: put them in a models directory (--models DIR or "
                "SEMGIR_MODELS) or the Hugging Face cache, or use --models tiny|random for tests and timing",
            )
        return None

    def available(self, part: str, must_contain: tuple[str, ...] = ()) -> bool:
        return self.find(part, must_contain, required=False) is not None


def weights_fingerprint(src) -> dict:
    """What the weights are: tiny/random (seed + torch version: random init depends on it) or real
    (the HF snapshot revision when the folder is one, else a fingerprint of file names, sizes, mtimes)."""
    if src.size is not ModelSize.REAL:
        import torch  # random init depends on the torch version

        return {"kind": src.size.value, "seed": src.seed, "fingerprint": f"{src.size.value}-seed{src.seed}-torch{torch.__version__}"}
    parts = {}
    for part in ("blip", "sd", "clip", "head", "lcm-lora"):
        folder = src.find(part, (), required=False)
        if folder is None:
            continue
        if folder.parent.name == "snapshots":
            parts[part] = f"revision:{folder.name}"
            continue
        h = hashlib.sha256()
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns};".encode())
        parts[part] = f"files:{h.hexdigest()[:16]}"
    blob = json.dumps(parts, sort_keys=True)
    return {"kind": "real", "root": str(src.root) if src.root else None, "parts": parts,
            "fingerprint": hashlib.sha256(blob.encode()).hexdigest()[:16]}
