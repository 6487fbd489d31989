"""OpenVINO backend (torch-free): the exported ONNX graphs compiled for the CPU by OpenVINO.

- fp32: the fp32 ONNX graph, ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO would otherwise pick bf16
  by itself on CPUs with bf16 units).
- bf16: the same fp32 graph with ``INFERENCE_PRECISION_HINT=bf16``: OpenVINO computes in bf16
  where the CPU has bf16 instructions (AVX512_BF16, AMX), keeping sensitive ops in fp32.
- int8: the component's nncf-quantized OpenVINO IR (``<component>.int8.openvino.xml``, written by
  ``semgir-engine quantize``), recorded in the export manifest beside the ONNX Runtime INT8 graph.
  A component whose INT8 graph was rejected at validation (or never quantized) runs its fp32
  graph at bf16 instead: the manifest says which, and the runner logs it.

:class:`OvRunner` has :class:`.ort.OrtRunner`'s call interface (``runner(**numpy inputs) -> dict
of numpy outputs``); :func:`ov_factory` is the ``runner_factory`` of the export's session provider
(:class:`.ort_semgir.ExportSessions`, :class:`.ort_patch.OrtPatchDetector`), so SemGIR and the patch
detector run the one pipeline on OpenVINO (``Scorer(backend="openvino", precision=...)``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..deps import require
from ..errors import SemgirError
from ..spec import Precision

log = logging.getLogger(__name__)

#: the precisions this backend runs (fp16 is a GPU format: the CPU plugin would upcast it)
PRECISIONS = (Precision.FP32, Precision.BF16, Precision.INT8)
_HINT = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.INT8: "f32"}


def _ov():
    return require("openvino", "the OpenVINO backend")


_CORE = None


def core():
    """One shared ``openvino.Core`` (it owns the CPU plugin and its thread pool)."""
    global _CORE
    if _CORE is None:
        _CORE = _ov().Core()
    return _CORE


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def cpu_capabilities() -> list[str]:
    """The CPU plugin's optimisation capabilities (``FP32``, ``BF16``, ``INT8``, ...)."""
    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def compile_config(precision: Precision | str, threads: int | None = None) -> dict:
    """Compile properties: one stream tuned for latency, spin-free, the precision hint."""
    p = Precision.parse(precision)
    if p not in PRECISIONS:
        raise SemgirError(f"the openvino backend runs {', '.join(x.value for x in PRECISIONS)}, not {p.value} "
                          "(fp16 graphs are for GPUs)")
    cfg = {"INFERENCE_PRECISION_HINT": _HINT[p], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    threads = threads or int(os.environ.get("SEMGIR_OV_THREADS", "0") or 0)
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = str(int(threads))
    return cfg


class OvRunner:
    """One graph (ONNX file or OpenVINO IR ``.xml``) compiled for the CPU: numpy in, numpy out."""

    def __init__(self, path: str | os.PathLike, precision: Precision | str = Precision.FP32,
                 threads: int | None = None, device: str = "CPU"):
        self.path = os.fspath(path)
        self.precision = Precision.parse(precision)
        if not Path(self.path).is_file():
            raise SemgirError(f"{self.path}: no such graph")
        model = core().read_model(self.path)
        self.config = compile_config(self.precision, threads)
        self.compiled = core().compile_model(model, device, self.config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self._dtypes = {i.get_any_name(): np.dtype(i.get_element_type().to_dtype()) for i in self.compiled.inputs}
        self.providers = [f"openvino-{device.lower()}-{self.precision.value}"]

    @property
    def execution_precision(self) -> str:
        """What the plugin actually chose (``f32`` / ``bf16``)."""
        return str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.input_names:
            if name not in arrays:
                raise KeyError(f"graph input {name!r} has no value (given: {sorted(arrays)})")
            feeds[name] = np.ascontiguousarray(np.asarray(arrays[name]).astype(self._dtypes[name], copy=False))
        # the request reads the caller's arrays instead of copying them (the BLIP decoder's 340 MB cross-attention
        # cache at batch 8 is fed at every token): one allocation and copy less per call; no measurable step time
        # (bench/results/precision/ov-copy/)
        res = self.request.infer(feeds, share_inputs=True, share_outputs=True)
        out = {}
        for port, value in res.items():
            out[port.get_any_name()] = np.array(value, copy=True)  # the request reuses its buffers
        return {n: out[n] for n in self.output_names}


def openvino_graph(export_dir: str | os.PathLike, manifest: Mapping, name: str,
                   precision: Precision | str) -> tuple[Path, Precision]:
    """(graph file, compute precision) of one component for ``precision`` on OpenVINO. int8: the
    accepted nncf IR, else bf16, else fp32; bf16: when validated (an export quantized with
    ``semgir-engine quantize`` records whether it held), else fp32. Each fallback is logged; the
    manifest's ``quantization`` record says why."""
    from .manifest import ExportDirError, component_entry

    p = Precision.parse(precision)
    entries = manifest.get("components", {}).get(name, {})
    record = manifest.get("quantization", {}).get(name, {})
    if p is Precision.INT8:
        ov_entry = (entries.get("int8") or {}).get("openvino")
        if ov_entry:
            path = Path(export_dir) / ov_entry["file"]
            if not path.is_file():
                raise ExportDirError(f"{path} is listed in the manifest but missing")
            return path, Precision.INT8
        why = (record.get("openvino-int8") or {}).get("reason") or "not quantized"
        p = Precision.BF16
        log.warning("%s: no accepted OpenVINO INT8 graph (%s); trying bf16", name, why)
    if p is Precision.BF16 and (record.get("openvino-bf16") or {}).get("accepted") is False:
        log.warning("%s: bf16 was rejected at validation (%s); running fp32", name, record["openvino-bf16"]["reason"])
        p = Precision.FP32
    path, _ = component_entry(export_dir, manifest, name, "fp32")
    return path, p


def ov_factory(export_dir: str | os.PathLike, precision: Precision | str = Precision.FP32,
               threads: int | None = None) -> Callable[[str, Path], OvRunner]:
    """``factory(component, onnx_path)`` -> an :class:`OvRunner` for ``precision`` (see
    :func:`openvino_graph`); what the exported-graph runtimes take as ``runner_factory``. The
    runtimes resolve the fp32 ONNX path; the factory swaps in the INT8 IR when there is one."""
    from .manifest import load_manifest

    _ov()
    manifest = load_manifest(export_dir)

    def factory(name: str, _onnx_path: Path) -> OvRunner:
        path, p = openvino_graph(export_dir, manifest, name, precision)
        return OvRunner(path, p, threads)

    return factory
