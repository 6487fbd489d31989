"""What this installation has: versions, devices, weights, backends (torch-free unless torch is there)."""

from __future__ import annotations

import importlib.metadata as md
import platform

from . import __version__
from .deps import available


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def collect_info(models: str | None = None) -> dict[str, dict[str, str]]:
    from .semgir.sources import CLIP_FILES, ModelSource

    out: dict[str, dict[str, str]] = {
        "semgir-engine": {"version": __version__, "python": platform.python_version(),
                          "platform": platform.platform()},
        "libraries": {d: _version(d) for d in ("numpy", "pillow", "torch", "torchvision", "diffusers",
                                               "transformers", "open_clip_torch", "onnx", "onnxruntime",
                                               "onnxruntime-gpu", "tensorrt", "openvino", "nncf")},
    }
    devices = {"cpu": "yes"}
    if available("torch"):
        import torch

        devices["cuda"] = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
                           if torch.cuda.is_available() else "no")
        devices["torch_threads"] = str(torch.get_num_threads())
    if available("onnxruntime"):
        import onnxruntime as ort

        devices["onnxruntime_providers"] = ", ".join(ort.get_available_providers())
    if available("openvino"):
        from .runtime.openvino import cpu_capabilities

        devices["openvino_cpu"] = ", ".join(cpu_capabilities())  # BF16 / INT8: reduced precision runs natively
    out["devices"] = devices
    src = ModelSource.parse(models)
    weights = {}
    for part, marker in (("blip", ("config.json",)), ("sd", ("model_index.json",)), ("clip", CLIP_FILES),
                         ("head", ("semgir_head.pt",)), ("lcm-lora", ("pytorch_lora_weights.safetensors",))):
        found = src.find(part, marker, required=False) if src.size.value == "real" else None
        weights[part] = str(found) if found else "not found (looked in: " + "; ".join(
            str(c) for c in src.candidates(part)) + ")"
    try:
        from .patch.detector import PatchDetector

        det = PatchDetector.load(None)
        weights["patch (shipped)"] = det.version
    except Exception as exc:  # noqa: BLE001 - info reports, never fails
        weights["patch (shipped)"] = f"unavailable: {exc}"
    out["weights"] = weights
    out["backends"] = {"torch": "yes" if available("torch") else "no (pip install 'semgir-engine[torch]')",
                       "onnxruntime": "yes" if available("onnxruntime") else "no",
                       "tensorrt": "yes" if available("tensorrt") else "no",
                       "openvino": "yes" if available("openvino") else "no (pip install 'semgir-engine[openvino]')"}
    return out
