"""Accuracy parity of the patch-shuffle detector across backends and precisions, on real data.

Every backend scores the same decoded images of a data manifest (``../shared/data/aigi`` by
default). Two kinds of numbers come out:

* parity against torch fp32 over every image of the manifest: max |difference| of logits and of
  calibrated scores, and decision agreement at the model's threshold (parity needs no held-out
  data, so all images count);
* accuracy, balanced accuracy, ROC-AUC and AP with bootstrap 95% intervals and counts, per source
  and pooled, on the rows the model never trained on: the validation split of its training pool
  (re-derived from its manifest and checked against the stored hash) and any held-out source.

Images are decoded in chunks and each chunk is scored by every backend before the next, so memory
stays bounded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aigi" / "manifest.csv"
PATCH_BACKENDS = ("torch", "onnxruntime", "onnxruntime-fp16", "tensorrt-fp16")


def default_data_manifest() -> Path | None:
    """``../shared/data/aigi/manifest.csv`` beside the checkout (or $SEMGIR_AIGI_MANIFEST), if present."""
    import os

    env = os.environ.get("SEMGIR_AIGI_MANIFEST")
    for p in ([Path(env)] if env else []) + [DEFAULT_DATA, Path.cwd().parent / "shared/data/aigi/manifest.csv"]:
        if p.is_file():
            return p
    return None


def load_backends(names: Sequence[str], export_dir: str | Path, patch_model: str | None = None) -> dict:
    """{backend name: detector}; exports ``patch_cnn`` (fp32/fp16) into ``export_dir`` when missing
    or made from another patch model."""
    from ..export.onnx_export import write_pipeline_assets
    from ..runtime import trt
    from ..runtime.ort_patch import OrtPatchDetector
    from ..semgir.components import Bundles
    from ..semgir.sources import ModelSource
    from ..spec import Precision
    from .components import ensure_exported

    unknown = [n for n in names if n not in PATCH_BACKENDS]
    if unknown:
        raise ValueError(f"unknown patch backend(s) {unknown}; valid: {', '.join(PATCH_BACKENDS)}")
    if "tensorrt-fp16" in names and not trt.trt_available():
        log.warning("tensorrt-fp16: needs a CUDA GPU with TensorRT; skipped on this machine")
        names = [n for n in names if n != "tensorrt-fp16"]
    src = ModelSource.parse("tiny")  # patch_cnn does not depend on the SemGIR weights
    bundles = Bundles(src, patch_model)
    torch_det = bundles.patch_detector()
    exported = [n for n in names if n != "torch"]
    for name in exported:
        prec = Precision.FP16 if name.endswith("fp16") else Precision.FP32
        ensure_exported("patch_cnn", src, export_dir, prec, bundles, weights_sha256=torch_det.manifest["weights_sha256"])
    if exported:
        write_pipeline_assets(["patch_cnn"], bundles, export_dir)
    out: dict = {}
    for name in names:
        if name == "torch":
            out[name] = torch_det
        elif name == "tensorrt-fp16":
            out[name] = OrtPatchDetector(export_dir, precision="fp16", runner_factory=trt.engine_factory(export_dir),
                                         backend="tensorrt")
        else:
            out[name] = OrtPatchDetector(export_dir, precision="fp16" if name.endswith("fp16") else "fp32", device="cpu")
    return out


def bench_patch_accuracy(manifest_path: str | Path, export_dir: str | Path, backends: Sequence[str] = PATCH_BACKENDS[:3],
                         *, patch_model: str | None = None, batch_size: int = 64, chunk: int = 256,
                         n_boot: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """Score the manifest with every backend; return parity, per-source accuracy and timing."""
    from ..datasets import load_pixels, read_manifest
    from ..metrics import binary_report
    from ..patch.evaluate import model_splits

    dets = load_backends(backends, export_dir, patch_model)
    if "torch" not in dets:
        raise ValueError("the torch backend is the parity reference: include it")
    ref = dets["torch"]
    manifest = read_manifest(manifest_path)
    _, val_rows, held_out, verified = model_splits(manifest, ref.manifest)
    # by identity, not path: the manifest lists a few files twice (known label leaks)
    test_ids = {id(r) for r in val_rows} | {id(r) for r in manifest.rows if r.source in held_out}
    rows = list(manifest.rows)
    logits: dict[str, list[np.ndarray]] = {b: [] for b in dets}
    seconds = dict.fromkeys(dets, 0.0)
    kept = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), unit="img", desc="patch accuracy")
    for i in range(0, len(rows), chunk):
        imgs, ok_rows = load_pixels(rows[i : i + chunk])
        kept += ok_rows
        for b, det in dets.items():
            t0 = time.perf_counter()
            logits[b].append(det.predict_logits(imgs, batch_size=batch_size, k_shuffles=0))
            seconds[b] += time.perf_counter() - t0
        if bar is not None:
            bar.update(len(rows[i : i + chunk]))
    if bar is not None:
        bar.close()
    y = np.array([r.label for r in kept])
    src = np.array([r.source for r in kept])
    is_test = np.array([id(r) in test_ids for r in kept])
    z = {b: np.concatenate(v) for b, v in logits.items()}
    p = {b: dets[b].calibrate(v) for b, v in z.items()}
    thr = ref.threshold
    result = {
        "model": {"version": ref.version, "threshold": thr, "temperature": ref.temperature},
        "data": {"manifest": str(manifest.path), "manifest_sha256": manifest.sha256, "images": len(kept),
                 "undecodable": len(rows) - len(kept), "test_images": int(is_test.sum()), "split_verified": verified,
                 "test_rows": "validation split of the training pool" + (f" + held-out {sorted(held_out)}" if held_out else "")},
        "backends": {},
    }
    for b, det in dets.items():
        d_z = np.abs(z[b] - z["torch"])
        d_p = np.abs(p[b] - p["torch"])
        agree = float(np.mean((p[b] >= thr) == (p["torch"] >= thr)))
        per_source = {}
        for s in sorted(set(src[is_test])):
            m = is_test & (src == s)
            per_source[s] = binary_report(y[m], p[b][m], thr, n_boot=n_boot, seed=seed).to_dict()
        per_source["pooled"] = binary_report(y[is_test], p[b][is_test], thr, n_boot=n_boot, seed=seed).to_dict()
        result["backends"][b] = {
            "precision": "fp16" if b.endswith("fp16") else "fp32",
            "version": det.version,
            "providers": getattr(det, "providers", ["torch"]),
            "images_per_s": len(kept) / seconds[b] if seconds[b] else None,
            "parity_vs_torch": {"max_abs_logit_diff": float(d_z.max()), "max_abs_p_diff": float(d_p.max()),
                                "mean_abs_p_diff": float(d_p.mean()), "decision_agreement": agree,
                                "disagreements": int(round((1 - agree) * len(kept)))},
            "accuracy": per_source,
        }
        log.info("patch %s: %.0f img/s, max|dp| %.2e, agreement %.4f, pooled AUC %.3f", b,
                 result["backends"][b]["images_per_s"] or 0, d_p.max(), agree, per_source["pooled"]["roc_auc"])
    return result


def _ci(v: float, ci) -> str:
    import math

    ok = ci is not None and all(c is not None and math.isfinite(c) for c in ci)
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ok else f"{v:.3f}"


def markdown(result: dict) -> list[str]:
    """Markdown tables for the benchmark report."""
    d = result["data"]
    lines = ["## Patch-shuffle detector: accuracy and parity per backend", "",
             f"Model `{result['model']['version']}`, threshold {result['model']['threshold']:.3f}. Data: "
             f"`{d['manifest']}` ({d['images']} decodable images). Accuracy rows: {d['test_images']} images the model "
             f"never trained on ({d['test_rows']}; split verified: {d['split_verified']}). Parity: all images.", "",
             "| backend | images/s | max abs logit diff | max abs p diff | decision agreement | source | n (real/ai) "
             "| accuracy [95% CI] | balanced acc | ROC-AUC [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b, r in result["backends"].items():
        par = r["parity_vs_torch"]
        first = True
        for s, m in r["accuracy"].items():
            head = (f"| {b} | {r['images_per_s']:.0f} | {par['max_abs_logit_diff']:.1e} | {par['max_abs_p_diff']:.1e} "
                    f"| {100 * par['decision_agreement']:.2f}% ({par['disagreements']} differ) ") if first else "| | | | | "
            auc = _ci(m["roc_auc"], m.get("roc_auc_ci")) if m["n_real"] and m["n_ai"] else "- (one class)"
            lines.append(f"{head}| {s} | {m['n']} ({m['n_real']}/{m['n_ai']}) | {_ci(m['accuracy'], m.get('accuracy_ci'))} "
                         f"| {m['balanced_accuracy']:.3f} | {auc} |")
            first = False
    lines.append("")
    return lines
