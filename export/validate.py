"""Validate an exported ONNX graph against its PyTorch reference, in a fixed order:

1. output names, 2. dynamic axis names, 3. shapes, 4. values within the spec's tolerance
(fp32: ``atol``/``rtol``; fp16: cosine similarity, plus decision agreement for the head).

Each failure raises its own :class:`~.errors.ValidationError` subclass naming the component and
the worst difference. Validation runs at two profile points with different batch sizes, which
proves the batch axis is really dynamic.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..spec import ComponentSpec, Precision
from .errors import DynamicAxesMismatch, OutputNamesMismatch, ShapeMismatch, ValuesMismatch

#: components whose output is a decision: fp16 must also agree on the argmax
DECISION_COMPONENTS = ("semgir_head",)
#: profile points validated, in this order (their batch sizes differ for every registered spec)
VALIDATION_POINTS = ("opt", "min")


@dataclass(frozen=True)
class PointResult:
    point: str
    batch: int
    max_abs_diff: float
    cosine: float
    decision_agreement: float | None
    ort_seconds: float
    torch_seconds: float


@dataclass(frozen=True)
class ValidationReport:
    component: str
    precision: str
    points: tuple[PointResult, ...] = field(default_factory=tuple)

    @property
    def max_abs_diff(self) -> float:
        return max(p.max_abs_diff for p in self.points)

    @property
    def min_cosine(self) -> float:
        return min(p.cosine for p in self.points)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "max_abs_diff": self.max_abs_diff, "min_cosine": self.min_cosine,
                "points": [asdict(p) for p in self.points]}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def sample_inputs(spec: ComponentSpec, which: str = "opt", seed: int = 0) -> dict[str, np.ndarray]:
    """Registry sample inputs with token ids kept inside the component's vocabulary."""
    from .. import registry

    inputs = registry.sample_inputs(spec, which, seed)
    vocab = None
    for t in spec.outputs:
        if t.name == "logits" and isinstance(t.shape[-1], int) and len(t.shape) == 3:
            vocab = t.shape[-1]
    if vocab is not None:
        for t in spec.inputs:
            if t.dtype == "int64":
                inputs[t.name] = inputs[t.name] % (vocab - 10) + 10  # clear of the special tokens
    return inputs


def check_graph_axes(component: str, spec: ComponentSpec, onnx_path: str) -> None:
    """Steps 1 and 2 on the graph itself: output names and the declared dynamic axes."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    got = [o.name for o in model.graph.output]
    if got != spec.output_names():
        raise OutputNamesMismatch(component, f"graph outputs {got}, spec {spec.output_names()}")
    values = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    for t in spec.inputs + spec.outputs:
        if t.name not in values:
            raise OutputNamesMismatch(component, f"tensor {t.name!r} missing from the graph")
        dims = values[t.name].type.tensor_type.shape.dim
        declared = tuple(d.dim_param if d.dim_param else d.dim_value for d in dims)
        if len(declared) != len(t.shape):
            raise DynamicAxesMismatch(component, f"{t.name}: rank {len(declared)}, spec {t.shape}")
        for i, (g, want) in enumerate(zip(declared, t.shape)):
            if isinstance(want, str) and g != want:
                raise DynamicAxesMismatch(component, f"{t.name} axis {i}: graph {g!r}, spec {want!r}")
            if isinstance(want, int) and g != want:
                raise DynamicAxesMismatch(component, f"{t.name} axis {i}: graph {g!r}, spec fixed {want}")


def validate(component: str, spec: ComponentSpec, onnx_path: str, module, precision: Precision,
             seed: int = 0) -> ValidationReport:
    """Run every check; raises the first failing check's error, else returns the measured numbers."""
    import torch

    from ..runtime.ort import make_session
    from ..semgir.components import run_torch

    check_graph_axes(component, spec, onnx_path)
    sess = make_session(onnx_path, providers=["CPUExecutionProvider"])
    got_names = [o.name for o in sess.get_outputs()]
    if got_names != spec.output_names():
        raise OutputNamesMismatch(component, f"session outputs {got_names}, spec {spec.output_names()}")
    tol = spec.tolerance
    points = []
    for k, which in enumerate(VALIDATION_POINTS):
        inputs = sample_inputs(spec, which, seed + k)
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = run_torch(module, inputs, spec)
        t1 = time.perf_counter()
        feeds = {i.name: inputs[i.name] for i in sess.get_inputs()}
        outs = dict(zip(got_names, sess.run(None, feeds)))
        t2 = time.perf_counter()
        worst, cos_min, agree = 0.0, 1.0, None
        for name in spec.output_names():
            a, r = np.asarray(outs[name]), ref[name]
            if a.shape != r.shape:
                raise ShapeMismatch(component, f"{name} at {which}: onnx {a.shape}, torch {r.shape}")
            a = a.astype(np.float32)
            diff = float(np.max(np.abs(a - r))) if a.size else 0.0
            cos = cosine(a, r)
            worst, cos_min = max(worst, diff), min(cos_min, cos)
            if not np.isfinite(a).all():
                raise ValuesMismatch(component, f"{name} at {which}: non-finite values", float("inf"))
            if precision is Precision.FP32:
                if not np.allclose(a, r, atol=tol.fp32_atol, rtol=tol.fp32_rtol):
                    raise ValuesMismatch(component, f"{name} at {which}: max |diff| {diff:.3g} > atol "
                                                    f"{tol.fp32_atol:g} (rtol {tol.fp32_rtol:g})", diff)
            else:
                if cos < tol.fp16_min_cosine:
                    raise ValuesMismatch(component, f"{name} at {which}: cosine {cos:.6f} < "
                                                    f"{tol.fp16_min_cosine} (max |diff| {diff:.3g})", diff)
            if component in DECISION_COMPONENTS:
                agree = float(np.mean(a.argmax(-1) == r.argmax(-1)))
                if precision is Precision.FP16 and agree < 1.0:
                    raise ValuesMismatch(component, f"{name} at {which}: decisions agree on {agree:.1%} only", diff)
        batch = next(iter(inputs.values())).shape[0]
        points.append(PointResult(which, int(batch), worst, cos_min, agree, t2 - t1, t1 - t0))
    return ValidationReport(component, precision.value, tuple(points))
