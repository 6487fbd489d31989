"""`semgir-engine report`: one self-contained HTML page that shows a scoring run to a person.

Per image: the candidate and its regeneration side by side (thumbnails embedded as ``data:`` URIs,
or linked beyond ``embed_limit`` rows), caption, ``p_ai``, verdict, deciding stage, errors and
notes; sortable and filterable; paginated in the browser so 10,000 rows open fast. Figures
(matplotlib, embedded): ``p_ai`` histogram, cascade routing, and with labels the ROC curve,
confusion matrix and per-source figures. The run's metadata comes from ``RESULTS.meta.json``
(written by `score --out`). The page is rendered from a jinja2 template and needs no network.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..deps import require
from ..runmeta import read_run_meta
from .data import Labels, load_results, read_labels, report_rows

log = logging.getLogger(__name__)

PAGE_SIZES = (25, 100, 500, 0)  # 0 = all


@dataclass(frozen=True)
class ReportSummary:
    path: Path
    rows: int
    embedded_images: int
    plots: list[str]
    bytes: int


def _figures(rows: list[dict], labelled: bool) -> tuple[dict[str, str], list[dict]]:
    from . import plots

    figs = {"histogram": plots.histogram(rows, None)}
    st = plots.stages(rows)
    if st:
        figs["stages"] = st
    table: list[dict] = []
    if labelled:
        sel = [r for r in rows if r["truth"] and r["verdict"] in ("ai", "real")]
        scored = [r for r in rows if r["truth"] and r["p_ai"] is not None]
        if scored and len({r["truth"] for r in scored}) == 2:
            y = np.array([r["truth"] == "ai" for r in scored], int)
            figs["roc"] = plots.roc(y, np.array([r["p_ai"] for r in scored]), f"{len(scored)} labelled images")
        if sel:
            figs["confusion"] = plots.confusion(np.array([r["truth"] == "ai" for r in sel], int),
                                                np.array([r["verdict"] == "ai" for r in sel], int))
            figs["per_source"], table = plots.per_source(rows)
    return figs, table


def build_report(results: str | os.PathLike, out: str | os.PathLike, *,
                 labels: str | os.PathLike | list | tuple | None = None,
                 title: str | None = None, thumb_px: int = 160, embed_limit: int = 2000,
                 page_size: int = 100) -> ReportSummary:
    """Write the HTML report of a results file (jsonl, csv or parquet) to ``out``."""
    jinja2 = require("jinja2", "the HTML report")
    res_path = Path(results)
    results_rows = load_results(res_path)
    lab: Labels | None = read_labels(labels) if labels else None
    meta = read_run_meta(res_path) or {}
    base = Path(meta["cwd"]) if meta.get("cwd") and Path(meta["cwd"]).is_dir() else Path.cwd()  # relative paths
    rows = report_rows(results_rows, lab, thumb_px=thumb_px, embed_limit=embed_limit, base=base)
    matched = sum(r["truth"] is not None for r in rows)
    if lab is not None and matched < len(rows):
        log.warning("%d of %d rows have no label in %s", len(rows) - matched, len(rows), lab.manifest)
    figs, per_source = _figures(rows, lab is not None and matched > 0)
    counts = {
        "rows": len(rows), "errors": sum(r["verdict"] == "error" for r in rows),
        "ai": sum(r["verdict"] == "ai" for r in rows), "real": sum(r["verdict"] == "real" for r in rows),
        "no_verdict": sum(r["verdict"] == "no verdict" for r in rows),
        "regenerated": sum(r["stage"] in ("semgir",) for r in rows), "labelled": matched,
        "random_weights": sum(bool(r["random_weights"]) for r in rows),
    }
    env = jinja2.Environment(loader=jinja2.PackageLoader("semgir_engine.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters["pct"] = lambda v: "n/a" if v is None or v != v else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v: "n/a" if v is None or v != v else f"{v:.3f}"
    html = env.get_template("report.html.j2").render(
        title=title or f"semgir-engine report: {res_path.name}", results=str(res_path),
        labels=lab.manifest if lab is not None else "",
        created=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), counts=counts, figures=figs,
        per_source=per_source, meta=meta, meta_json=json.dumps(meta, indent=2, default=str),
        rows_json=json.dumps(rows, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c"),
        page_size=page_size, page_sizes=PAGE_SIZES, labelled=lab is not None,
        stage_counts=(meta.get("summary") or {}).get("stage_counts") or {},
        band=(meta.get("summary") or {}).get("cascade_band"))
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out_path)
    embedded = sum(bool(r["img"] and r["img"].startswith("data:")) + bool(r["regen"] and r["regen"].startswith("data:"))
                   for r in rows)
    return ReportSummary(out_path, len(rows), embedded, sorted(figs), out_path.stat().st_size)


__all__ = ["ReportSummary", "build_report"]
