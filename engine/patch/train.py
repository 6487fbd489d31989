"""Train a patch-shuffle detector on a labelled manifest (seeded, resumable).

``train(TrainConfig(...), manifest, out_dir)`` writes into ``out_dir``:

* ``checkpoint.pt`` after every epoch (model, optimiser, scheduler, best weights, history), so
  ``resume=True`` continues where a run stopped; the per-epoch random streams are derived from
  ``(seed, epoch)``, so a resumed run draws the same augmentations as an uninterrupted one;
* ``model.pt`` + ``model.json`` at the end: the best epoch's weights (by validation ROC-AUC) with
  the temperature and threshold fitted on the validation split of the training pool, and a
  manifest that :class:`semgir_engine.patch.detector.PatchDetector` checks on load.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..datasets import Manifest, ManifestError, Row, load_pixels, read_manifest, stratified_split
from ..errors import SemgirError
from ..hashing import sha256_file
from ..metrics import binary_report, roc_auc
from .augment import AugmentConfig, augment
from .preprocess import prepare, prepare_batch

log = logging.getLogger(__name__)

MODEL_FORMAT = "semgir-engine/patch-shuffle"
MODEL_FORMAT_VERSION = 1


class TrainingError(SemgirError):
    """Training cannot start or continue (bad split, config mismatch on resume...)."""


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "tiny"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    val_fraction: float = 0.15
    seed: int = 0
    holdout_sources: tuple[str, ...] = ()
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: int = 2
    eval_batch_size: int = 64

    def to_dict(self) -> dict:
        d = asdict(self)
        d["holdout_sources"] = list(self.holdout_sources)
        d["augment"] = self.augment.to_dict()
        return d


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    manifest_path: Path
    manifest: dict


def predict_logits(model, images: Sequence[np.ndarray], batch_size: int = 64, k_shuffles: int = 0,
                   seed: int = 0) -> np.ndarray:
    """Eval-mode logits of uint8 images with the model's own preprocessing (centre crop)."""
    import torch

    model.eval()
    pcfg = model.cfg.preprocess
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(prepare_batch(images[i : i + batch_size], pcfg))
        out.append(model.predict_logits(x, k_shuffles=k_shuffles, seed=seed).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def split_rows(manifest: Manifest, cfg: TrainConfig) -> tuple[list[Row], list[Row], list[Row]]:
    """(train, val, holdout) rows: the pool is every source not held out; val is stratified."""
    try:
        pool = manifest.select(exclude=cfg.holdout_sources)
        holdout = manifest.select(sources=cfg.holdout_sources) if cfg.holdout_sources else []
    except ManifestError as exc:
        raise TrainingError(str(exc)) from exc
    train_rows, val_rows = stratified_split(pool, cfg.val_fraction, cfg.seed)
    for name, rows in (("train", train_rows), ("validation", val_rows)):
        labels = {r.label for r in rows}
        if labels != {0, 1}:
            raise TrainingError(f"{name} split needs both real and ai images; has {sorted(labels)}")
    return train_rows, val_rows, holdout


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def train(
    cfg: TrainConfig,
    manifest_path: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    model_config=None,
) -> TrainResult:
    """Train, select the best epoch on validation AUC, calibrate, and write model + manifest."""
    import torch

    from .model import build_model, count_parameters, get_config
    from ..calibration import choose_threshold, fit_temperature, sigmoid

    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(manifest_path)
    train_rows, val_rows, holdout_rows = split_rows(manifest, cfg)
    mcfg = model_config or get_config(cfg.preset)
    pcfg = mcfg.preprocess
    log.info("train %d, val %d images (holdout %s: %d)", len(train_rows), len(val_rows),
             list(cfg.holdout_sources), len(holdout_rows))

    ckpt_path = out / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, history, best = 0, [], {"auc": -1.0, "loss": float("inf"), "epoch": -1, "state": None}
    if ckpt_path.exists():
        if not resume:
            raise TrainingError(f"{ckpt_path} exists; pass resume=True (--resume) or use another --out")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["train_config"] != cfg.to_dict() or ck["model_config"] != mcfg.to_dict():
            raise TrainingError(f"{ckpt_path} was written with a different configuration; cannot resume")
        if ck["manifest_sha256"] != manifest.sha256:
            raise TrainingError(f"{ckpt_path} was trained on a different data manifest; cannot resume")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, history, best = ck["epoch"] + 1, ck["history"], ck["best"]
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    train_imgs, train_rows = load_pixels(train_rows, progress=progress)
    val_imgs, val_rows = load_pixels(val_rows, progress=progress)
    y_train = np.array([r.label for r in train_rows], np.float32)
    y_val = np.array([r.label for r in val_rows])

    steps_per_epoch = max(1, len(train_imgs) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = rng.permutation(len(train_imgs))
        bar = range(steps_per_epoch)
        if progress:
            from tqdm import tqdm

            bar = tqdm(bar, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        losses = []
        for s in bar:
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            xb = np.stack([prepare(augment(train_imgs[i], pcfg.size, rng, cfg.augment), pcfg, rng) for i in idx])
            yb = torch.from_numpy(y_train[idx])
            for g in opt.param_groups:
                g["lr"] = _lr_at(epoch * steps_per_epoch + s, total_steps, warmup, cfg.lr)
            loss = loss_fn(model(torch.from_numpy(xb), generator=gen), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if progress:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        z_val = predict_logits(model, val_imgs, cfg.eval_batch_size)
        val_loss = float(loss_fn(torch.from_numpy(z_val), torch.from_numpy(y_val.astype(np.float32))))
        val_auc = roc_auc(y_val, z_val)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                        "val_auc": val_auc})
        log.info("epoch %d: train loss %.4f, val loss %.4f, val AUC %.4f", epoch + 1, np.mean(losses),
                 val_loss, val_auc)
        if val_auc > best["auc"] or (val_auc == best["auc"] and val_loss < best["loss"]):
            best = {"auc": val_auc, "loss": val_loss, "epoch": epoch,
                    "state": copy.deepcopy(model.state_dict())}
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "history": history, "best": best, "train_config": cfg.to_dict(),
                    "model_config": mcfg.to_dict(), "manifest_sha256": manifest.sha256},
                   ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)

    if best["state"] is None:
        raise TrainingError("no epoch was trained (epochs=0?)")
    model.load_state_dict(best["state"])
    z_val = predict_logits(model, val_imgs, cfg.eval_batch_size)
    fit = fit_temperature(z_val, y_val)
    p_val = sigmoid(z_val / fit.temperature)
    threshold = choose_threshold(p_val, y_val)
    val_report = binary_report(y_val, p_val, threshold, n_boot=500, seed=cfg.seed)

    model_path = out / "model.pt"
    torch.save({"state_dict": model.state_dict(), "config": mcfg.to_dict()}, model_path)
    weights_sha = sha256_file(model_path)
    counts = lambda rows: {s: {"real": sum(1 for r in rows if r.source == s and r.label == 0),  # noqa: E731
                               "ai": sum(1 for r in rows if r.source == s and r.label == 1)}
                           for s in sorted({r.source for r in rows})}
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    meta = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "version": f"patch-shuffle-{cfg.preset}-{now:%Y%m%d}-{weights_sha[:8]}",
        "created_utc": now.isoformat(),
        "weights_file": model_path.name,
        "weights_sha256": weights_sha,
        "config": mcfg.to_dict(),
        "preprocessing": pcfg.to_dict(),
        "parameters": count_parameters(model),
        "macs_per_image": mcfg.macs_per_image(),
        "temperature": fit.temperature,
        "threshold": threshold,
        "test_time": {"crop": "centre", "patch_order": "identity", "k_shuffles": 0},
        "data": {
            "manifest_sha256": manifest.sha256,
            "manifest_name": manifest.path.name,
            "holdout_sources": list(cfg.holdout_sources),
            "train_counts": counts(train_rows),
            "val_counts": counts(val_rows),
            "val_paths_sha256": hashlib.sha256("\n".join(sorted(str(r.path.relative_to(manifest.path.parent))
                                                                for r in val_rows)).encode()).hexdigest(),
        },
        "training": {
            "config": cfg.to_dict(),
            "best_epoch": best["epoch"],
            "history": history,
            "torch_version": torch.__version__,
        },
        "validation": {
            "nll_before_temperature": fit.nll_before,
            "nll_after_temperature": fit.nll_after,
            **val_report.to_dict(),
        },
    }
    manifest_out = out / "model.json"
    manifest_out.write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s (val AUC %.4f, threshold %.4f, T %.3f)", model_path, val_report.roc_auc, threshold,
             fit.temperature)
    return TrainResult(model_path, manifest_out, meta)


