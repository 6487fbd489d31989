"""Reduced-precision benchmark: component x backend x precision x batch, and end to end per precision.

One run, one table: for every component and batch size, torch fp32 eager (the reference for speed
and for agreement), torch bf16 (weights ``.to(torch.bfloat16)``, inputs cast; faster than autocast
here), ONNX Runtime fp32 / INT8, OpenVINO fp32 / bf16 / INT8 on the *same inputs*: calibration
tensors held out from the calibration (what the pipeline really feeds each component), re-batched
to the batch size. Per row: median ms, items/s, speed-up over torch fp32 eager in the same run, and
agreement with torch fp32 (cosine and max |diff| of the first output).

End to end: the patch-shuffle detector per backend/precision on the held-out split of
``../shared/data/aigi`` (AUC, decision agreement, images/s) and, with a full SemGIR export, the
scoring pipeline per precision (s/image, p_ai and decision agreement against fp32).

    semgir-engine bench-precision --export-dir DIR --components clip_image,... --out bench/results/precision
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import click
import numpy as np

from .components import ComponentRow, cosine
from .harness import machine_info, measure

log = logging.getLogger(__name__)

CONFIGS = ("torch-fp32", "torch-bf16", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16",
           "openvino-int8")


def rebatch(feeds: Sequence[Mapping[str, np.ndarray]], batch: int) -> dict[str, np.ndarray]:
    """One feed of ``batch`` rows from recorded feeds (rows concatenated, cycled if too few)."""
    rows: dict[str, list[np.ndarray]] = {}
    n = 0
    while n < batch:
        for f in feeds:
            for k, v in f.items():
                rows.setdefault(k, []).append(v)
            n += int(next(iter(f.values())).shape[0])
            if n >= batch:
                break
    return {k: np.concatenate(v)[:batch] for k, v in rows.items()}


def torch_bf16(module, spec) -> Callable[[dict], dict]:
    """Runner of a bf16 copy of ``module``: float inputs cast to bf16, outputs back to fp32."""
    import torch

    m = copy.deepcopy(module).to(torch.bfloat16).eval()

    def run(x: dict) -> dict:
        args = []
        for n in spec.input_names():
            t = torch.from_numpy(np.ascontiguousarray(x[n]))
            args.append(t.to(torch.bfloat16) if t.is_floating_point() else t)
        with torch.inference_mode():
            out = m(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.float().numpy() for n, o in zip(spec.output_names(), outs)}

    return run


def _runner(c: str, name: str, spec, module, export_dir: Path, manifest: dict) -> tuple[Callable, str] | None:
    """One configuration's runner (``run(feed) -> outputs``, note), or None when that graph was not
    accepted (the reason is logged)."""
    import torch

    from ..runtime.openvino import OvRunner
    from ..runtime.ort import OrtRunner
    from ..semgir.components import run_torch

    entries = manifest.get("components", {}).get(name, {})
    fp32 = export_dir / entries["fp32"]["file"]
    int8 = entries.get("int8") or {}
    why = manifest.get("quantization", {}).get(name, {})
    if c == "torch-fp32":
        def run(x, m=module):
            with torch.inference_mode():
                return run_torch(m, x, spec)
        return run, ""
    if c == "torch-bf16":
        return torch_bf16(module, spec), "bf16 weights"
    if c == "onnxruntime-fp32":
        r = OrtRunner(fp32, device="cpu")
        return (lambda x: r(**x)), ""
    if c == "onnxruntime-int8":
        if not int8.get("file", "").endswith(".int8.onnx"):
            log.warning("%s: no accepted ONNX Runtime INT8 graph: %s", name, why.get("onnxruntime-int8", {}).get("reason"))
            return None
        r = OrtRunner(export_dir / int8["file"], device="cpu")
        return (lambda x: r(**x)), (int8.get("recipe") or {}).get("method", "")
    if c == "openvino-fp32":
        r = OvRunner(fp32, "fp32")
        return (lambda x: r(**x)), ""
    if c == "openvino-bf16":
        r = OvRunner(fp32, "bf16")
        return (lambda x: r(**x)), f"executes {r.execution_precision}"
    if c == "openvino-int8":
        if not int8.get("openvino"):
            log.warning("%s: no accepted OpenVINO INT8 graph: %s", name, why.get("openvino-int8", {}).get("reason"))
            return None
        r = OvRunner(export_dir / int8["openvino"]["file"], "int8")
        return (lambda x: r(**x)), "nncf"
    raise click.BadParameter(f"unknown configuration {c!r}; valid: {', '.join(CONFIGS)}")


def bench_components(names: Iterable[str], batch_sizes: Iterable[int], export_dir: str | Path,
                     tensors: Mapping[str, Sequence], *, models: str = "random", configs: Sequence[str] = CONFIGS,
                     repeats: int = 3, max_seconds: float = 60.0,
                     on_row: Callable[[ComponentRow], None] | None = None) -> list[ComponentRow]:
    """Time every (component, configuration, batch) on held-out calibration tensors; agreement vs
    torch fp32 (always run first). One configuration's runner lives at a time (full-size UNet graphs
    take GBs each)."""
    import gc

    from .. import registry
    from ..calibration.calibset import split_items
    from ..runtime.manifest import load_manifest
    from ..semgir.components import Bundles
    from ..semgir.sources import ModelSource

    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    size = "tiny" if models == "tiny" else "full"
    configs = ["torch-fp32"] + [c for c in configs if c != "torch-fp32"]
    rows = []
    for name in names:
        spec = registry.get(name, size)
        module = Bundles(ModelSource.parse(models)).module(name)
        feeds = list(tensors[name])  # loaded from the calibration cache once per component
        _, val = split_items(feeds, 0.25, seed=0)
        xs = {bs: rebatch(val or feeds, bs) for bs in batch_sizes}
        del feeds
        first = spec.output_names()[0]
        refs: dict[int, np.ndarray] = {}
        for c in configs:
            made = _runner(c, name, spec, module, export_dir, manifest)
            if made is None:
                continue
            run, note = made
            backend, prec = c.rsplit("-", 1)
            for bs, x in xs.items():
                out = run(x)[first]
                ref = refs.setdefault(bs, out)
                diff = float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64))))
                t = measure(lambda run=run, x=x: run(x), items=bs, warmup=1, repeats=repeats, max_seconds=max_seconds)
                row = ComponentRow(name, backend, prec, bs, t.to_dict(), diff, cosine(out, ref), note,
                                   {k: list(v.shape) for k, v in x.items()})
                rows.append(row)
                if on_row:
                    on_row(row)
                log.info("%s %s b%d: %.1f ms, cos %.5f", name, c, bs, t.median_ms, row.cosine)
            del run, made
            gc.collect()
        del module
        gc.collect()
    return rows


# ------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------
PATCH_CONFIGS = ("torch-fp32", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16", "openvino-int8")


def exported_patch_model(export_dir: str | Path) -> str:
    """The shipped patch model (name) whose weights an export's ``patch_cnn`` graph was made from."""
    from ..errors import SemgirError
    from ..patch.detector import resolve_manifest, shipped_models
    from ..runtime.manifest import load_manifest

    src = load_manifest(export_dir)["components"]["patch_cnn"]["fp32"].get("source", {})
    for name in shipped_models():
        meta = json.loads(resolve_manifest(name).read_text())
        if meta.get("version") == src.get("version") and meta.get("weights_sha256") == src.get("weights_sha256"):
            return name
    raise SemgirError(f"{export_dir}: patch_cnn was exported from {src.get('version')!r}, which is not a shipped "
                      f"model ({', '.join(shipped_models())}); the patch benchmark compares against shipped models only")


