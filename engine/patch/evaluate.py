"""Evaluate a patch-shuffle model per source, under perturbations, beside the spectrum baseline.

Which rows are scored follows from the model's own manifest (:func:`plan_rows`): every row that is
not one of the model's training images. Models that record their training files' hashes (the
fused default) are checked file by file, so any manifest, including one the model never saw, is
scored on all its rows except those files; older models score a source they never saw in full and
a source of their training pool on the validation split (re-derived from the stored seed and
fraction, checked against the stored hash).

For every source and perturbation (clean, JPEG quality 75, 0.5x bilinear resize) the result holds
accuracy at the model's threshold, balanced accuracy, ROC-AUC and AP with bootstrap 95% intervals
and counts, for the patch model in a fixed (identity) patch order, the same model averaged over K
seeded patch shuffles, and the baseline trained on the model's training split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..datasets import Manifest, Row, load_pixels, read_manifests
from ..errors import SemgirError
from ..metrics import binary_report, roc_curve
from .augment import AugmentConfig, augment, jpeg_roundtrip, rescale

log = logging.getLogger(__name__)

CONDITIONS = ("clean", "jpeg75", "resize0.5")


class EvaluationError(SemgirError):
    """The evaluation request cannot be served (no rows, unknown condition...)."""


def perturb(img: np.ndarray, condition: str) -> np.ndarray:
    """Apply a named test-time perturbation to a uint8 RGB image."""
    if condition == "clean":
        return img
    if condition == "jpeg75":
        return jpeg_roundtrip(img, 75)
    if condition == "resize0.5":
        return rescale(img, 0.5)
    raise EvaluationError(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")


@dataclass(frozen=True)
class EvalConfig:
    sources: tuple[str, ...] = ()  # empty: every source of the manifest
    conditions: tuple[str, ...] = CONDITIONS
    k_shuffles: int = 8
    n_boot: int = 1000
    seed: int = 0
    baseline: bool = True
    batch_size: int = 64
    threads: int = 2
    target_fpr: float | None = None  # threshold from the model's calibration split at this FPR


def _val_hash(rows: Sequence[Row], base: Path) -> str:
    return hashlib.sha256("\n".join(sorted(str(r.path.relative_to(base)) for r in rows)).encode()).hexdigest()


def model_splits(manifest: Manifest, meta: dict) -> tuple[list[Row], list[Row], set[str], bool]:
    """(train rows, val rows, held-out sources, split_verified) of a trained model on this manifest."""
    from .train import TrainConfig, split_rows

    tc = meta["training"]["config"]
    cfg = TrainConfig(val_fraction=tc["val_fraction"], seed=tc["seed"],
                      holdout_sources=tuple(tc["holdout_sources"]))
    known = set(manifest.sources)
    cfg = TrainConfig(val_fraction=cfg.val_fraction, seed=cfg.seed,
                      holdout_sources=tuple(s for s in cfg.holdout_sources if s in known))
    train_rows, val_rows, _ = split_rows(manifest, cfg)
    verified = (manifest.sha256 == meta["data"]["manifest_sha256"]
                and _val_hash(val_rows, manifest.path.parent) == meta["data"].get("val_paths_sha256"))
    return train_rows, val_rows, set(cfg.holdout_sources), verified


def heldout_rows(manifest: Manifest, meta: dict) -> tuple[list[Row], str, bool]:
    """``(rows, what they are, verified)``: the rows of ``manifest`` a model's weights were never fitted
    on, for accuracy checks of its variants (reduced precision) and as what calibration sets avoid.

    * Models that record their files (the fused default): every row that is not a training file,
      plus its calibration split (held out of the weights, used for its temperature and threshold).
    * Older models: the validation split of their pool and the sources held out of training.
    """
    trained = meta.get("data", {}).get("train_files_sha256")
    if trained is not None:
        from ..hashing import sha256_file

        trained, calib = set(trained), set(meta["data"].get("calibration_files_sha256", ()))

        def short_sha(path) -> str:
            try:
                return sha256_file(path)[:16]
            except OSError:
                return ""  # unreadable: kept (it becomes an error row where it is scored)

        rows = [r for r in manifest.rows if (h := short_sha(r.path)) not in trained or h in calib]
        return rows, "the model's calibration split + files it never trained on", True
    _, val_rows, held_out, verified = model_splits(manifest, meta)
    rows = list(val_rows) + [r for r in manifest.rows if r.source in held_out]
    return rows, "validation split of the training pool" + (f" + {sorted(held_out)}" if held_out else ""), verified


def plan_rows(manifest: Manifest, meta: dict) -> tuple[dict[str, tuple[list[Row], str]], list[Row], bool, int]:
    """Which rows of ``manifest`` may be scored for a model: ``({source: (rows, split label)},
    the model's training rows found here, split_verified, n excluded)``.

    * A model that records the content hashes of its training files (``data.train_files_sha256``,
      the fused default and later): every row whose file is not one of them is scored, whatever
      the manifest; the training files are excluded and counted.
    * Older models: a source the model never trained on is scored in full; a source of its training
      pool is scored on the validation split re-derived from the stored seed and fraction (verified
      against the stored hash when the manifest is the one it was trained on).
    """
    trained = meta.get("data", {}).get("train_files_sha256")
    if trained is not None:
        from ..hashing import sha256_file

        known = set(trained)
        plan: dict[str, tuple[list[Row], str]] = {}
        train_rows: list[Row] = []
        for r in manifest.rows:
            try:
                h = sha256_file(r.path)[:16]
            except OSError:
                h = ""  # unreadable: scored (it becomes an error row in load_pixels)
            if h in known:
                train_rows.append(r)
            else:
                plan.setdefault(r.source, ([], "not in the model's training files"))[0].append(r)
        return plan, train_rows, True, len(train_rows)
    pool_sources = set(meta.get("data", {}).get("train_counts", {}))
    if manifest.sha256 == meta.get("data", {}).get("manifest_sha256") or set(manifest.sources) & pool_sources:
        train_rows, val_rows, held_out, verified = model_splits(manifest, meta)
    else:
        train_rows, val_rows, held_out, verified = [], [], set(manifest.sources), True
    held_out = held_out | (set(manifest.sources) - pool_sources if pool_sources else set())
    plan = {}
    for r in manifest.rows:
        if r.source in held_out:
            plan.setdefault(r.source, ([], "unseen source (held out of training)"))[0].append(r)
    for r in val_rows:
        if r.source not in held_out:
            plan.setdefault(r.source, ([], "in-pool validation split"))[0].append(r)
    train_rows = [r for r in train_rows if r.source not in held_out]
    excluded = sum(1 for r in manifest.rows if r.source not in held_out) - sum(
        len(v[0]) for k, v in plan.items() if k not in held_out)
    return plan, train_rows, verified, excluded


def _scores(detector, images: Sequence[np.ndarray], k: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(p fixed order, p mean over K shuffles): the CNN runs once, the head K+1 times."""
    import torch

    from .preprocess import prepare_batch

    model = detector.model.eval()
    z0, zk = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(prepare_batch(images[i : i + batch_size], detector.preprocess))
            if hasattr(model, "patch_features"):  # the CNN runs once, the head K+1 times
                f = model.patch_features(x)
                z0.append(model.head_logits(f, 0).numpy())
                zk.append(model.head_logits(f, k, seed=0).numpy() if k > 0 else z0[-1])
            else:
                z0.append(model.predict_logits(x).numpy())
                zk.append(model.predict_logits(x, k_shuffles=k).numpy() if k > 0 else z0[-1])
    z0 = np.concatenate(z0).astype(np.float64) if z0 else np.zeros(0)
    zk = np.concatenate(zk).astype(np.float64) if zk else np.zeros(0)
    return detector.calibrate(z0), detector.calibrate(zk)


def evaluate(model_path: str | Path | None, manifest_path: str | Path, out_dir: str | Path | None = None,
             cfg: EvalConfig = EvalConfig(), *, progress: bool = False) -> dict:
    """Evaluate one model on a manifest; write ``metrics.json``, ``roc.png`` and ``summary.md`` to ``out_dir``."""
    import torch

    from ..calibration import choose_threshold, sigmoid
    from .baseline import SpectrumBaseline
    from .detector import PatchDetector

    torch.set_num_threads(cfg.threads)
    for c in cfg.conditions:
        if c not in CONDITIONS:
            raise EvaluationError(f"unknown condition {c!r}; valid: {', '.join(CONDITIONS)}")
    det = PatchDetector.load(model_path)
    if cfg.target_fpr is not None:
        det.set_target_fpr(cfg.target_fpr)
    meta = det.manifest
    manifest = read_manifests(manifest_path)
    plan, train_rows, verified, excluded = plan_rows(manifest, meta)
    if not verified:
        log.warning("the model's pool sources are in this manifest but it is not the manifest the model was "
                    "trained on: the re-derived validation split may include training images")
    held_out = {s for s, (_, split) in plan.items() if not split.startswith("in-pool")}
    val_rows = [r for s, (rows, split) in plan.items() if split.startswith("in-pool") for r in rows]
    sources = list(cfg.sources) or manifest.sources
    unknown = [s for s in sources if s not in manifest.sources]
    if unknown:
        raise EvaluationError(f"unknown source(s) {unknown}; valid: {', '.join(manifest.sources)}")

    baseline = base_thr = None
    aug_cfg = meta.get("training", {}).get("config", {}).get("augment")
    if cfg.baseline and not (train_rows and val_rows and aug_cfg):
        log.info("spectrum baseline skipped: it is fitted on the model's training rows and validated on its "
                 "in-pool split, and this manifest has %s", "no training rows" if not train_rows else "no split")
    elif cfg.baseline:
        log.info("fitting the spectrum baseline on the model's training split (%d images)", len(train_rows))
        tr_imgs, tr_rows = load_pixels(train_rows, progress=progress)
        aug = AugmentConfig.from_dict(aug_cfg)
        rng = np.random.default_rng(cfg.seed)
        tr_aug = [augment(im, det.preprocess.size, rng, aug) for im in tr_imgs]
        del tr_imgs
        baseline = SpectrumBaseline(preprocess=det.preprocess).fit(tr_aug, [r.label for r in tr_rows], cfg.seed)
        del tr_aug
        v_imgs, v_rows = load_pixels(val_rows, progress=progress)
        pv = sigmoid(baseline.decision_function(v_imgs))
        base_thr = choose_threshold(pv, [r.label for r in v_rows])

    result: dict = {
        "model": {"version": det.version, "manifest": str(det.manifest_path), "holdout_sources": sorted(held_out),
                  "threshold": det.threshold, "temperature": det.temperature, "target_fpr": det.target_fpr,
                  "calibration": det.calibrator.method},
        "data": {"manifest": str(manifest.path), "manifest_sha256": manifest.sha256, "split_verified": verified,
                 "excluded_training_rows": excluded},
        "config": {**asdict(cfg), "sources": sources},
        "baseline": {"threshold": base_thr, "bins": baseline.bins if baseline else None},
        "sources": {},
    }
    curves: dict[str, dict] = {}
    pooled: dict[str, dict[str, list]] = {}
    n_trained = Counter(r.source for r in train_rows)
    card_loso = meta.get("figures", {}).get("loso", {}).get("sources", {})
    result["card_loso"] = {}
    for src in sources:
        rows, split = plan.get(src, ([], "training rows only"))
        if not rows:
            loso = card_loso.get(src)
            if loso is not None:
                result["card_loso"][src] = {**loso, "jpeg75_auc": meta["figures"].get("loso_jpeg75", {})
                                            .get("sources", {}).get(src, {}).get("auc")}
            result["data"].setdefault("training_only_sources", {})[src] = n_trained[src]
            log.warning("no rows to evaluate for %s: all %d of its rows are files the model was trained or "
                        "calibrated on%s", src, n_trained[src],
                        f"; its card's leave-one-source-out AUC there is {loso['auc']:.3f}" if loso else "")
            continue
        imgs, rows = load_pixels(rows, progress=progress)
        y = np.array([r.label for r in rows])
        entry = {"split": split, "conditions": {}}
        for cond in cfg.conditions:
            pim = [perturb(im, cond) for im in imgs]
            p0, pk = _scores(det, pim, cfg.k_shuffles, cfg.batch_size)
            res = {
                "patch": binary_report(y, p0, det.threshold, n_boot=cfg.n_boot, seed=cfg.seed).to_dict(),
                f"patch_k{cfg.k_shuffles}": binary_report(y, pk, det.threshold, n_boot=cfg.n_boot,
                                                          seed=cfg.seed).to_dict(),
            }
            pb = None
            if baseline is not None:
                pb = sigmoid(baseline.decision_function(pim))
                res["baseline"] = binary_report(y, pb, base_thr, n_boot=cfg.n_boot, seed=cfg.seed).to_dict()
            entry["conditions"][cond] = res
            key = f"{'unseen' if src in held_out else 'in-pool'}|{cond}"
            acc = pooled.setdefault(key, {"y": [], "p": [], "b": []})
            acc["y"].append(y), acc["p"].append(p0)
            if pb is not None:
                acc["b"].append(pb)
            if cond == "clean" and len(set(y.tolist())) == 2:
                curves[src] = {"y": y, "p": p0, "b": pb}
        result["sources"][src] = entry
        log.info("%s: %s", src, {c: round(v["patch"]["roc_auc"], 4) for c, v in entry["conditions"].items()})
    result["calibration"] = calibration_report(pooled, det)
    result["pooled"] = {}
    for key, acc in pooled.items():
        y, p = np.concatenate(acc["y"]), np.concatenate(acc["p"])
        d = {"patch": binary_report(y, p, det.threshold, n_boot=cfg.n_boot, seed=cfg.seed).to_dict()}
        if acc["b"]:
            d["baseline"] = binary_report(y, np.concatenate(acc["b"]), base_thr, n_boot=cfg.n_boot,
                                          seed=cfg.seed).to_dict()
        result["pooled"][key] = d
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
        if curves:
            plot_roc(curves, out / "roc.png", title=f"{det.version} (held out: {', '.join(sorted(held_out)) or 'none'})")
        rel = {k: v["reliability"] for k, v in result["calibration"].items() if v["reliability"]["n"]}
        if rel:
            from ..calibration.decision import plot_reliability

            plot_reliability(rel, out / "reliability.png", title=f"{det.version}: reliability of p_ai (clean)")
        (out / "summary.md").write_text(markdown_summary(result))
    return result


def calibration_report(pooled: dict, det) -> dict:
    """Per split kind (clean condition): reliability table + ECE, and the operating point at the
    model's threshold (FPR on real, TPR on AI, Clopper-Pearson intervals)."""
    from ..calibration.decision import operating_point, reliability

    out = {}
    for key, acc in pooled.items():
        kind, cond = key.split("|")
        if cond != "clean":
            continue
        y, p = np.concatenate(acc["y"]), np.concatenate(acc["p"])
        out[kind] = {"reliability": reliability(y, p),
                     "operating_point": operating_point(p[y == 0], p[y == 1], det.threshold,
                                                        det.target_fpr).to_dict()}
    return out


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o).__name__)


