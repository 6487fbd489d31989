"""TensorRT backend: engines built from the exported ONNX graphs, cached by content key.

Import-safe without TensorRT (nothing heavy is imported at module level); every entry point
raises :class:`~semgir_engine.errors.MissingDependencyError` when ``tensorrt`` or a CUDA build of
torch is missing.

- :func:`build_engine`: the TensorRT Python API. An fp16 ONNX graph (from ``export --precision
  fp16``, whose sensitive ops stay fp32) is built as a *strongly typed* network, so TensorRT keeps
  the graph's own types; an fp32 graph is built weakly typed with the FP16 flag when fp16 is asked
  for. One optimisation profile from the spec's min/opt/max shapes; a persistent timing cache.
- :func:`cached_engine`: the engine in the artifact cache under a key of (ONNX sha256, spec
  digest, precision, shape profile, TensorRT version, GPU compute capability).
- :class:`TrtRunner`: device buffers as torch CUDA tensors, ``execute_async_v3`` on a private
  stream, and a CUDA graph per input-shape signature once the same shapes repeat (the UNet in the
  denoising loop), replayed after copying the new inputs into the captured buffers.
- :func:`engine_factory`: TensorRT engines as the component sessions of the one pipeline.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..errors import MissingDependencyError, SemgirError
from ..spec import ComponentSpec, Precision
from .cache import ArtifactCache, default_root

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 8 << 30
MAX_GRAPHS_PER_RUNNER = 4


# ------------------------------------------------------------------------------------------
# availability
# ------------------------------------------------------------------------------------------
def _trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "tensorrt", "the TensorRT backend") from exc
    return trt


def _torch_cuda():
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch", "TensorRT buffers (a CUDA build of torch)") from exc
    if not torch.cuda.is_available():
        raise SemgirError("the TensorRT backend needs a CUDA GPU; none is visible")
    return torch


def trt_available() -> bool:
    """True when tensorrt imports and a CUDA GPU is visible (cheap when tensorrt is absent)."""
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("torch") is None:
        return False
    try:
        _trt()
        _torch_cuda()
    except Exception:  # noqa: BLE001 - a broken install counts as unavailable
        return False
    return True


def compute_capability(device: int = 0) -> str:
    torch = _torch_cuda()
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


# ------------------------------------------------------------------------------------------
# engine build
# ------------------------------------------------------------------------------------------
def profile_shapes(spec: ComponentSpec, input_names: list[str] | None = None) -> dict[str, tuple[tuple, tuple, tuple]]:
    """(min, opt, max) shape of every input from the spec's profile. The UNet's batch doubles under
    classifier-free guidance; its profile's max already covers that (see the registry)."""
    lo, opt, hi = spec.shapes("min"), spec.shapes("opt"), spec.shapes("max")
    names = input_names or spec.input_names()
    return {n: (lo[n], opt[n], hi[n]) for n in names}


def _is_fp16_graph(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)
        for n in model.graph.node)


