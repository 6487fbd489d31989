"""Cascade vs always-regenerate: routing quality on real data, and throughput measured in one run.

Two parts, both written to ``--out`` (results.json, README.md, tradeoff.png):

1. Routing on real labelled data (the trained patch detector, calibrated ``p_ai``): bands fitted on
   a stratified 70% of the fit manifest (default aigi2: images the shipped detector never saw),
   evaluated on the other 30% and on every other manifest given. The reference is the labels, i.e.
   a perfect second stage: agreement with it is the cascade's accuracy when SemGIR is right.
2. Timing: ``--images`` images drawn (seeded) from the held-out part, scored by always-regenerate
   (SemGIR on every image) and by the cascade with each band, on one load of the models
   (``--models random``: full-size architectures with random weights), same process, same images.

Usage (the committed run)::

    python -m semgir_engine.bench.cascade --models random --resolution 256 --images 8 \\
        --fit-manifest ../shared/data/aigi2/manifest.csv --manifest ../shared/data/aigi/manifest.csv \\
        --out bench/results/cascade
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np

log = logging.getLogger(__name__)

SETTINGS = (  # (name, criterion tolerance on agreement, or a regeneration budget)
    ("agreement >= 99%", {"tolerance": 0.01}),
    ("agreement >= 95%", {"tolerance": 0.05}),
    ("budget 50%", {"max_regen_fraction": 0.5}),
    ("budget 20%", {"max_regen_fraction": 0.2}),
)


def _score(manifest: str, progress: bool) -> dict:
    from ..calibration.cli import score_manifest_rows
    from ..datasets import read_manifest

    man = read_manifest(manifest)
    rows, p, shas, version, threshold = score_manifest_rows(list(man.rows), None, progress=progress)
    return {"manifest": str(man.path), "rows": rows, "p": p, "y": np.array([r.label for r in rows]),
            "version": version, "threshold": threshold}


def routing(fit: dict, others: list[dict], holdout: float = 0.3) -> tuple[list[dict], dict, np.ndarray]:
    """Fit each setting on the fit split, evaluate on the held-out split and the other sets."""
    from ..calibration.cascade import band_stats, fit_cascade_band
    from ..datasets import stratified_split

    _, val = stratified_split(fit["rows"], holdout, seed=0)
    held = {str(r.path) for r in val}
    mask = np.array([str(r.path) in held for r in fit["rows"]])
    out, bands = [], {}
    for name, kw in SETTINGS:
        band = fit_cascade_band(fit["p"], fit["threshold"], labels=fit["y"], holdout_mask=mask,
                                first_stage_version=fit["version"], data={"manifest": fit["manifest"]}, **kw)
        bands[name] = band
        row = {"setting": name, "lo": band.lo, "hi": band.hi, "fit": asdict(band.fit), "holdout": asdict(band.holdout)}
        row["others"] = {Path(o["manifest"]).parent.name: asdict(band_stats(band, o["p"], o["threshold"], o["y"], o["y"]))
                         for o in others}
        out.append(row)
    curve = bands[SETTINGS[0][0]].curve
    return out, {"bands": bands, "curve": curve}, mask


def timing(cfg_kw: dict, images: list, names: list[str], bands: dict) -> dict:
    """Always-regenerate and every band on one loaded cascade; wall-clock seconds per configuration."""
    from ..cascade import CascadeScorer
    from ..scorer import ScorerConfig
    from ..semgir.pipeline import StageTimer

    cas = CascadeScorer(ScorerConfig(method="cascade", cascade_band="0,1", **cfg_kw), StageTimer())
    warm = cas.semgir.score_decoded(images[:1], names[:1])  # first-call overheads out of the timings
    assert warm[0].ok, warm[0].error
    t0 = time.perf_counter()
    always = cas.semgir.score_decoded(images, names)
    t_always = time.perf_counter() - t0
    ref = np.array([r.p_ai for r in always])
    thr = cas.semgir.threshold
    runs = [{"setting": "always regenerate", "seconds": t_always, "images_per_s": len(images) / t_always,
             "regenerated": len(images), "agreement": 1.0, "max_abs_dp_semgir": 0.0}]
    for name, band in bands.items():
        c = cas.rerouted(band, band.max_regen_fraction)
        log.info("timing %s", name)
        t0 = time.perf_counter()
        rows = c.score_decoded(images, names)
        dt = time.perf_counter() - t0
        dec = np.array([(r.p_ai >= (thr if r.stage == "semgir" else cas.threshold)) for r in rows])
        regen = np.array([r.stage == "semgir" for r in rows])
        dps = [abs(r.p_semgir - a) for r, a in zip(rows, ref) if r.p_semgir is not None]
        runs.append({"setting": name, "seconds": dt, "images_per_s": len(images) / dt, "regenerated": int(regen.sum()),
                     "agreement": float((dec == (ref >= thr)).mean()),
                     "max_abs_dp_semgir": float(max(dps)) if dps else None})
    cas.close()
    return {"runs": runs, "semgir_version": cas.semgir.version, "patch_version": cas.patch.version}


def markdown(data: dict) -> str:
    L = [f"# Cascade vs always-regenerate ({data['machine']})", "", f"Measured {data['date']} with:", "",
         "```", data["command"], "```", "",
         "## Routing on real data (trained patch detector; reference = labels, a perfect SemGIR)", "",
         f"Bands fitted on 70% of `{data['fit_manifest']}` (stratified by source and label, seed 0), evaluated on "
         "the other 30% (held out) and on the other sets. Against a perfect second stage, *agreement* is the "
         "cascade's accuracy: every patch-detector error left outside the band counts.", "",
         "| setting | band | held-out: regenerated | held-out: agreement | held-out: balanced acc. |"
         + "".join(f" {k}: regenerated | {k}: agreement |" for k in data["routing"][0]["others"]),
         "|---|---|---|---|---|" + "---|---|" * len(data["routing"][0]["others"])]
    for r in data["routing"]:
        h = r["holdout"]
        cells = [f"{100 * o['regen_fraction']:.1f}% | {100 * o['agreement']:.1f}%" for o in r["others"].values()]
        L.append(f"| {r['setting']} | [{r['lo']:.3f}, {r['hi']:.3f}] | {100 * h['regen_fraction']:.1f}% "
                 f"({h['n']} images) | {100 * h['agreement']:.1f}% | {h['balanced_accuracy']:.3f} |"
                 + "".join(f" {c} |" for c in cells))
    t = data["timing"]
    L += ["", f"## Throughput, same run ({t['images']} held-out images, {t['config']})", "",
          f"SemGIR `{t['semgir_version']}` (random weights), patch detector `{t['patch_version']}`. One warm-up "
          "image first; the same decoded images for every row.", "",
          "| configuration | regenerated | seconds | images/s | speed-up | decisions agreeing with always-regenerate "
          "| max abs p_semgir diff |", "|---|---|---|---|---|---|---|"]
    base = t["runs"][0]["images_per_s"]
    for r in t["runs"]:
        dp = "-" if r["max_abs_dp_semgir"] is None else f"{r['max_abs_dp_semgir']:.1e}"
        L.append(f"| {r['setting']} | {r['regenerated']}/{t['images']} | {r['seconds']:.1f} | {r['images_per_s']:.3f} "
                 f"| {r['images_per_s'] / base:.2f}x | {100 * r['agreement']:.0f}% | {dp} |")
    L += ["", "Projected on the whole held-out split from the measured per-image costs "
          f"(stage 1 {1000 * t['patch_s_per_image']:.1f} ms, SemGIR {t['semgir_s_per_image']:.2f} s):", "",
          "| setting | regenerated (held out) | projected speed-up over always-regenerate | agreement with a perfect "
          "SemGIR |", "|---|---|---|---|"]
    for r in data["routing"]:
        f = r["holdout"]["regen_fraction"]
        sp = t["semgir_s_per_image"] / (t["patch_s_per_image"] + f * t["semgir_s_per_image"])
        L.append(f"| {r['setting']} | {100 * f:.1f}% | {sp:.2f}x | {100 * r['holdout']['agreement']:.1f}% |")
    L += ["", "## What this says", "", *data["notes"], ""]
    return "\n".join(L)


@click.command()
@click.option("--models", default="random", show_default=True)
@click.option("--resolution", type=int, default=256, show_default=True)
@click.option("--steps", type=int, default=4, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--images", "n_images", type=int, default=8, show_default=True)
@click.option("--fit-manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--manifest", "manifests", multiple=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
def main(models, resolution, steps, batch_size, n_images, fit_manifest, manifests, threads, out):
    import torch

    from ..images import load_image

    load0 = os.getloadavg()[0]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    fit = _score(fit_manifest, progress=False)
    others = [_score(m, progress=False) for m in manifests]
    rout, fitted, mask = routing(fit, others)
    held = [r for r, m in zip(fit["rows"], mask) if m]
    rng = np.random.default_rng(0)
    pick = [held[i] for i in sorted(rng.choice(len(held), size=min(n_images, len(held)), replace=False))]
    decoded = [load_image(r.path) for r in pick]
    names = [str(r.path) for r in pick]
    cfg_kw = dict(models=models, resolution=resolution, steps=steps, batch_size=batch_size)
    # stage-1 cost per image, measured on the same images
    from ..scorer import Scorer, ScorerConfig

    with Scorer(ScorerConfig(method="patch")) as ps:
        ps.score_decoded(decoded, names)
        t0 = time.perf_counter()
        ps.score_decoded(decoded, names)
        patch_s = (time.perf_counter() - t0) / len(decoded)
    tim = timing(cfg_kw, decoded, names, fitted["bands"])
    tim.update(images=len(decoded), config=", ".join(f"{k} {v}" for k, v in cfg_kw.items()), patch_s_per_image=patch_s,
               semgir_s_per_image=tim["runs"][0]["seconds"] / len(decoded), paths=names)
    notes = [
        "- SemGIR runs with random weights here: its timing is real, its decisions are not. The *agreement* "
        "column of the throughput table compares the cascade's decisions with random SemGIR decisions, so on "
        "rows the patch detector decides it is a coin toss, not a quality measure. Rows both paths "
        "regenerate agree exactly (same seed per image, batch-invariant pipeline: see the p_semgir column).",
        "- The meaningful agreement is the routing table's, against the labels (a perfect SemGIR). On images "
        "the shipped patch detector has not seen (aigi2) it is no better than chance (with nothing regenerated, "
        f"the cascade agrees with the labels on {100 * fitted['curve'][0][1]:.1f}% of the fit images), so keeping >= 99% "
        "agreement means regenerating nearly everything: the cascade cannot reach the issue's 5x at 99% with "
        "this first stage. A regeneration budget buys speed at a stated, measured loss of agreement.",
        *[f"- On {k} the >= 99% band regenerates {100 * o['regen_fraction']:.1f}% with "
          f"{100 * o['agreement']:.1f}% agreement with the labels (aigi is the shipped detector's own training "
          "pool: in-pool, optimistic)." for k, o in rout[0]["others"].items()],
        f"- Load: the 1-minute load average was {load0:.1f} when the run started and {os.getloadavg()[0]:.1f} "
        f"when it ended, on {os.cpu_count()} cores. Above the core count, other processes shared the CPU and "
        "the wall-clock rows of the throughput table are dominated by that contention (they can differ from "
        "each other by more than the regeneration counts explain); the projected table uses only the shares "
        "regenerated and the ratio of per-image costs, and is the better estimate of the speed-up.",
        "- A stronger first stage (or a trained SemGIR whose own decisions are the reference: "
        "`calibrate cascade --semgir-results`) is what would make the band narrow.",
    ]
    data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.processor() or platform.machine()}, {threads} threads",
            "command": "python -m semgir_engine.bench.cascade " + " ".join(sys.argv[1:]),
            "fit_manifest": fit_manifest, "routing": rout, "curve": fitted["curve"], "timing": tim, "notes": notes}
    (outp / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (outp / "README.md").write_text(markdown(data))
    _plot(outp / "tradeoff.png", fit, mask)
    click.echo((outp / "README.md").read_text())


def _plot(path: Path, fit: dict, mask: np.ndarray) -> None:
    """Held-out agreement with a perfect SemGIR against the share regenerated, for budget-fitted bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..calibration.cascade import band_stats, fit_band

    fs, hs = [], []
    for f in np.linspace(0, 1, 21):
        lo, hi, _ = fit_band(fit["p"][~mask], fit["threshold"], labels=fit["y"][~mask], max_regen_fraction=float(f))
        st = band_stats((lo, hi), fit["p"][mask], fit["threshold"], fit["y"][mask])
        fs.append(st.regen_fraction)
        hs.append(st.agreement)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(fs, hs, "o-")
    ax.set_xlabel("share regenerated (held out)")
    ax.set_ylabel("agreement with a perfect SemGIR")
    ax.axhline(0.99, color="grey", ls=":", lw=1)
    ax.set_title("cascade trade-off (bands fitted per budget)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    main()