def fit_on_views(crops, rows: np.ndarray, views: Sequence[int], labels: np.ndarray, weights: np.ndarray,
                 *, preset: str = "tiny", steps: int = 600, batch_size: int = 32, lr: float = 3e-3,
                 weight_decay: float = 1e-4, seed: int = 0, progress: bool = False, model_config=None):
    """Train a patch-shuffle network on pre-made class-blind views (``crops[row, view]``, uint8
    (S, S, 3), e.g. the cache of :mod:`.views`). Batches are drawn with probability proportional to
    ``weights`` (:func:`.selection.balanced_weights` balances sources and classes per batch);
    the view of each draw is random among ``views``; cosine schedule with warm-up."""
    import torch

    from .model import build_model, get_config
    from .preprocess import normalize

    mcfg = model_config or get_config(preset)
    torch.manual_seed(seed)
    model = build_model(mcfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    prob = np.asarray(weights, np.float64) / np.sum(weights)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    warmup = max(1, steps // 20)
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="patch CNN", unit="step", leave=False)
    for s in it:
        pick = rng.choice(len(rows), size=batch_size, p=prob)
        vw = rng.choice(np.asarray(views), size=batch_size)
        xb = np.stack([normalize(np.asarray(crops[rows[i], v]), mcfg.preprocess) for i, v in zip(pick, vw)])
        yb = torch.from_numpy(labels[rows[pick]].astype(np.float32))
        for g in opt.param_groups:
            g["lr"] = _lr_at(s, steps, warmup, lr)
        loss = loss_fn(model(torch.from_numpy(xb), generator=gen), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()