def build_engine(onnx_path: str | os.PathLike, spec: ComponentSpec, out_path: str | os.PathLike,
                 fp16: bool = True, timing_cache: str | os.PathLike | None = None,
                 workspace_bytes: int = WORKSPACE_BYTES, int8: bool = False, calibrator=None,
                 calibration_shapes: Mapping[str, tuple] | None = None) -> dict:
    """Build and serialise one engine; returns metadata (typing mode, build seconds). ``int8``:
    INT8 kernels where the graph has Q/DQ nodes, or everywhere ``calibrator`` (an
    ``IInt8Calibrator``, run at ``calibration_shapes``) measured the ranges (see :mod:`.trt_int8`)."""
    import time

    trt = _trt()
    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = fp16 and _is_fp16_graph(onnx_path)
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external data next to the graph (models over 2 GB)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SemgirError(f"{spec.name}: TensorRT could not parse {onnx_path.name}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    graph_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(spec, graph_inputs).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if calibrator is not None:
        config.int8_calibrator = calibrator
        cal_profile = builder.create_optimization_profile()
        shapes = calibration_shapes or {n: v[1] for n, v in profile_shapes(spec, graph_inputs).items()}
        for name in graph_inputs:
            cal_profile.set_shape(name, shapes[name], shapes[name], shapes[name])
        config.set_calibration_profile(cal_profile)
    cache_blob = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_blob = Path(timing_cache).read_bytes()
    tcache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(tcache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SemgirError(f"{spec.name}: TensorRT engine build failed (see the TensorRT log above)")
    Path(out_path).write_bytes(bytes(serialized))
    if timing_cache is not None:
        tmp = Path(str(timing_cache) + ".tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        os.replace(tmp, timing_cache)
    return {"strongly_typed": strongly_typed, "fp16": fp16, "int8": int8,
            "build_seconds": round(time.perf_counter() - t0, 3), "tensorrt": trt.__version__}


def engine_key_parts(component: str, onnx_sha256: str, spec: ComponentSpec, fp16: bool) -> dict:
    trt = _trt()
    return {
        "kind": "tensorrt",
        "component": component,
        "onnx_sha256": onnx_sha256,
        "spec_digest": spec.digest(),
        "precision": "fp16" if fp16 else "fp32",
        "profile": {k: list(v) for k, v in spec.profile.items()},
        "tensorrt": trt.__version__,
        "compute_capability": compute_capability(),
    }


def cached_engine(component: str, onnx_path: str | os.PathLike, onnx_sha256: str, spec: ComponentSpec,
                  fp16: bool = True, cache_dir: str | os.PathLike | None = None):
    """The engine for this graph from the artifact cache, built on a miss (or when stale/corrupt)."""
    cache = ArtifactCache(cache_dir)
    parts = engine_key_parts(component, onnx_sha256, spec, fp16)
    timing = default_root(cache_dir) / f"timing-{parts['tensorrt']}-{parts['compute_capability']}.cache"
    timing.parent.mkdir(parents=True, exist_ok=True)

    def build(tmp: Path) -> dict:
        return build_engine(onnx_path, spec, tmp / f"{component}.engine", fp16=fp16, timing_cache=timing)

    return cache.get_or_build(parts, build)


# ------------------------------------------------------------------------------------------
# runner
# ------------------------------------------------------------------------------------------
def _torch_dtype(trt, torch, dt):
    return {trt.float32: torch.float32, trt.float16: torch.float16, trt.int64: torch.int64,
            trt.int32: torch.int32, trt.bool: torch.bool, trt.bfloat16: torch.bfloat16}[dt]


class TrtRunner:
    """One engine: numpy in, numpy out, like :class:`.ort.OrtRunner`. Buffers are torch CUDA
    tensors; a CUDA graph is captured per input-shape signature when ``cuda_graphs`` and replayed
    on later calls with the same shapes."""

    def __init__(self, engine_path: str | os.PathLike, cuda_graphs: bool = True, device: int = 0):
        trt = self.trt = _trt()
        torch = self.torch = _torch_cuda()
        self.device = torch.device("cuda", device)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise SemgirError(f"TensorRT could not deserialise {engine_path} (other TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, torch, self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream(device=self.device)
        self.cuda_graphs = cuda_graphs
        # shape signature -> (input buffers, output buffers, graph or None, calls seen)
        self._slots: OrderedDict = OrderedDict()

    def _allocate(self, shapes: Mapping[str, tuple]):
        torch = self.torch
        for n, s in shapes.items():
            if not self.context.set_input_shape(n, tuple(s)):
                raise SemgirError(f"input {n} shape {tuple(s)} is outside the engine's optimisation profile")
        ins = {n: torch.empty(tuple(shapes[n]), dtype=self.dtypes[n], device=self.device) for n in self.input_names}
        outs = {}
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise SemgirError(f"output {n} shape {shape} unresolved after setting the input shapes")
            outs[n] = torch.empty(shape, dtype=self.dtypes[n], device=self.device)
        return ins, outs

    def _bind(self, ins, outs, shapes) -> None:
        for n, s in shapes.items():
            self.context.set_input_shape(n, tuple(s))
        for n, t in list(ins.items()) + list(outs.items()):
            self.context.set_tensor_address(n, t.data_ptr())

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise SemgirError("TensorRT execution failed")

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        missing = [n for n in self.input_names if n not in arrays]
        if missing:
            raise KeyError(f"engine inputs {missing} have no value (given: {sorted(arrays)})")
        shapes = {n: tuple(np.shape(arrays[n])) for n in self.input_names}
        sig = tuple(sorted(shapes.items()))
        slot = self._slots.get(sig)
        if slot is None:
            slot = [*self._allocate(shapes), None, 0]
            self._slots[sig] = slot
            while len(self._slots) > MAX_GRAPHS_PER_RUNNER:
                self._slots.popitem(last=False)
        else:
            self._slots.move_to_end(sig)
        ins, outs, graph, seen = slot
        with torch.cuda.stream(self.stream):
            for n in self.input_names:
                src = torch.from_numpy(np.ascontiguousarray(arrays[n])).to(self.dtypes[n])
                ins[n].copy_(src, non_blocking=False)
            if graph is not None:
                graph.replay()
            else:
                self._bind(ins, outs, shapes)
                self._execute()
                if self.cuda_graphs and seen >= 1:
                    # shapes repeated: capture (TensorRT needs one enqueue after a shape change first,
                    # which the call above was), then replay from now on
                    self.stream.synchronize()
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, stream=self.stream):
                        self._execute()
                    slot[2] = g
            slot[3] = seen + 1
            result = {n: outs[n].float().cpu().numpy() if outs[n].dtype == torch.float16 else outs[n].cpu().numpy()
                      for n in self.output_names}
        self.stream.synchronize()
        return result


# ------------------------------------------------------------------------------------------
# component sessions for the pipeline (SemGIR and the patch detector)
# ------------------------------------------------------------------------------------------
def engine_factory(export_dir, cache_dir: str | os.PathLike | None = None, cuda_graphs: bool = True,
                   precision: Precision | str = Precision.FP16) -> Callable[[str, Path], "TrtRunner"]:
    """``factory(component, onnx_path)`` -> a TensorRT runner whose engine is built (through the
    artifact cache) from that exported graph: the ``runner_factory`` of
    :class:`.ort_semgir.ExportSessions`, so SemGIR and the patch detector run the same pipeline code
    on TensorRT as on ONNX Runtime. fp16 and fp32 engines; other precisions are refused."""
    precision = Precision(precision)
    if precision not in (Precision.FP16, Precision.FP32):
        raise SemgirError(f"the tensorrt backend builds fp16 or fp32 engines, not {precision.value}")
    _trt()
    _torch_cuda()
    from .. import registry
    from .manifest import load_manifest

    manifest = load_manifest(export_dir)
    size = manifest["pipeline"].get("size", "full")

    def factory(name: str, onnx_path: Path):
        entries = manifest["components"][name]
        entry = next(e for e in entries.values() if e["file"] == onnx_path.name)
        spec = registry.get(name, size)
        art = cached_engine(name, onnx_path, entry["sha256"], spec, fp16=precision is Precision.FP16,
                            cache_dir=cache_dir)
        return TrtRunner(art.path(f"{name}.engine"), cuda_graphs=cuda_graphs)

    return factory