def plot_roc(curves: dict[str, dict], path: Path, title: str = "") -> None:
    """ROC per source: patch model solid, baseline dashed."""
    from ..deps import require

    mpl = require("matplotlib", "ROC plots")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from ..metrics import roc_auc

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, (src, c) in enumerate(curves.items()):
        color = f"C{i}"
        fpr, tpr, _ = roc_curve(c["y"], c["p"])
        ax.plot(fpr, tpr, color=color, label=f"{src} patch (AUC {roc_auc(c['y'], c['p']):.3f})")
        if c.get("b") is not None:
            fpr, tpr, _ = roc_curve(c["y"], c["b"])
            ax.plot(fpr, tpr, color=color, ls="--", label=f"{src} baseline (AUC {roc_auc(c['y'], c['b']):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("false-positive rate (real called AI)")
    ax.set_ylabel("true-positive rate (AI caught)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v: float, ci) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown_summary(result: dict) -> str:
    """Markdown tables of one evaluation result (per source x condition x method)."""
    k = result["config"]["k_shuffles"]
    lines = [f"model `{result['model']['version']}`, threshold {result['model']['threshold']:.4f}, "
             f"temperature {result['model']['temperature']:.3f}; held out: "
             f"{', '.join(result['model']['holdout_sources']) or 'none'}; split verified: "
             f"{result['data']['split_verified']}", "",
             "| source | rows | condition | method | n real / ai | accuracy | balanced acc. | ROC-AUC | AP | FPR |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    if not result["sources"]:
        n = sum(result["data"].get("training_only_sources", {}).values())
        lines[2:] = [f"Nothing to evaluate: all {n} rows of the selected sources are files the model was trained "
                     "or calibrated on."]
    for src, e in result["sources"].items():
        for cond, methods in e["conditions"].items():
            for name, r in methods.items():
                label = {"patch": "patch (fixed order)", f"patch_k{k}": f"patch (mean of {k} shuffles)",
                         "baseline": "spectrum baseline"}.get(name, name)
                lines.append(f"| {src} | {e['split']} | {cond} | {label} | {r['n_real']} / {r['n_ai']} | "
                             f"{_fmt(r['accuracy'], r['accuracy_ci'])} | "
                             f"{_fmt(r['balanced_accuracy'], r['balanced_accuracy_ci'])} | "
                             f"{_fmt(r['roc_auc'], r['roc_auc_ci'])} | "
                             f"{_fmt(r['average_precision'], r['average_precision_ci'])} | "
                             f"{_rate(r['fpr'])} |")
    if result.get("card_loso"):
        lines += ["", "Sources whose every row trained this model: the leave-one-source-out figures of its recipe, "
                  "from its card (each source scored by the same recipe trained without that source; FPR / TPR at that fold's "
                  "threshold):",
                  "", "| source | n real / ai | ROC-AUC (clean) | ROC-AUC (JPEG q75) | FPR | TPR |", "|---|---|---|---|---|---|"]
        for src, r in result["card_loso"].items():
            lines.append(f"| {src} | {r['n_real']} / {r['n_ai']} | {_fmt(r['auc'], r['auc_ci'])} | "
                         f"{_rate(r['jpeg75_auc'])} | {_rate(r['fpr'])} | {_rate(r['tpr'])} |")
    for kind, c in result.get("calibration", {}).items():
        op, rel = c["operating_point"], c["reliability"]
        lines += ["", f"calibration ({kind} rows, clean, {result['model'].get('calibration', 'temperature')}): "
                  f"ECE {rel['ece']:.3f} over {rel['n']} images; at threshold {op['threshold']:.4f}"
                  + (f" (target FPR {op['target_fpr']:.3f})" if op.get("target_fpr") is not None else "")
                  + f": FPR {_rate(op['fpr'])} [{op['fpr_ci'][0]:.3f}, {op['fpr_ci'][1]:.3f}] on {op['n_real']} real, "
                  f"TPR {_rate(op['tpr'])} [{op['tpr_ci'][0]:.3f}, {op['tpr_ci'][1]:.3f}] on {op['n_ai']} AI"]
    return "\n".join(lines) + "\n"


def _rate(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.3f}"


def _c(r: dict, key: str, digits: int = 3) -> str:
    v = r[key]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    lo, hi = r.get(f"{key}_ci", (float("nan"), float("nan")))
    return f"{v:.{digits}f} [{lo:.2f}, {hi:.2f}]"


def report_tables(results: dict[str, dict]) -> dict[str, str]:
    """Markdown tables across several evaluation results (``{run name: metrics.json content}``):
    ``loso`` (each held-out source), ``in_pool`` (validation split of the pool), ``robustness``
    (per source and perturbation) and ``k_shuffle`` (fixed order vs mean of K shuffles)."""
    head = "| run | source | n real / ai | method | ROC-AUC | AP | accuracy | balanced acc. | FPR |\n|---|---|---|---|---|---|---|---|---|"
    loso, pool, rob, ksh = [head], [head], [], []
    rob.append("| run | source (rows) | condition | patch ROC-AUC | patch bal. acc. | patch FPR | baseline ROC-AUC | baseline bal. acc. |")
    rob.append("|---|---|---|---|---|---|---|---|")
    ksh.append("| run | source (rows) | fixed-order ROC-AUC | K-shuffle ROC-AUC | fixed-order bal. acc. | K-shuffle bal. acc. |")
    ksh.append("|---|---|---|---|---|---|")
    for run, res in results.items():
        k = res["config"]["k_shuffles"]
        for src, e in res["sources"].items():
            unseen = e["split"].startswith("unseen")
            c = e["conditions"].get("clean")
            if c:
                for name, label in (("patch", "patch-shuffle"), ("baseline", "spectrum baseline")):
                    if name in c:
                        r = c[name]
                        (loso if unseen else pool).append(
                            f"| {run} | {src} | {r['n_real']} / {r['n_ai']} | {label} | {_c(r, 'roc_auc')} | "
                            f"{_c(r, 'average_precision')} | {_c(r, 'accuracy')} | {_c(r, 'balanced_accuracy')} | "
                            f"{_rate(r['fpr'])} |")
                rk = c.get(f"patch_k{k}")
                if rk:
                    ksh.append(f"| {run} | {src} ({'unseen' if unseen else 'val'}) | {_c(c['patch'], 'roc_auc')} | "
                               f"{_c(rk, 'roc_auc')} | {_c(c['patch'], 'balanced_accuracy')} | "
                               f"{_c(rk, 'balanced_accuracy')} |")
            for cond, m in e["conditions"].items():
                b = m.get("baseline", {})
                rob.append(f"| {run} | {src} ({'unseen' if unseen else 'val'}) | {cond} | {_c(m['patch'], 'roc_auc')} | "
                           f"{_c(m['patch'], 'balanced_accuracy')} | {_rate(m['patch']['fpr'])} | "
                           f"{_c(b, 'roc_auc') if b else 'n/a'} | {_c(b, 'balanced_accuracy') if b else 'n/a'} |")
    return {"loso": "\n".join(loso) + "\n", "in_pool": "\n".join(pool) + "\n",
            "robustness": "\n".join(rob) + "\n", "k_shuffle": "\n".join(ksh) + "\n"}
