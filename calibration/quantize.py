"""Post-training quantization of exported components, validated against fp32 (torch-free).

For each component of an export directory (its fp32 ONNX graph) and a calibration set:

- **ONNX Runtime INT8** (``<component>.int8.onnx``): static INT8 in QDQ format with per-channel
  weights for convolution graphs (patch CNN, CLIP RN50x4, VAE, UNet), activations calibrated on the
  recorded calibration tensors; dynamic INT8 (per-channel weights, activations quantized at run
  time) for matrix-product graphs (BLIP vision, text encoders, the head), whose activation ranges
  vary per input. Both via :mod:`onnxruntime.quantization`.
- **OpenVINO INT8** (``<component>.int8.openvino.xml/.bin``): ``nncf.quantize`` on the OpenVINO
  model read from the same ONNX graph, with the same calibration tensors (transformer model type
  for the matrix-product graphs).
- **OpenVINO bf16**: no new graph; the fp32 graph compiled with the bf16 precision hint.

Every candidate is checked against the fp32 graph on ONNX Runtime, on calibration tensors held out
from the calibration itself, by the component's :class:`~semgir_engine.spec.PrecisionTier`
(cosine per output, max |diff| where the spec sets one, decision agreement for the head). An
accepted candidate is recorded in ``manifest.json`` as ``components[name]["int8"]`` (ONNX Runtime
graph, with an ``"openvino"`` sub-entry for the IR) or ``components[name]["bf16"]``; a rejected
one is not, and ``manifest["quantization"][name]`` says why (the runtimes then fall back: OpenVINO
runs that component at bf16, ONNX Runtime at fp32). Quantized graphs are built through the
artifact cache, keyed by the fp32 graph's sha256, the spec digest, the calibration set digest, the
recipe and the library versions.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .. import registry
from ..errors import SemgirError
from ..hashing import sha256_file
from ..runtime.cache import ArtifactCache
from ..spec import ComponentSpec, Precision, PrecisionTier
from .calibset import CalibrationSet, split_items
from .tensors import PipelineSettings, calibration_tensors

log = logging.getLogger(__name__)

#: graphs dominated by convolutions: static QDQ (activations calibrated)
CONV_GRAPHS = ("patch_cnn", "clip_image", "vae_decoder", "unet")
#: graphs dominated by matrix products: dynamic INT8 on ONNX Runtime, transformer recipe in nncf
MATMUL_GRAPHS = ("blip_vision", "sd_text_encoder", "clip_text", "semgir_head", "blip_text_decoder",
                 "blip_text_decoder_init", "blip_text_decoder_with_past")
#: components whose first output is a decision (argmax of logits): agreement is gated too
DECISION_COMPONENTS = ("semgir_head",)
BACKENDS = ("onnxruntime", "openvino")
#: ops given QDQ pairs in static INT8: the convolutions only. Quantizing the data-movement ops between
#: them trips ORT's shared-parameter mode on constant inputs; quantizing the final Gemm of the patch
#: CNN as well dropped its cosine from 0.9999 to 0.968 on held-out calibration images (one image's
#: features outside the calibrated range), so matrix products stay fp32 in the static recipe.
STATIC_OPS = ("Conv",)


class QuantizationError(SemgirError):
    """A component could not be quantized (tooling failure, not an accuracy rejection)."""


def recipe(name: str) -> str:
    """``static-qdq`` or ``dynamic`` (ONNX Runtime) for a registered component."""
    if name in CONV_GRAPHS:
        return "static-qdq"
    if name in MATMUL_GRAPHS:
        return "dynamic"
    raise QuantizationError(f"no quantization recipe for {name!r}")


# ------------------------------------------------------------------------------------------
# parity against fp32
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parity:
    """A reduced-precision graph against the fp32 one on the same inputs, over every output."""

    precision: str
    backend: str
    min_cosine: float
    max_abs_diff: float
    decision_agreement: float | None
    batches: int
    tier: dict
    accepted: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    from ..export.validate import cosine

    return cosine(a, b)


def compare(name: str, tier: PrecisionTier, backend: str, ref: Callable, cand: Callable,
            feeds: Sequence[Mapping[str, np.ndarray]]) -> Parity:
    """Run both graphs on ``feeds`` and gate the candidate by ``tier``."""
    cos_min, worst, agree_n, agree_d = 1.0, 0.0, 0, 0
    for f in feeds:
        r, c = ref(**f), cand(**f)
        for k, rv in r.items():
            cv = np.asarray(c[k], np.float32)
            rv = np.asarray(rv, np.float32)
            if cv.shape != rv.shape:
                return Parity(tier.precision.value, backend, 0.0, float("inf"), None, len(feeds), asdict(tier), False,
                              f"{k}: shape {cv.shape} vs fp32 {rv.shape}")
            if not np.isfinite(cv).all():
                return Parity(tier.precision.value, backend, 0.0, float("inf"), None, len(feeds), asdict(tier), False,
                              f"{k}: non-finite values")
            cos_min = min(cos_min, _cosine(cv, rv))
            worst = max(worst, float(np.max(np.abs(cv - rv))) if cv.size else 0.0)
        if name in DECISION_COMPONENTS:
            k = next(iter(r))
            agree_n += int(np.sum(np.asarray(c[k]).argmax(-1) == np.asarray(r[k]).argmax(-1)))
            agree_d += int(np.asarray(r[k]).shape[0])
    agreement = agree_n / agree_d if agree_d else None
    reasons = []
    if cos_min < tier.min_cosine:
        reasons.append(f"cosine {cos_min:.5f} < {tier.min_cosine}")
    if tier.max_abs is not None and worst > tier.max_abs:
        reasons.append(f"max |diff| {worst:.3g} > {tier.max_abs:g}")
    if tier.min_agreement is not None and agreement is not None and agreement < tier.min_agreement:
        reasons.append(f"decision agreement {agreement:.4f} < {tier.min_agreement}")
    return Parity(tier.precision.value, backend, cos_min, worst, agreement, len(feeds), asdict(tier),
                  not reasons, "; ".join(reasons))


# ------------------------------------------------------------------------------------------
# quantizers
# ------------------------------------------------------------------------------------------
def _external(path: Path) -> bool:
    return path.with_name(path.name + ".data").exists() or path.stat().st_size > (1 << 31) - (64 << 20)


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]], input_names: Sequence[str]):
        self.feeds, self.names = list(feeds), list(input_names)
        self.i, self.end = 0, len(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Used by ORT's strided calibration (``CalibStridedMinMax``)."""
        self.i, self.end = start_index, min(end_index, len(self.feeds))

    def get_next(self):
        if self.i >= self.end:
            return None
        f = self.feeds[self.i]
        self.i += 1
        return {n: f[n] for n in self.names}


