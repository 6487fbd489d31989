"""The patch-shuffle detector on ONNX Runtime (or TensorRT), from an export directory (torch-free).

The export holds ``patch_cnn`` (identity patch order, one uncalibrated logit per image) and, in
its manifest, the patch model's own manifest entries (preprocessing, temperature, threshold,
version, weights hash). Preprocessing, batching and calibration are shared with the torch
detector (:class:`..patch.detector.PatchRuntime`), so the backends differ only in the network.

Test-time K-shuffle averaging (``k_shuffles > 0``) draws torch permutations and stays on the
torch backend; the shipped model uses the identity order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import SemgirError
from ..patch.detector import MODEL_FORMAT, PatchRuntime
from .ort import OrtRunner
from ..spec import Precision
from .manifest import ExportDirError, component_entry, load_manifest
from .ort_semgir import ort_device

COMPONENT = "patch_cnn"


class OrtPatchDetector(PatchRuntime):
    """``predict`` / ``predict_logits`` like :class:`..patch.detector.PatchDetector`, on an exported graph."""

    def __init__(self, export_dir: str | Path, precision: Precision | str | None = None,
                 providers: Sequence[str] | None = None, device: str = "auto", verify: bool = True,
                 runner_factory: Callable[[str, Path], Callable] | None = None, backend: str = "onnxruntime"):
        self.dir = Path(export_dir)
        m = load_manifest(self.dir)
        meta = m.get("pipeline", {}).get("patch")
        if not meta:
            raise ExportDirError(f"{self.dir} holds no patch-shuffle model settings; export it with "
                                 f"`semgir-engine export --components {COMPONENT} --out {self.dir}`")
        if meta.get("format") != MODEL_FORMAT:
            raise ExportDirError(f"{self.dir}: patch settings of an unknown format {meta.get('format')!r}")
        super().__init__(meta)
        path, entry = component_entry(self.dir, m, COMPONENT, precision, verify)
        graph_sha = entry.get("source", {}).get("weights_sha256")
        if graph_sha != meta.get("weights_sha256"):
            raise ExportDirError(f"{self.dir}: the {COMPONENT} graph and the patch settings come from different "
                                 f"models (weights {str(graph_sha)[:12]} vs {str(meta.get('weights_sha256'))[:12]}); re-export "
                                 f"with `semgir-engine export --components {COMPONENT} --force`")
        self.precision = entry.get("precision", Precision(precision or Precision.FP32).value)
        dev, gpu = ort_device(device)
        self.runner = runner_factory(COMPONENT, path) if runner_factory else OrtRunner(path, providers, dev, gpu=gpu)
        self.backend = backend
        self.providers = self.runner.session.get_providers() if hasattr(self.runner, "session") else [backend]

    @property
    def version(self) -> str:
        base = str(self.manifest["version"])
        return base if self.precision == "fp32" else f"{base}+{self.precision}"

    def _logits(self, x: np.ndarray, k_shuffles: int) -> np.ndarray:
        if k_shuffles:
            raise SemgirError(f"test-time shuffle averaging (k_shuffles={k_shuffles}) runs on the torch backend "
                              "only; use --backend torch or a model with k_shuffles 0")
        return self.runner(pixel_values=x)["logit"].reshape(-1)
