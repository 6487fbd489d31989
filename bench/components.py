"""Per-component latency and parity across backends and precisions.

For each registered component: build the torch reference once, export it to ONNX (fp32 and, if
asked, fp16), then on the same seeded inputs time torch eager and ONNX Runtime at each batch size
and compare their outputs (max abs difference, cosine) against torch fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .. import registry
from ..spec import Precision
from .harness import measure

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "onnxruntime-fp16", "tensorrt-fp16")


@dataclass
class ComponentRow:
    component: str
    backend: str
    precision: str
    batch: int
    timing: dict
    max_abs_diff: float | None = None
    cosine: float | None = None
    note: str = ""
    shapes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float(np.array_equal(a, b))


def _overrides(name: str, spec, batch: int, resolution: int | None, size: str) -> dict[str, int]:
    from ..semgir import configs

    o = {"batch": batch}
    if resolution and size != "tiny" and name in ("unet", "vae_decoder"):
        d = configs.dims(size)
        lat = resolution // d.vae_scale
        o.update(height=lat, width=lat, image_height=resolution, image_width=resolution)
    if name == "blip_text_decoder":
        o["tokens"] = 20
    return {k: v for k, v in o.items() if k in spec.profile}


def _inputs(name: str, spec, overrides: dict, vocab_cap: int) -> dict[str, np.ndarray]:
    x = registry.sample_inputs(spec, "opt", seed=0, **overrides)
    if "input_ids" in x:
        x["input_ids"] = x["input_ids"] % vocab_cap + 6
    return x


def bench_components(names: Iterable[str], backends: Iterable[str], batch_sizes: Iterable[int], *,
                     models: str = "random", resolution: int | None = 256, export_dir: str | Path,
                     repeats: int = 5, max_seconds: float = 60.0, bundles=None,
                     on_row: Callable[[ComponentRow], None] | None = None) -> list[ComponentRow]:
    """Time every (component, backend, batch) and measure parity against torch fp32."""
    import torch

    from ..semgir.components import Bundles
    from ..runtime.ort import OrtRunner
    from ..semgir.components import run_torch
    from ..semgir.sources import ModelSource

    src = ModelSource.parse(models)
    size = "tiny" if models == "tiny" else "full"
    vocab_cap = 150 if size == "tiny" else 30000
    backends = list(backends)
    bundles = bundles or Bundles(src)
    rows: list[ComponentRow] = []

    def emit(row: ComponentRow) -> None:
        rows.append(row)
        if on_row:
            on_row(row)

    for name in names:
        spec = registry.get(name, size)
        module = bundles.module(name)
        runners: dict[str, Callable[[dict], dict]] = {}
        if "torch" in backends:
            runners["torch"] = lambda x, m=module: run_torch(m, x, spec)
        for b in backends:
            if not b.startswith("onnxruntime"):
                continue
            prec = Precision.FP16 if b.endswith("fp16") else Precision.FP32
            path = ensure_exported(name, src, export_dir, prec, bundles, models=models)
            runner = OrtRunner(path, device="cpu")
            runners[b] = lambda x, r=runner: r(**x)
        if "tensorrt-fp16" in backends:
            from ..runtime import trt

            if trt.trt_available():  # an fp16 engine built from the fp32 graph, through the artifact cache
                path = ensure_exported(name, src, export_dir, Precision.FP32, bundles, models=models)
                engine = trt.engine_factory(export_dir, fp16=True)(name, path)
                runners["tensorrt-fp16"] = lambda x, r=engine: r(**x)
            else:
                log.warning("tensorrt-fp16: needs a CUDA GPU with TensorRT; skipped on this machine")
        for bs in batch_sizes:
            x = _inputs(name, spec, _overrides(name, spec, bs, resolution, size), vocab_cap)
            ref = None
            with torch.inference_mode():
                ref = run_torch(module, x, spec)
            for b, run in runners.items():
                out = run(x)
                first = spec.output_names()[0]
                diff = float(np.max(np.abs(out[first].astype(np.float64) - ref[first].astype(np.float64))))
                cos = cosine(out[first], ref[first])
                with torch.inference_mode():
                    t = measure(lambda: run(x), items=bs, warmup=1, repeats=repeats, max_seconds=max_seconds)
                emit(ComponentRow(name, b, "fp16" if b.endswith("fp16") else "fp32", bs, t.to_dict(),
                                  diff, cos, shapes={k: list(v.shape) for k, v in x.items()}))
                log.info("%s %s b%d: %.1f ms (%.2f items/s) maxdiff %.2e cos %.6f", name, b, bs,
                         t.median_ms, t.items_per_s, diff, cos)
        del runners
    return rows


CAPTION_COMPONENTS = ("blip_vision", "blip_text_decoder_init", "blip_text_decoder_with_past")


def bench_captioning(bundles, backends: Iterable[str], batch_sizes: Iterable[int], *, export_dir: str | Path,
                     models: str | None = None, repeats: int = 3, max_seconds: float = 120.0, seed: int = 0,
                     on_row: Callable[[ComponentRow], None] | None = None) -> list[ComponentRow]:
    """BLIP captioning as a whole (vision encoder + greedy decoding of up to 20 new tokens with the
    key/value caches): the one decoding loop over torch modules against the same loop over ONNX Runtime
    sessions, on the same images. Parity is the share of identical captions (max_abs_diff / cosine stay empty)."""
    import torch

    from ..export.onnx_export import write_pipeline_assets
    from ..runtime.ort_semgir import ExportSessions
    from ..semgir.pipeline import CaptionStage
    from ..semgir.torch_backend import TorchSessions

    size = bundles.src.size.value
    rng = np.random.default_rng(seed)
    runners: dict[str, Callable[[list], list[str]]] = {}
    backends = list(backends)
    if "torch" in backends:
        runners["torch"] = CaptionStage(TorchSessions(bundles.src, "cpu", CAPTION_COMPONENTS, bundles=bundles))
    if "onnxruntime" in backends:
        for n in CAPTION_COMPONENTS:
            ensure_exported(n, bundles.src, export_dir, Precision.FP32, bundles, models=models)
        write_pipeline_assets(CAPTION_COMPONENTS, bundles, export_dir)
        runners["onnxruntime"] = CaptionStage(ExportSessions(export_dir, device="cpu"))
    first = next(iter(runners.values()), None)
    side = first.preprocess.size if first is not None else 0
    max_new = first.generation.max_length - 1 if first is not None else 0
    rows = []
    for bs in batch_sizes:
        ims = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(bs)]
        ref = None
        for b, run in runners.items():
            with torch.inference_mode():
                caps = [c.strip() for c in run(ims)]
                ref = ref if ref is not None else caps
                t = measure(lambda: run(ims), items=bs, warmup=0, repeats=repeats, max_seconds=max_seconds)
            same = sum(a == c for a, c in zip(ref, caps))
            row = ComponentRow("blip_caption", b, "fp32", bs, t.to_dict(), note=f"{same}/{bs} captions identical to torch; "
                               f"{max_new} new tokens max; {size} weights")
            rows.append(row)
            if on_row:
                on_row(row)
            log.info("blip_caption %s b%d: %.1f ms (%s)", b, bs, t.median_ms, row.note)
    return rows


def ensure_exported(name: str, src, export_dir: str | Path, prec: Precision, bundles=None,
                    models: str | None = None, weights_sha256: str | None = None) -> Path:
    """The component's ONNX file in ``export_dir``, exported (unvalidated: the benchmark measures
    parity itself) unless the manifest already records it from the current spec (and, when
    ``weights_sha256`` is given, from those weights: a patch_cnn of another patch model is redone).

    With ``models`` other than tiny the export runs in a child process: exporting a full-size UNet
    (and converting it to fp16) needs ~14 GB on its own, too much beside the benchmark's models. The
    child builds the same seeded weights; the benchmark's parity columns would show any mismatch."""
    from ..export.onnx_export import export_component, onnx_file_name, read_manifest
    from ..runtime.manifest import spec_current

    path = Path(export_dir) / onnx_file_name(name, prec)
    entry = read_manifest(export_dir).get("components", {}).get(name, {}).get(prec.value)
    same_weights = weights_sha256 is None or (entry or {}).get("source", {}).get("weights_sha256") == weights_sha256
    if path.exists() and entry and spec_current(name, entry) and same_weights:
        return path
    log.info("exporting %s (%s) for the benchmark", name, prec.value)
    if models and models != "tiny":
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "semgir_engine.cli", "export", "--components", name, "--models", models,
               "--precision", prec.value, "--out", str(export_dir), "--force", "--no-validate", "--no-progress"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"exporting {name} ({prec.value}) failed (exit {r.returncode}): {r.stderr[-2000:]}")
    else:
        export_component(name, src, export_dir, prec, force=True, bundles=bundles, check=False)
    return path


def speedups(rows: list[ComponentRow], base: str = "torch") -> list[dict]:
    """items/s of each backend over ``base``, for the same component and batch in the same run."""
    ref = {(r.component, r.batch): r.timing["items_per_s"] for r in rows if r.backend == base}
    out = []
    for r in rows:
        if r.backend != base and (r.component, r.batch) in ref:
            out.append({"component": r.component, "batch": r.batch, "backend": r.backend,
                        "speedup_vs_" + base: r.timing["items_per_s"] / ref[(r.component, r.batch)]})
    return out
