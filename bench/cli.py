"""`semgir-engine bench`: per-component and end-to-end benchmarks, written as JSON, markdown and a plot."""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path

import click
import numpy as np

log = logging.getLogger(__name__)


def _csv_ints(_ctx, _param, value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter("comma-separated integers, e.g. 1,4,16") from exc


def _synthetic_images(n: int, size: int = 320) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(n):
        base = np.stack([(xx * (i + 2)) % 256, (yy * (i + 3)) % 256, ((xx + yy) * (i + 1)) % 256], -1)
        out.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    return out


def _load_images(folder: str | None, n: int) -> list[np.ndarray]:
    if not folder:
        return _synthetic_images(n)
    from ..images import load_image
    from ..walk import iter_inputs

    paths = sorted(iter_inputs([folder]))[:n]
    return [load_image(p).pixels for p in paths]


def write_report(out: Path, data: dict) -> None:
    """results.json, README.md with the tables, components.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str))
    m = data["machine"]
    lines = [f"# Benchmarks on {m['cpu']} ({m['cores']} cores){', GPU ' + m['gpu'] if m.get('gpu') else ''}", "",
             f"Measured {data['date']} with `{data['command']}`.",
             f"Models: `{data['models']}` (random weights: timing and parity only). Libraries: "
             + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()) + ".", "",
             "Speed-ups are ratios of items/s measured in the same run (this machine is shared and noisy: "
             "absolute times move between runs, ratios hold better).", ""]
    comps = data.get("components", [])
    if comps:
        lines += ["## Components", "",
                  "| component | backend | batch | median ms | p90 ms | items/s | speed-up vs torch | max abs diff | cosine | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        sp = {(s["component"], s["batch"], s["backend"]): s["speedup_vs_torch"] for s in data.get("speedups", [])}
        for r in comps:
            t = r["timing"]
            s = sp.get((r["component"], r["batch"], r["backend"]))
            diff = f"{r['max_abs_diff']:.2e}" if r.get("max_abs_diff") is not None else (r.get("note") or "-")
            cos = f"{r['cosine']:.6f}" if r.get("cosine") is not None else "-"
            lines.append(f"| {r['component']} | {r['backend']} | {r['batch']} | {t['median_ms']:.1f} | {t['p90_ms']:.1f} "
                         f"| {t['items_per_s']:.2f} | {'%.2fx' % s if s else '-'} | {diff} "
                         f"| {cos} | {t['peak_rss_mb'] or 0:.0f} |")
        lines.append("")
    e2e = data.get("e2e", [])
    if e2e:
        lines += ["## End-to-end SemGIR scoring", "",
                  f"{e2e[0]['images']} image(s), "
                  + (f"resolution {e2e[0]['config']['resolution']} px" if e2e[0]['config'].get('resolution')
                     else "the models' native resolution")
                  + f", batch 1, {data.get('e2e_warmup', 1)} warm-up image(s) per configuration.", "",
                  "| configuration | s/image | images/s | speed-up vs paper reference | per-stage ms/image "
                  "| max abs p_ai diff vs few-step torch | decisions agreeing (p >= 0.5) |", "|---|---|---|---|---|---|---|"]
        ref = e2e[0]["images_per_s"] if e2e[0]["config"].get("steps") == 50 else None
        base = next((r for r in e2e if r["config"].get("backend") == "torch" and r["config"].get("steps") != 50), None)
        for r in e2e:
            stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stage_ms_per_image"].items())
            speed = f"{r['images_per_s'] / ref:.1f}x" if ref else "-"
            diff = agree = "-"
            if base is not None and r is not base and r["config"].get("steps") == base["config"].get("steps"):
                a, b = np.array(r["p_ai"], float), np.array(base["p_ai"], float)
                diff = f"{np.abs(a - b).max():.1e}"
                agree = f"{int(((a >= 0.5) == (b >= 0.5)).sum())}/{a.size}"
            lines.append(f"| {r['label']} | {1 / r['images_per_s']:.2f} | {r['images_per_s']:.3f} | {speed} | {stages} "
                         f"| {diff} | {agree} |")
        lines.append("")
    if data.get("patch_accuracy"):
        from .patch_accuracy import markdown as patch_accuracy_md

        lines += patch_accuracy_md(data["patch_accuracy"])
    patch = data.get("patch")
    if patch:
        lines += ["## Patch-shuffle detector (shipped model)", "", "| batch | end-to-end images/s | network images/s |",
                  "|---|---|---|"]
        for b, v in patch["throughput"].items():
            lines.append(f"| {b} | {v['end_to_end_img_s']:.1f} | {v['network_img_s']:.1f} |")
        lines.append("")
    (out / "README.md").write_text("\n".join(lines))
    if comps:
        _plot(out / "components.png", comps)


def _plot(path: Path, comps: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib missing: no plot")
        return
    keys = sorted({(r["component"], r["batch"]) for r in comps})
    backends = sorted({r["backend"] for r in comps})
    fig, ax = plt.subplots(figsize=(max(6, len(keys) * 0.9), 4))
    width = 0.8 / max(len(backends), 1)
    for i, b in enumerate(backends):
        vals = {(r["component"], r["batch"]): r["timing"]["items_per_s"] for r in comps if r["backend"] == b}
        ax.bar([k + i * width for k in range(len(keys))], [vals.get(k, 0) for k in keys], width, label=b)
    ax.set_xticks([k + width * (len(backends) - 1) / 2 for k in range(len(keys))])
    ax.set_xticklabels([f"{c}\nb{bs}" for c, bs in keys], rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("items/s (log)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command("bench")
@click.option("--components", default="all", show_default=True, help="Comma-separated component names, or all / none.")
@click.option("--backends", default="torch,onnxruntime", show_default=True,
              help="Comma-separated: torch, onnxruntime, onnxruntime-fp16, tensorrt-fp16.")
@click.option("--batch-sizes", default="1,8", show_default=True, callback=_csv_ints)
@click.option("--resolution", type=click.Choice(["256", "512"]), default="256", show_default=True)
@click.option("--steps", type=click.IntRange(1), default=4, show_default=True)
@click.option("--models", default="random", show_default=True, metavar="tiny|random|DIR")
@click.option("--caption/--no-caption", default=True, show_default=True,
              help="BLIP captioning as a whole (vision + greedy decoding): torch generate() vs ONNX Runtime.")
@click.option("--e2e/--no-e2e", default=True, show_default=True, help="End-to-end SemGIR scoring.")
@click.option("--reference/--no-reference", default=True, show_default=True,
              help="Include the paper's 50-step CFG torch reference in the end-to-end run (slow).")
@click.option("--e2e-images", type=click.IntRange(1), default=2, show_default=True)
@click.option("--e2e-warmup", type=click.IntRange(0), default=1, show_default=True,
              help="Warm-up images per end-to-end configuration (0 for long 512 px reference runs).")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of images for the end-to-end run (default: synthetic).")
@click.option("--patch/--no-patch", default=True, show_default=True, help="Patch-detector throughput.")
@click.option("--patch-accuracy/--no-patch-accuracy", default=True, show_default=True,
              help="Patch-detector accuracy and parity per backend/precision on --data (skipped if no data).")
@click.option("--data", "data_manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Data manifest for --patch-accuracy (default: ../shared/data/aigi/manifest.csv when present).")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="torch and ORT threads.")
@click.option("--export-dir", type=click.Path(file_okay=False), default=None,
              help="Where ONNX files go (default: OUT/onnx); reused when valid.")
@click.option("--out", type=click.Path(file_okay=False), required=True)
def bench_cmd(components, backends, batch_sizes, resolution, steps, models, caption, e2e, reference, e2e_images, e2e_warmup, images,
              patch, patch_accuracy, data_manifest, repeats, threads, export_dir, out):
    """Benchmark components and end-to-end scoring; write results.json, README.md and components.png."""
    import sys

    import torch

    from .. import registry
    from ..registry import PIPELINE_COMPONENTS
    from ..semgir.components import Bundles
    from ..semgir.sources import ModelSource
    from ..spec import Precision
    from .components import CAPTION_COMPONENTS, bench_components, ensure_exported, speedups
    from .harness import machine_info

    torch.set_num_threads(threads)
    # tiny models have their own 32 px native size (a tiny UNet at 256 px would attend over 16k tokens)
    res = None if models == "tiny" else int(resolution)
    out_p = Path(out)
    export_dir = export_dir or str(out_p / "onnx")
    names = registry.names() if components == "all" else [] if components == "none" else \
        [c.strip() for c in components.split(",") if c.strip()]
    for n in names:
        registry.get(n)  # unknown names fail early, listing the valid ones
    data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(["semgir-engine", *sys.argv[1:]]),
            "models": models, "resolution": res, "machine": machine_info()}
    backend_list = [b.strip() for b in backends.split(",") if b.strip()]
    src = ModelSource.parse(models)
    # every graph first, each in its own process for full-size models, before this process builds any model
    precs = [Precision.FP16 if b.endswith("fp16") else Precision.FP32 for b in backend_list if b.startswith("onnxruntime")]
    precs += [Precision.FP32] if "tensorrt-fp16" in backend_list else []  # TensorRT builds from the fp32 graph
    todo = [(n, p) for n in names for p in precs]
    if "onnxruntime" in backend_list:
        todo += [(n, Precision.FP32) for n in (CAPTION_COMPONENTS if caption else ()) + (PIPELINE_COMPONENTS if e2e else ())]
    for n, p in dict.fromkeys(todo):
        ensure_exported(n, src, export_dir, p, None, models=models)
    bundles = Bundles(src)  # each full-size bundle is built once for timing
    rows = []
    if names:
        rows = bench_components(names, backend_list, batch_sizes, models=models, resolution=res,
                                export_dir=export_dir, repeats=repeats, bundles=bundles)
        data["components"] = [r.to_dict() for r in rows]
        data["speedups"] = speedups(rows)
        write_report(out_p, data)
    if caption:
        from .components import bench_captioning

        rows = rows + bench_captioning(bundles, backend_list, batch_sizes, export_dir=export_dir, models=models,
                                       repeats=repeats)
        data["components"] = [r.to_dict() for r in rows]
        data["speedups"] = speedups(rows)
        write_report(out_p, data)
    exp = None
    if e2e and "onnxruntime" in backend_list:
        from ..export.onnx_export import write_pipeline_assets

        write_pipeline_assets(PIPELINE_COMPONENTS, bundles, export_dir)
        exp = export_dir
    del bundles
    gc.collect()
    if e2e:
        from .e2e import bench_e2e, standard_configs

        cfgs = standard_configs(models, res, steps, exp, include_reference=reference)
        data["e2e_warmup"] = e2e_warmup
        data["e2e"] = [r.to_dict() for r in bench_e2e(_load_images(images, e2e_images), cfgs, warmup=e2e_warmup)]
        write_report(out_p, data)
    if patch:
        from ..patch.detector import PatchDetector
        from .patch_throughput import measure as patch_measure

        det = PatchDetector.load(None)
        data["patch"] = {"version": det.version, "throughput": patch_measure(det, (1, 32))}
    if patch_accuracy:
        from .patch_accuracy import PATCH_BACKENDS, bench_patch_accuracy, default_data_manifest

        manifest = data_manifest or default_data_manifest()
        if manifest is None:
            log.warning("no data manifest (--data, or ../shared/data/aigi/manifest.csv): patch accuracy skipped")
        else:
            pb = ["torch"] + [b for b in backend_list if b in PATCH_BACKENDS and b != "torch"]
            data["patch_accuracy"] = bench_patch_accuracy(manifest, export_dir, pb, progress=True)
    write_report(out_p, data)
    click.echo(f"wrote {out_p / 'results.json'} and {out_p / 'README.md'}", err=True)