def patch_detectors(export_dir: str | Path, configs: Sequence[str] = PATCH_CONFIGS) -> dict:
    """{configuration: detector}, each as the scorer loads it (``Scorer(method="patch", backend=...)``);
    torch loads the shipped model whose weights the export's ``patch_cnn`` holds."""
    from ..scorer import Scorer, ScorerConfig

    torch_model = exported_patch_model(export_dir)
    out = {}
    for c in configs:
        backend, prec = c.rsplit("-", 1)
        cfg = ScorerConfig(method="patch", backend=backend, precision=prec,
                           export_dir=None if backend == "torch" else str(export_dir),
                           patch_model=torch_model if backend == "torch" else None)
        out[c] = Scorer(cfg)._impl
    return out


def bench_patch_e2e(export_dir: str | Path, manifest_path: str | Path, configs: Sequence[str] = PATCH_CONFIGS,
                    batch_size: int = 32, n_boot: int = 1000, repeats: int = 5) -> dict:
    """Patch detector per configuration on the held-out split: AUC [CI], decision agreement with torch
    fp32 (all images), and end-to-end images/s at ``batch_size`` (decoded uint8 in, p_ai out)."""
    from ..datasets import load_pixels, read_manifest
    from ..metrics import binary_report
    from ..patch.evaluate import heldout_rows

    dets = patch_detectors(export_dir, configs)
    ref = dets["torch-fp32"]
    m = read_manifest(manifest_path)
    rows, what, verified = heldout_rows(m, ref.manifest)
    imgs, kept = load_pixels(rows)
    y = np.array([r.label for r in kept])
    thr = ref.threshold
    p = {c: d.predict(imgs, batch_size=batch_size) for c, d in dets.items()}
    out = {"data": {"manifest": str(manifest_path), "images": len(kept), "split_verified": verified,
                    "rows": what},
           "batch_size": batch_size, "repeats": repeats, "configs": {}}
    batch = imgs[:batch_size] if len(imgs) >= batch_size else (imgs * batch_size)[:batch_size]
    times: dict[str, list[float]] = {c: [] for c in dets}
    for _ in range(repeats):  # interleaved rounds: load changes on this shared machine hit every config alike
        for c, d in dets.items():
            t0 = time.perf_counter()
            d.predict(batch, batch_size=batch_size)
            times[c].append(1000.0 * (time.perf_counter() - t0))
    for c, d in dets.items():
        med, best = float(np.median(times[c])), float(np.min(times[c]))
        rep = binary_report(y, p[c], thr, n_boot=n_boot, seed=0).to_dict()
        out["configs"][c] = {"images_per_s": 1000.0 * batch_size / med, "median_ms": med, "min_ms": best,
                             "images_per_s_best": 1000.0 * batch_size / best,
                             "roc_auc": rep["roc_auc"], "roc_auc_ci": rep.get("roc_auc_ci"),
                             "accuracy": rep["accuracy"],
                             "decision_agreement": float(np.mean((p[c] >= thr) == (p["torch-fp32"] >= thr))),
                             "max_abs_p_diff": float(np.max(np.abs(p[c] - p["torch-fp32"])))}
        log.info("patch %s: %.0f img/s, AUC %.4f, agreement %.4f", c, 1000.0 * batch_size / med, rep["roc_auc"],
                 out["configs"][c]["decision_agreement"])
    return out


