"""Component specs: the single source of truth for each model part (torch-free).

A :class:`ComponentSpec` names a component's tensors (with symbolic dynamic axes), its shape
profile (min / opt / max for every dynamic axis), its preprocessing and its validation
tolerances. Export, validation, benchmarks and the runtimes all read the same spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Mapping


class Precision(str, Enum):
    """Numeric precision of a component's graph or weights. ``bf16`` runs the fp32 graph with bf16
    compute (OpenVINO's inference precision hint, torch bf16 weights); ``int8`` is a post-training
    quantized graph (calibrated on a calibration set, see :mod:`semgir_engine.calibration`)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    @classmethod
    def parse(cls, value: "str | Precision") -> "Precision":
        """``Precision`` from a name; unknown names raise an error listing the valid ones."""
        try:
            return cls(value)
        except ValueError:
            from .errors import UnknownNameError

            raise UnknownNameError("precision", str(value), [p.value for p in cls]) from None


class ModelSize(str, Enum):
    """How a component's weights are obtained."""

    TINY = "tiny"  # tiny config, seeded random weights: tests
    RANDOM = "random"  # full-size architecture, random weights: timing and export parity
    REAL = "real"  # pretrained weights from disk (never downloaded)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64", ...
    shape: tuple[int | str, ...]  # ints are fixed, strings name a dynamic axis

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class ImagePreprocess:
    """How pixels become a model input. Travels with the weights (manifest) to every consumer."""

    size: int  # output side length (square)
    resize: str = "shortest"  # "shortest": resize short side to `size`; "pad": zero-pad to >= size
    crop: str = "center"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Tolerance:
    """Validation tolerances against the PyTorch fp32 reference."""

    fp32_atol: float = 1e-4
    fp32_rtol: float = 1e-3
    fp16_min_cosine: float = 0.999
    note: str = ""


@dataclass(frozen=True)
class PrecisionTier:
    """Acceptance gate of a reduced-precision graph against the fp32 one, per output: cosine
    similarity at least ``min_cosine``; max |diff| at most ``max_abs`` when set; for decision outputs
    (argmax of logits) at least ``min_agreement`` of the decisions equal."""

    precision: Precision
    min_cosine: float
    max_abs: float | None = None
    min_agreement: float | None = None
    note: str = ""


#: default tiers: bf16 keeps 8 mantissa bits (cosine ~0.999 on deep nets); int8 loses more
DEFAULT_TIERS = (
    PrecisionTier(Precision.FP16, 0.999),
    PrecisionTier(Precision.BF16, 0.99),
    PrecisionTier(Precision.INT8, 0.98),
)


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    group: str  # captioner | regenerator | embedder | head | patch
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: dynamic axis name -> (min, opt, max); the same names as in inputs/outputs
    profile: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    preprocess: ImagePreprocess | None = None
    tolerance: Tolerance = Tolerance()
    #: reduced-precision acceptance gates that override :data:`DEFAULT_TIERS` for this component
    #: (validation only: not part of :meth:`digest`, so adding tiers keeps exported graphs current)
    tiers: tuple[PrecisionTier, ...] = ()

    def tier(self, precision: "Precision | str") -> PrecisionTier:
        """The acceptance gate of ``precision`` against fp32 for this component."""
        p = Precision.parse(precision)
        for t in self.tiers + DEFAULT_TIERS:
            if t.precision is p:
                return t
        return PrecisionTier(p, 1.0 - 1e-6)

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def shapes(self, which: str = "opt", overrides: Mapping[str, int] | None = None) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes at the profile's ``min``, ``opt`` or ``max`` point."""
        idx = {"min": 0, "opt": 1, "max": 2}[which]
        dims = {k: v[idx] for k, v in self.profile.items()}
        dims.update(overrides or {})
        out = {}
        for t in self.inputs:
            out[t.name] = tuple(dims[d] if isinstance(d, str) else d for d in t.shape)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["profile"] = {k: list(v) for k, v in self.profile.items()}
        return d

    def digest(self) -> str:
        """Stable hash of everything in the spec (part of artifact cache keys)."""
        d = self.to_dict()
        d.pop("tiers", None)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
