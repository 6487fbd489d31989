"""TensorRT INT8 engines from the same calibration data as the CPU backends (import-safe without
TensorRT; every entry point raises :class:`~semgir_engine.errors.MissingDependencyError` then).

Two ways, chosen by the graph:

- **explicit quantization** (preferred, TensorRT >= 10): the ONNX Runtime static INT8 graph
  (``<component>.int8.onnx``, QDQ nodes with scales calibrated by ``semgir-engine quantize``) is
  built with the INT8 and FP16 flags; TensorRT fuses the Q/DQ pairs into INT8 kernels and runs the
  rest in fp16. Same scales as the CPU INT8 graph, so both are validated by one calibration.
- **implicit calibration** (an fp32 graph without QDQ, e.g. a matrix-product graph that ONNX
  Runtime quantizes dynamically): :class:`CalibrationTensorsCalibrator` (entropy calibration) reads
  the recorded calibration tensors onto the GPU; its calibration cache is written beside the engine
  in the cache folder (keyed by graph and calibration set) and reused on rebuilds.

Engines go through the artifact cache under (graph sha256, spec digest, precision ``int8``,
calibration set, shape profile, TensorRT version, compute capability). Not yet run on a GPU:
TensorRT cannot be installed on the CPU machines this was written on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import SemgirError
from ..spec import ComponentSpec
from .cache import ArtifactCache, default_root
from .trt import WORKSPACE_BYTES, _torch_cuda, _trt, build_engine, compute_capability

log = logging.getLogger(__name__)


def has_qdq(onnx_path: str | os.PathLike) -> bool:
    """True when the graph carries QuantizeLinear/DequantizeLinear nodes (explicit quantization)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _calibrator_base():
    return _trt().IInt8EntropyCalibrator2


def make_calibrator(feeds: Sequence[Mapping[str, np.ndarray]], input_names: Sequence[str],
                    cache_file: str | os.PathLike):
    """An entropy calibrator over recorded feeds (numpy batches of the graph's inputs). Every feed
    must have the same batch size (TensorRT asks for one); feeds are copied to the GPU one at a time."""
    torch = _torch_cuda()
    base = _calibrator_base()
    batch = int(next(iter(feeds[0].values())).shape[0]) if feeds else 1

    class CalibrationTensorsCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self):
            base.__init__(self)
            self.feeds = [f for f in feeds if int(next(iter(f.values())).shape[0]) == batch]
            self.i = 0
            self.live: dict = {}
            self.cache_file = Path(cache_file)

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.i >= len(self.feeds):
                return None
            f = self.feeds[self.i]
            self.i += 1
            self.live = {n: torch.from_numpy(np.ascontiguousarray(f[n])).cuda() for n in input_names}
            return [int(self.live[n].data_ptr()) for n in names]

        def read_calibration_cache(self):
            return self.cache_file.read_bytes() if self.cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            tmp = self.cache_file.with_name(self.cache_file.name + ".tmp")
            tmp.write_bytes(bytes(cache))
            os.replace(tmp, self.cache_file)

    return CalibrationTensorsCalibrator()


def build_int8_engine(onnx_path: str | os.PathLike, spec: ComponentSpec, out_path: str | os.PathLike,
                      feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
                      calibration_cache: str | os.PathLike | None = None,
                      timing_cache: str | os.PathLike | None = None, workspace_bytes: int = WORKSPACE_BYTES) -> dict:
    """Build one INT8 engine (explicit when the graph has QDQ nodes, else calibrated on ``feeds``);
    layers left unquantized run in fp16."""
    explicit = has_qdq(onnx_path)
    calibrator = shapes = None
    if not explicit:
        if not feeds and not (calibration_cache and Path(calibration_cache).is_file()):
            raise SemgirError(f"{spec.name}: an fp32 graph needs calibration tensors (or a calibration cache) for INT8")
        calibrator = make_calibrator(list(feeds or []), spec.input_names(),
                                     calibration_cache or str(out_path) + ".calib")
        shapes = {n: tuple(v.shape) for n, v in feeds[0].items()} if feeds else None  # calibration runs at one shape
    meta = build_engine(onnx_path, spec, out_path, fp16=True, timing_cache=timing_cache,
                        workspace_bytes=workspace_bytes, int8=True, calibrator=calibrator, calibration_shapes=shapes)
    meta["int8"] = "explicit-qdq" if explicit else "entropy-calibrated"
    return meta


def cached_int8_engine(component: str, onnx_path: str | os.PathLike, onnx_sha256: str, spec: ComponentSpec,
                       calibration_ref: str, feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
                       cache_dir: str | os.PathLike | None = None):
    """The INT8 engine for this graph and calibration set from the artifact cache, built on a miss.
    The entropy calibrator's cache is kept beside the timing cache, keyed by graph and calibration
    set, so a rebuild (other TensorRT version, stale engine) skips the calibration passes."""
    trt = _trt()
    parts = {"kind": "tensorrt", "component": component, "onnx_sha256": onnx_sha256, "spec_digest": spec.digest(),
             "precision": "int8", "calibration_set": calibration_ref,
             "profile": {k: list(v) for k, v in spec.profile.items()}, "tensorrt": trt.__version__,
             "compute_capability": compute_capability()}
    timing = default_root(cache_dir) / f"timing-{parts['tensorrt']}-{parts['compute_capability']}.cache"
    timing.parent.mkdir(parents=True, exist_ok=True)

    calib = default_root(cache_dir) / f"int8-calib-{component}-{onnx_sha256[:16]}-{calibration_ref.rsplit(':', 1)[-1]}.cache"

    def build(tmp: Path) -> dict:
        return build_int8_engine(onnx_path, spec, str(tmp / f"{component}.engine"), feeds,
                                 calibration_cache=calib, timing_cache=timing)

    return ArtifactCache(cache_dir).get_or_build(parts, build)


def int8_engine_factory(export_dir, calibration_ref: str | None = None, cache_dir: str | os.PathLike | None = None,
                        cuda_graphs: bool = True, tensors: Mapping[str, Sequence] | None = None):
    """``factory(component, onnx_path)`` -> a :class:`.trt.TrtRunner` on an INT8 engine: built from
    the component's QDQ graph when the manifest has one, else from its fp32 graph calibrated on
    ``tensors[component]`` (see :func:`semgir_engine.calibration.tensors.calibration_tensors`)."""
    from .. import registry
    from .manifest import load_manifest
    from .trt import TrtRunner

    _trt()
    _torch_cuda()
    manifest = load_manifest(export_dir)
    size = manifest.get("pipeline", {}).get("size", "full")

    def factory(name: str, _onnx_path: Path) -> TrtRunner:
        entries = manifest["components"][name]
        int8 = entries.get("int8") or {}
        # explicit quantization from the static QDQ graph; dynamic-INT8 graphs (MatMulInteger) are not
        # TensorRT graphs: those components calibrate their fp32 graph instead
        entry = int8 if (int8.get("recipe") or {}).get("method") == "static-qdq" else entries["fp32"]
        ref = entry.get("calibration_set") or calibration_ref
        if ref is None:
            raise SemgirError(f"{name}: no INT8 graph in {export_dir} and no calibration set given")
        art = cached_int8_engine(name, Path(export_dir) / entry["file"], entry["sha256"], registry.get(name, size), ref,
                                 feeds=(tensors or {}).get(name), cache_dir=cache_dir)
        return TrtRunner(art.path(f"{name}.engine"), cuda_graphs=cuda_graphs)

    return factory
