"""Typed export and validation errors (each validation check has its own type)."""

from __future__ import annotations

from ..errors import SemgirError


class ExportError(SemgirError):
    """Exporting a component failed (tracing, ONNX conversion, checker)."""


class ExportExistsError(ExportError):
    """The output already holds this component; pass ``force=True`` (``--force``) to replace it."""


class ValidationError(ExportError):
    """An exported graph disagrees with its PyTorch reference. Names the component and the worst difference."""

    check = "validation"

    def __init__(self, component: str, detail: str, worst: float | None = None):
        self.component, self.detail, self.worst = component, detail, worst
        super().__init__(f"{component}: {self.check} check failed: {detail}")


class OutputNamesMismatch(ValidationError):
    check = "output names"


class DynamicAxesMismatch(ValidationError):
    check = "dynamic axes"


class ShapeMismatch(ValidationError):
    check = "shapes"


class ValuesMismatch(ValidationError):
    check = "values"
