"""Which backend runs which precision (torch-free): one table, one check, one default.

| backend      | fp32 | fp16            | bf16                         | int8                               |
|--------------|------|-----------------|------------------------------|------------------------------------|
| torch        | yes  | -               | - (bf16 weights: bench only) | -                                  |
| onnxruntime  | yes  | yes (GPU speed) | - (no bf16 CPU kernels)      | yes (QDQ static / dynamic graphs)  |
| openvino     | yes  | -               | yes (precision hint)         | yes (nncf IR; else bf16, logged)   |
| tensorrt     | yes  | yes             | -                            | yes (QDQ graph or calibrated)      |
"""

from __future__ import annotations

from .errors import SemgirError
from .spec import Precision

BACKEND_PRECISIONS: dict[str, tuple[Precision, ...]] = {
    "torch": (Precision.FP32,),
    "onnxruntime": (Precision.FP32, Precision.FP16, Precision.INT8),
    "openvino": (Precision.FP32, Precision.BF16, Precision.INT8),
    "tensorrt": (Precision.FP32, Precision.FP16, Precision.INT8),
}
#: what each backend runs when no precision is asked for
DEFAULT_PRECISION = {"torch": Precision.FP32, "onnxruntime": Precision.FP32, "openvino": Precision.FP32,
                     "tensorrt": Precision.FP16}


class PrecisionError(SemgirError):
    """A backend was asked for a precision it cannot run."""


def resolve_precision(backend: str, precision: str | Precision | None) -> Precision:
    """The precision ``backend`` runs for ``precision`` (None: its default); refused with the
    backends that can run it when this one cannot."""
    if precision is None:
        return DEFAULT_PRECISION.get(backend, Precision.FP32)
    p = Precision.parse(precision)
    ok = BACKEND_PRECISIONS.get(backend)
    if ok is not None and p not in ok:
        can = [b for b, ps in BACKEND_PRECISIONS.items() if p in ps]
        raise PrecisionError(f"backend {backend!r} cannot run {p.value} (it runs {', '.join(x.value for x in ok)}); "
                             f"{p.value} runs on: {', '.join(can)}")
    return p