def bench_semgir_e2e(export_dir: str | Path, images: Sequence[np.ndarray], precisions: Sequence[str] = ("fp32", "bf16", "int8"),
                     resolution: int = 256, steps: int = 4, warmup: int = 1, reference_images: int = 0,
                     models: str = "random", batch_sizes: Sequence[int] = (1,)) -> list[dict]:
    """The SemGIR pipeline on ONNX Runtime fp32 (the agreement reference) and OpenVINO per precision, same
    images, at each of ``batch_sizes`` (the scorer's own batching; each batch size warms up on that many
    images first, so no graph is first run at a new shape inside the timing), each row with its per-stage
    ms/image. ``reference_images`` > 0 also times the paper's setting (torch fp32, 50 PNDM steps, CFG 7.5,
    one image at a time; :func:`.e2e.standard_configs`) on that many of the images in the same run, and every
    row gets its speed-up over it (time only: its weights are ``models``, not the export's)."""
    from dataclasses import replace

    from ..scorer import ScorerConfig
    from .e2e import bench_e2e, standard_configs

    base = ScorerConfig(method="semgir", export_dir=str(export_dir), resolution=resolution, steps=steps)
    cfgs = [("onnxruntime", "fp32")] + [("openvino", p) for p in precisions]
    rows, ref, ref_caps = [], None, None
    for bs, (backend, prec) in itertools.product(batch_sizes, cfgs):
        cfg = replace(base, backend=backend, precision=prec, batch_size=bs)
        (r,) = bench_e2e(list(images), [(f"{backend} {prec} batch {bs}", cfg)], warmup=max(warmup, bs))
        p = np.array(r.p_ai)
        caps = r.captions
        ref = p if ref is None else ref  # ONNX Runtime fp32 at the first batch size
        ref_caps = caps if ref_caps is None else ref_caps
        rows.append({"backend": backend, "precision": prec, "batch": bs, "images": r.images,
                     "s_per_image": r.seconds / r.images, "stage_ms_per_image": r.stage_ms_per_image,
                     "max_abs_p_diff": float(np.max(np.abs(p - ref))),
                     "decision_agreement": float(np.mean((p >= 0.5) == (ref >= 0.5))),
                     "captions_identical": sum(a == b for a, b in zip(caps, ref_caps)), "p_ai": p.tolist()})
    if reference_images:
        label, cfg = standard_configs(models, resolution, steps, None)[0]
        (r,) = bench_e2e(list(images[:reference_images]), [(label, cfg)], warmup=0)
        ref_s = r.seconds / r.images
        rows.insert(0, {"backend": "torch", "precision": "fp32", "label": label, "images": r.images,
                        "s_per_image": ref_s, "stage_ms_per_image": r.stage_ms_per_image, "paper_reference": True})
        for row in rows:
            row["speedup_vs_paper_reference"] = ref_s / row["s_per_image"]
    return rows


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [f"# Reduced precision on {m['cpu']} ({m['cores']} cores)", "",
             f"Measured {data['date']} with `{data['command']}`. Load average (1/5/15 min) at the start "
             f"{'/'.join('%.1f' % v for v in data.get('load_average_start', []))}, at the end "
             f"{'/'.join('%.1f' % v for v in data.get('load_average_now', []))} (the machine is shared).", "",
             f"Models: `{data['models']}`. Calibration set `{data['calibration_set']}`. Libraries: "
             + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ".", "",
             "Speed-ups are items/s over torch fp32 eager at the same batch, in the same run. Agreement: cosine and "
             "max |diff| of the component's output against torch fp32 on the same inputs (calibration tensors held out "
             "from the calibration).", ""]
    comps = data.get("components", [])
    if comps:
        sp = {(r["component"], r["batch"], r["backend"], r["precision"]): r["timing"]["items_per_s"] for r in comps}
        best = {(r["component"], r["batch"], r["backend"], r["precision"]): r["timing"]["min_ms"] for r in comps}
        rows = []
        for r in comps:
            key = (r["component"], r["batch"], "torch", "fp32")
            base, base_best = sp.get(key), best.get(key)
            s = r["timing"]["items_per_s"] / base if base else None
            sb = base_best / r["timing"]["min_ms"] if base_best else None
            rows.append((r["component"], r["backend"], r["precision"], r["batch"], f"{r['timing']['median_ms']:.1f}",
                         f"{r['timing']['min_ms']:.1f}", f"{r['timing']['items_per_s']:.2f}",
                         "%.2fx / %.2fx" % (s, sb) if s else "-", f"{r['cosine']:.5f}", f"{r['max_abs_diff']:.3g}",
                         r["note"]))
        lines += _table("Components", ("component", "backend", "precision", "batch", "median ms", "best ms", "items/s",
                                       "speed-up vs torch fp32 (median / best)", "cosine vs fp32", "max abs diff",
                                       "note"), rows)
    q = data.get("quantization")
    if q:
        rows = []
        for name, rec in q.items():
            for key, v in rec.items():
                b, p = key.rsplit("-", 1)
                par = v.get("parity", {})
                rows.append((name, b, p, "yes" if v["accepted"] else "no", f"{par.get('min_cosine', float('nan')):.5f}",
                             f"{par.get('max_abs_diff', float('nan')):.3g}", v.get("reason") or ""))
        lines += _table("Quantization gate (per component, against the fp32 graph)",
                        ("component", "backend", "precision", "accepted", "cosine", "max abs diff", "reason"), rows)
    pe = data.get("patch_e2e")
    if pe:
        rows = []
        for c, v in pe["configs"].items():
            ci = v.get("roc_auc_ci") or [float("nan")] * 2
            rows.append((c, f"{v['images_per_s']:.0f}", f"{v.get('images_per_s_best', float('nan')):.0f}",
                         f"{v['roc_auc']:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]", f"{v['accuracy']:.4f}",
                         f"{100 * v['decision_agreement']:.2f}%", f"{v['max_abs_p_diff']:.2e}"))
        lines += _table("Patch detector end to end",
                        ("configuration", "images/s (median)", "images/s (best)", "ROC-AUC [95% CI]", "accuracy",
                         "decisions = torch fp32", "max abs p diff"), rows,
                        intro=f"{pe['data']['images']} held-out images ({pe['data']['rows']}); images/s end to end "
                              f"(decoded uint8 in, p_ai out: preprocessing included) at batch {pe['batch_size']}, "
                              f"median and best of {pe.get('repeats', '?')} interleaved rounds.")
    se = data.get("semgir_e2e")
    if se:
        agree = [r for r in se if not r.get("paper_reference")]
        # "vs ORT fp32": ONNX Runtime fp32 at the same batch size (results before batch sizes existed: batch 1)
        ort_s = {r.get("batch", 1): r["s_per_image"] for r in agree if r["backend"] == "onnxruntime"}
        base_s = agree[0]["s_per_image"]
        rows = []
        for r in se:
            stages = ", ".join(f"{k} {v:.0f}" for k, v in r.get("stage_ms_per_image", {}).items())
            vs_ref = f"{r['speedup_vs_paper_reference']:.1f}x" if "speedup_vs_paper_reference" in r else "-"
            if r.get("paper_reference"):
                rows.append((r["label"], "-", r["images"], f"{r['s_per_image']:.2f}", vs_ref,
                             f"{base_s / r['s_per_image']:.2f}x", "-", "-", "-", stages))
                continue
            bs = r.get("batch", 1)
            rows.append((f"few-step: {r['backend']} {r['precision']}, batch {bs}", r["precision"], r["images"],
                         f"{r['s_per_image']:.2f}", vs_ref, f"{ort_s.get(bs, base_s) / r['s_per_image']:.2f}x",
                         f"{r['max_abs_p_diff']:.2e}", f"{100 * r['decision_agreement']:.1f}%",
                         f"{r['captions_identical']}/{r['images']}", stages))
        lines += _table("SemGIR end to end per precision",
                        ("configuration", "precision", "images", "s/image", "speed-up vs paper reference",
                         "speed-up vs ORT fp32", "max abs p_ai diff vs ORT fp32", "decisions agreeing",
                         "captions identical", "stage ms/image"), rows)
    return "\n".join(lines)


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence], intro: str | None = None) -> list[str]:
    """A markdown section: title, optional intro, then the table."""
    out = [f"## {title}", ""] + ([intro, ""] if intro else [])
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _versions() -> dict:
    out = {}
    for mod in ("torch", "onnxruntime", "openvino", "nncf"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return out


@click.command("bench-precision")
@click.option("--export-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Export directory with fp32 graphs, quantized by `semgir-engine quantize`.")
@click.option("--components", default="", help="Comma-separated components for the component table ('' for none).")
@click.option("--configs", default=",".join(CONFIGS), show_default=True)
@click.option("--batch-sizes", default="1,8", show_default=True)
@click.option("--models", default="random", show_default=True, metavar="tiny|random|DIR")
@click.option("--calibration-set", "calib", default="aigi-train-128", show_default=True)
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--max-images", type=click.IntRange(1), default=None,
              help="As given to `quantize` (the cached calibration tensors are reused when the settings match).")
