"""The report's figures, drawn with matplotlib and embedded as PNG ``data:`` URIs."""

from __future__ import annotations

import base64
import io
from collections import Counter

import numpy as np

from ..deps import require
from ..metrics import balanced_accuracy, roc_auc


def _plt():
    mpl = require("matplotlib", "report plots")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _uri(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram(rows: list[dict], threshold: float | None) -> str:
    """``p_ai`` histogram, split by true class when labels are known, else by verdict."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    scored = [r for r in rows if r["p_ai"] is not None]
    key = "truth" if any(r["truth"] for r in scored) else "verdict"
    groups = sorted({r[key] or "unlabelled" for r in scored})
    bins = np.linspace(0, 1, 41)
    for g in groups:
        ax.hist([r["p_ai"] for r in scored if (r[key] or "unlabelled") == g], bins=bins, alpha=0.6,
                label=f"{key} {g} ({sum((r[key] or 'unlabelled') == g for r in scored)})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("p_ai")
    ax.set_ylabel("images")
    ax.set_title(f"p_ai of {len(scored)} scored images", fontsize=9)
    ax.legend(fontsize=7)
    return _uri(fig)


def roc(y: np.ndarray, p: np.ndarray, title: str) -> str:
    from ..patch.evaluate import plot_roc

    buf = io.BytesIO()
    plot_roc({"all": {"y": y, "p": p}}, buf, title)  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def confusion(y: np.ndarray, pred: np.ndarray) -> str:
    plt = _plt()
    m = np.array([[np.sum((y == t) & (pred == q)) for q in (0, 1)] for t in (0, 1)])
    fig, ax = plt.subplots(figsize=(3.4, 3.0))
    ax.imshow(m, cmap="Blues")
    for t in (0, 1):
        for q in (0, 1):
            ax.text(q, t, str(m[t, q]), ha="center", va="center", color="white" if m[t, q] > m.max() / 2 else "black")
    ax.set_xticks([0, 1], ["real", "ai"])
    ax.set_yticks([0, 1], ["real", "ai"])
    ax.set_xlabel("verdict")
    ax.set_ylabel("truth")
    ax.set_title(f"confusion ({len(y)} images with a verdict)", fontsize=9)
    return _uri(fig)


def per_source(rows: list[dict]) -> tuple[str, list[dict]]:
    """Balanced accuracy and AUC per source (labelled rows with a verdict), as a figure and a table."""
    plt = _plt()
    table = []
    for src in sorted({r["source"] for r in rows if r["source"]}):
        sel = [r for r in rows if r["source"] == src and r["verdict"] in ("ai", "real")]
        if not sel:
            continue
        y = np.array([r["truth"] == "ai" for r in sel], int)
        pred = np.array([r["verdict"] == "ai" for r in sel], int)
        p = np.array([r["p_ai"] for r in sel], float)
        c = Counter(r["truth"] for r in sel)
        table.append({"source": src, "n": len(sel), "real": c["real"], "ai": c["ai"],
                      "accuracy": float(np.mean(y == pred)), "balanced_accuracy": balanced_accuracy(y, pred),
                      "auc": roc_auc(y, p), "regenerated": sum(r["stage"] == "semgir" for r in sel)})
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.45 * max(len(table), 1)))
    names = [t["source"] for t in table]
    ax.barh(np.arange(len(table)) - 0.2, [t["accuracy"] for t in table], height=0.4, label="accuracy")
    ax.barh(np.arange(len(table)) + 0.2, [np.nan_to_num(t["auc"]) for t in table], height=0.4, label="ROC-AUC")
    ax.set_yticks(np.arange(len(table)), [f"{n} ({t['n']})" for n, t in zip(names, table)], fontsize=7)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("per source", fontsize=9)
    return _uri(fig), table


def stages(rows: list[dict]) -> str | None:
    """Cascade only: stage-1 p_ai of every image, coloured by the stage that decided."""
    cas = [r for r in rows if r["p_patch"] is not None]
    if not cas:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    bins = np.linspace(0, 1, 41)
    for st in ("patch", "semgir"):
        v = [r["p_patch"] for r in cas if r["stage"] == st]
        ax.hist(v, bins=bins, alpha=0.7, label=f"decided by {st} ({len(v)})")
    ax.set_xlabel("patch-detector p_ai (stage 1)")
    ax.set_ylabel("images")
    ax.set_title("cascade routing", fontsize=9)
    ax.legend(fontsize=7)
    return _uri(fig)