def quantize_ort(fp32_path: str | os.PathLike, out_path: str | os.PathLike, name: str,
                 feeds: Sequence[Mapping[str, np.ndarray]], method: str | None = None) -> dict:
    """ONNX Runtime INT8 graph of ``fp32_path`` at ``out_path``; returns what was done."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    method = method or recipe(name)
    src, out = Path(fp32_path), Path(out_path)
    big = _external(src)
    t0 = time.perf_counter()
    if method == "dynamic":
        quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm", "Conv"], use_external_data_format=big)
        info = {"method": "dynamic", "weights": "int8 per-channel", "activations": "uint8, ranges at run time"}
    elif method == "static-qdq":
        sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        del sess

        class Reader(_Reader, CalibrationDataReader):
            pass

        quantize_static(str(src), str(out), Reader(feeds, names), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, use_external_data_format=big,
                        op_types_to_quantize=list(STATIC_OPS),
                        # one batch's activations at a time (MinMax would keep every batch's in memory:
                        # GBs for the VAE decoder)
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "CalibStridedMinMax": 1})
        info = {"method": "static-qdq", "weights": "int8 per-channel symmetric", "activations": "uint8 MinMax",
                "calibration_batches": len(feeds)}
    else:
        raise QuantizationError(f"unknown ONNX Runtime recipe {method!r} (static-qdq, dynamic)")
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return info


def quantize_openvino(fp32_path: str | os.PathLike, out_xml: str | os.PathLike, name: str,
                      feeds: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """nncf post-training INT8 of the OpenVINO model read from ``fp32_path``, saved as IR."""
    from ..deps import require

    ov = require("openvino", "OpenVINO INT8 quantization")
    nncf = require("nncf", "OpenVINO INT8 quantization")
    t0 = time.perf_counter()
    model = ov.Core().read_model(str(fp32_path))
    names = [i.get_any_name() for i in model.inputs]
    ds = nncf.Dataset([{n: f[n] for n in names} for f in feeds])
    kw = {}
    if recipe(name) == "dynamic":
        kw["model_type"] = nncf.ModelType.TRANSFORMER
    q = nncf.quantize(model, ds, subset_size=max(1, len(feeds)), preset=nncf.QuantizationPreset.MIXED, **kw)
    ov.save_model(q, str(out_xml), compress_to_fp16=False)
    return {"method": "nncf", "model_type": "transformer" if kw else "default", "preset": "mixed",
            "calibration_batches": len(feeds), "seconds": round(time.perf_counter() - t0, 2),
            "nncf": nncf.__version__, "openvino": ov.__version__}


# ------------------------------------------------------------------------------------------
# the quantize step over an export directory
# ------------------------------------------------------------------------------------------
@dataclass
class QuantResult:
    component: str
    backend: str
    precision: str
    accepted: bool
    parity: dict
    info: dict = field(default_factory=dict)
    files: list = field(default_factory=list)


def _versions() -> dict:
    out = {}
    for mod in ("onnxruntime", "openvino", "nncf"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent extras are recorded as such
            out[mod] = None
    return out


def _copy_artifact(art, dest_dir: Path, rename: Mapping[str, str] | None = None) -> list[dict]:
    out = []
    for f in art.files:
        target = dest_dir / (rename or {}).get(f, f)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(art.path(f), tmp)
        os.replace(tmp, target)
        out.append({"file": target.name, "sha256": sha256_file(target), "bytes": target.stat().st_size})
    return out


def _attempt(name: str, backend: str, tier: PrecisionTier, build: Callable, runner: Callable, ref: Callable,
             val: Sequence, export_dir: Path) -> QuantResult:
    """Build (through the cache), validate, and copy an accepted graph into the export directory. A
    quantizer failure rejects this component on this backend, with the error as the reason; the
    other components and backends go on."""
    try:
        art = build()
        par = compare(name, tier, backend, ref, runner(art), val)
    except Exception as exc:  # noqa: BLE001 - recorded per component, never fatal for the others
        log.warning("%s %s int8: quantization failed: %s: %s", name, backend, type(exc).__name__, exc)
        par = Parity(tier.precision.value, backend, float("nan"), float("nan"), None, 0, asdict(tier), False,
                     f"quantization failed: {type(exc).__name__}: {str(exc)[:300]}")
        return QuantResult(name, backend, tier.precision.value, False, par.to_dict())
    res = QuantResult(name, backend, tier.precision.value, par.accepted, par.to_dict(), dict(art.meta))
    if par.accepted:
        res.files = _copy_artifact(art, export_dir)
    return res


def quantize_export(export_dir: str | os.PathLike, components: Iterable[str], calib: CalibrationSet, *,
                    backends: Iterable[str] = BACKENDS, bf16: bool = True,
                    settings: PipelineSettings = PipelineSettings(), data_dir: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None, holdout: float = 0.25,
                    on_result: Callable[[QuantResult], None] | None = None) -> list[QuantResult]:
    """Quantize ``components`` of an export directory on ``calib``; validate; record in its manifest."""
    from ..export.onnx_export import read_manifest, write_manifest
    from ..runtime.ort import OrtRunner
    from ..runtime.manifest import component_entry, load_manifest

    export_dir = Path(export_dir)
    names = list(components)
    backends = list(backends)
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        from ..errors import UnknownNameError

        raise UnknownNameError("quantization backend", bad[0], BACKENDS)
    manifest = load_manifest(export_dir)
    size = _size_of(manifest, names)  # from the graphs' own spec digests (a folder can mix sizes)
    tensors = calibration_tensors(export_dir, calib, names, settings=settings, data_dir=data_dir, cache_dir=cache_dir)
    cache = ArtifactCache(cache_dir)
    versions = _versions()
    results: list[QuantResult] = []

    def emit(r: QuantResult) -> None:
        results.append(r)
        log.info("%s %s %s: %s (cosine %.5f, max|diff| %.3g)%s", r.component, r.backend, r.precision,
                 "accepted" if r.accepted else "REJECTED", r.parity.get("min_cosine", float("nan")),
                 r.parity.get("max_abs_diff", float("nan")), "" if r.accepted else f": {r.parity.get('reason')}")
        if on_result:
            on_result(r)

    for name in names:
        spec: ComponentSpec = registry.get(name, size)
        fp32_path, entry = component_entry(export_dir, manifest, name, "fp32", verify=True)
        if entry.get("precision") != "fp32":
            raise QuantizationError(f"{name}: {export_dir} has no fp32 graph to quantize")
        feeds = tensors[name]
        cal, val = split_items(feeds, holdout, seed=0)
        val = val or cal
        ref = OrtRunner(fp32_path, device="cpu")
        tier8 = spec.tier(Precision.INT8)
        base = {"component": name, "onnx_sha256": entry["sha256"], "spec_digest": spec.digest(),
                "calibration_set": calib.ref, "calibration_settings": settings.__dict__}
        record: dict = {}
        if "onnxruntime" in backends:
            parts = {**base, "kind": "int8-onnxruntime", "recipe": recipe(name), "static_ops": STATIC_OPS,
                     "onnxruntime": versions["onnxruntime"]}

            def build_ort(tmp: Path, cal=cal, fp32_path=fp32_path, name=name) -> dict:
                return quantize_ort(fp32_path, tmp / f"{name}.int8.onnx", name, cal)

            res = _attempt(name, "onnxruntime", tier8, lambda: cache.get_or_build(parts, build_ort),
                           lambda art: OrtRunner(art.path(f"{name}.int8.onnx"), device="cpu"), ref, val, export_dir)
            record["onnxruntime-int8"] = {"accepted": res.accepted, "reason": res.parity["reason"],
                                          "parity": res.parity, "recipe": res.info, "calibration_set": calib.ref}
            emit(res)
        if "openvino" in backends:
            from ..runtime.openvino import OvRunner

            parts = {**base, "kind": "int8-openvino", "openvino": versions["openvino"], "nncf": versions["nncf"]}

            def build_ov(tmp: Path, cal=cal, fp32_path=fp32_path, name=name) -> dict:
                return quantize_openvino(fp32_path, tmp / f"{name}.int8.openvino.xml", name, cal)

            res = _attempt(name, "openvino", tier8, lambda: cache.get_or_build(parts, build_ov),
                           lambda art: OvRunner(art.path(f"{name}.int8.openvino.xml"), "int8"), ref, val, export_dir)
            record["openvino-int8"] = {"accepted": res.accepted, "reason": res.parity["reason"],
                                       "parity": res.parity, "recipe": res.info, "calibration_set": calib.ref}
            emit(res)
            if bf16:
                par = compare(name, spec.tier(Precision.BF16), "openvino", ref, OvRunner(fp32_path, "bf16"), val)
                emit(QuantResult(name, "openvino", "bf16", par.accepted, par.to_dict()))
                record["openvino-bf16"] = {"accepted": par.accepted, "reason": par.reason, "parity": par.to_dict()}
        # manifest: re-read (another component may have been written meanwhile), then add this one's entries
        m = read_manifest(export_dir)
        comp = m.setdefault("components", {}).setdefault(name, {})
        ort_rec, ov_rec, bf_rec = record.get("onnxruntime-int8"), record.get("openvino-int8"), record.get("openvino-bf16")
        ort_files = next((r.files for r in results if r.component == name and r.backend == "onnxruntime"
                          and r.precision == "int8" and r.accepted), None)
        ov_files = next((r.files for r in results if r.component == name and r.backend == "openvino"
                         and r.precision == "int8" and r.accepted), None)
        if ort_files or ov_files:
            int8 = {"precision": "int8", "spec_digest": spec.digest(), "spec": spec.to_dict(),
                    "source": entry.get("source"), "preprocess": entry.get("preprocess"),
                    "quantized_from": entry["sha256"], "calibration_set": calib.ref, "versions": versions}
            if ort_files:
                int8.update(file=ort_files[0]["file"], sha256=ort_files[0]["sha256"], files=ort_files,
                            validation=ort_rec["parity"], recipe=ort_rec["recipe"])
            else:  # no ONNX Runtime INT8 graph: that backend runs fp32 for this component
                int8.update(file=entry["file"], sha256=entry["sha256"], files=entry.get("files"),
                            validation=None, note="no accepted ONNX Runtime INT8 graph: the fp32 graph")
            if ov_files:
                xml = next(f for f in ov_files if f["file"].endswith(".xml"))
                int8["openvino"] = {"file": xml["file"], "sha256": xml["sha256"], "files": ov_files,
                                    "validation": ov_rec["parity"], "recipe": ov_rec["recipe"]}
            comp["int8"] = int8
        else:
            comp.pop("int8", None)
        if bf_rec is not None:
            if bf_rec["accepted"]:
                comp["bf16"] = {"precision": "bf16", "file": entry["file"], "sha256": entry["sha256"],
                                "files": entry.get("files"), "spec_digest": spec.digest(), "spec": spec.to_dict(),
                                "source": entry.get("source"), "preprocess": entry.get("preprocess"),
                                "compute": "fp32 graph, bf16 compute (OpenVINO INFERENCE_PRECISION_HINT=bf16)",
                                "validation": bf_rec["parity"], "versions": versions}
            else:
                comp.pop("bf16", None)
        m.setdefault("quantization", {})[name] = record
        write_manifest(export_dir, m)
        del feeds, cal, val, ref  # one component's calibration tensors in memory at a time
    return results


def _size_of(manifest: Mapping, names: Sequence[str]) -> str:
    """tiny or full, from a component's recorded spec digest."""
    for n in names:
        e = manifest.get("components", {}).get(n, {}).get("fp32")
        if e and e.get("spec_digest") == registry.get(n, "tiny").digest():
            return "tiny"
    return "full"