@click.option("--resolution", type=click.IntRange(32), default=None)
@click.option("--patch-data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Data manifest for the patch detector end to end (its held-out split).")
@click.option("--semgir-images", type=click.IntRange(0), default=0, show_default=True,
              help="End-to-end SemGIR per precision on this many calibration images (0: skip).")
@click.option("--semgir-precisions", default="fp32,bf16,int8", show_default=True,
              help="OpenVINO precisions of the SemGIR end to end (ONNX Runtime fp32 always runs: the agreement reference).")
@click.option("--paper-reference-images", type=click.IntRange(0), default=0, show_default=True,
              help="Also time the paper's 50-step CFG torch fp32 setting on this many of the images, same run (0: skip).")
@click.option("--semgir-batch-sizes", default="1", show_default=True,
              help="Scorer batch sizes of the SemGIR end to end, comma-separated (`score` batches 8 by default).")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
def bench_precision_cmd(export_dir, components, configs, batch_sizes, models, calib, data_dir, max_images, resolution,
                        patch_data, semgir_images, semgir_precisions, paper_reference_images, semgir_batch_sizes,
                        repeats, threads, out):
    """Component x backend x precision x batch table (speed-up vs torch fp32 eager, agreement) and end to end."""
    import os

    import torch

    from ..calibration.calibset import load_calibration_set
    from ..calibration.tensors import PipelineSettings, calibration_tensors
    from ..runtime.manifest import load_manifest

    torch.set_num_threads(threads)
    os.environ.setdefault("SEMGIR_ORT_THREADS", str(threads))
    os.environ.setdefault("SEMGIR_OV_THREADS", str(threads))
    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    cs = load_calibration_set(calib)
    names = [c.strip() for c in components.split(",") if c.strip()]
    data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(["semgir-engine", *sys.argv[1:]]), "models": models, "calibration_set": cs.ref,
            "machine": machine_info(), "versions": _versions()}

    data["load_average_start"] = os.getloadavg()

    def save():
        data["load_average_now"] = os.getloadavg()  # the machine is shared: how busy it was
        data["quantization"] = load_manifest(export_dir).get("quantization", {})
        (out_p / "results.json").write_text(json.dumps(data, indent=2, default=str))
        (out_p / "README.md").write_text(markdown(data))

    if patch_data:
        data["patch_e2e"] = bench_patch_e2e(export_dir, patch_data, repeats=repeats)
        save()
    if semgir_images:
        ims, _, _ = cs.load_images(data_dir)
        data["semgir_e2e"] = bench_semgir_e2e(
            export_dir, ims[:semgir_images], [p.strip() for p in semgir_precisions.split(",") if p.strip()],
            resolution=resolution or 256, reference_images=paper_reference_images, models=models,
            batch_sizes=[int(b) for b in semgir_batch_sizes.split(",") if b.strip()])
        save()
    if names:
        tensors = calibration_tensors(export_dir, cs, names, data_dir=data_dir,
                                      settings=PipelineSettings(resolution=resolution, max_images=max_images))
        rows: list = []

        def on_row(r):
            rows.append(r.to_dict())
            data["components"] = rows
            save()

        bench_components(names, [int(b) for b in batch_sizes.split(",")], export_dir, tensors, models=models,
                         configs=[c.strip() for c in configs.split(",") if c.strip()], repeats=repeats, on_row=on_row)
    save()
    click.echo(f"wrote {out_p / 'results.json'} and {out_p / 'README.md'}", err=True)
