"""ONNX Runtime helpers (torch-free): sessions, providers, feeds, IO binding.

Only onnxruntime and numpy are imported here; the SemGIR pipeline on ONNX Runtime lives in
:mod:`.ort_semgir`.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import numpy as np

from ..deps import require

log = logging.getLogger(__name__)

#: preferred execution providers, best first; only those the installed build offers are used
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _ort():
    return require("onnxruntime", "the ONNX Runtime backend")


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


def choose_providers(requested: Sequence[str] | None = None, device: str = "auto", gpu: int = 0) -> list:
    """The providers to ask for: ``requested`` if given, else the best ones installed.

    ``device="cpu"`` restricts to the CPU provider; ``device="cuda"`` needs the CUDA provider and runs on
    GPU ``gpu`` (refused clearly when this onnxruntime build has no CUDA provider: never silently the CPU).
    """
    have = available_providers()
    if device == "cuda":
        if "CUDAExecutionProvider" not in have:
            from ..errors import SemgirError

            raise SemgirError(f"device cuda:{gpu} asked for, but this onnxruntime build has no CUDA provider "
                              f"(has {have}); install semgir-engine[onnx-gpu] or use --device cpu")
        return [("CUDAExecutionProvider", {"device_id": int(gpu)}), "CPUExecutionProvider"]
    if requested:
        missing = [p for p in requested if p not in have]
        if missing:
            log.warning("execution providers %s are not in this onnxruntime build (have %s)", missing, have)
        chosen = [p for p in requested if p in have]
    elif device == "cpu":
        chosen = ["CPUExecutionProvider"]
    else:
        chosen = [p for p in PREFERRED_PROVIDERS if p in have]
    return chosen or ["CPUExecutionProvider"]


def session_options(intra_threads: int | None = None, optimization: str = "all"):
    """Session options for this engine: no spinning worker threads (they steal the cores of
    whatever runs next), and an explicit thread count when given (``SEMGIR_ORT_THREADS``)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    threads = intra_threads or int(os.environ.get("SEMGIR_ORT_THREADS", "0") or 0)
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    return so


def make_session(path: str | os.PathLike, providers: Sequence[str] | None = None, device: str = "auto",
                 intra_threads: int | None = None, gpu: int = 0):
    """An InferenceSession with spinning disabled; warns when a requested GPU provider fell back to CPU
    (refuses when ``device="cuda"`` was asked for explicitly)."""
    ort = _ort()
    wanted = choose_providers(providers, device, gpu)
    sess = ort.InferenceSession(os.fspath(path), sess_options=session_options(intra_threads), providers=wanted)
    got = sess.get_providers()
    dropped = [p if isinstance(p, str) else p[0] for p in wanted]
    dropped = [p for p in dropped if p not in got]
    if dropped and device == "cuda":
        from ..errors import SemgirError

        raise SemgirError(f"{os.path.basename(os.fspath(path))}: could not run on cuda:{gpu} (providers {dropped} "
                          f"failed; running on {got}); check the CUDA libraries or use --device cpu")
    if dropped:
        log.warning("%s: providers %s fell back (running on %s); check the CUDA/TensorRT libraries",
                    os.path.basename(os.fspath(path)), dropped, got)
    return sess


_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
       "tensor(int32)": np.int32, "tensor(double)": np.float64, "tensor(bool)": np.bool_}


def feeds_for(sess, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds built from the session's own inputs (names and dtypes), so that a graph that dropped
    or retyped an input is caught here with a clear message."""
    feeds = {}
    for i in sess.get_inputs():
        if i.name not in arrays:
            raise KeyError(f"graph input {i.name!r} has no value (given: {sorted(arrays)})")
        dtype = _NP.get(i.type)
        a = np.asarray(arrays[i.name])
        feeds[i.name] = np.ascontiguousarray(a.astype(dtype, copy=False) if dtype is not None else a)
    return feeds


class OrtRunner:
    """One ONNX graph: runs numpy in, numpy out. On a GPU provider it uses IO binding so that
    inputs are copied once and outputs come back without extra staging copies."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, device: str = "auto",
                 intra_threads: int | None = None, gpu: int = 0):
        self.path, self.gpu = os.fspath(path), int(gpu)
        self.session = make_session(self.path, providers, device, intra_threads, gpu)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]
        prov = self.session.get_providers()
        self.on_gpu = prov[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        feeds = feeds_for(self.session, arrays)
        if not self.on_gpu:
            return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        binding = self.session.io_binding()
        for name, a in feeds.items():
            ov = _ort().OrtValue.ortvalue_from_numpy(a, "cuda", self.gpu)
            binding.bind_ortvalue_input(name, ov)
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.gpu)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))
