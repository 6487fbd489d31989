"""Train the SemGIR detection head on cached features (``semgir-engine train semgir``).

The head is the paper's MLP on [E_CLIP(candidate) || E_CLIP(regenerated)]: 1280 -> 640 -> ReLU
-> 2 with CLIP RN50x4 (tiny dims with tiny components), trained with cross-entropy and Adam
(lr 1e-4, batch 32). Runs are seeded; a stratified validation split drives early stopping
(best validation loss wins) and the decision threshold (best balanced accuracy on validation).

Output, under ``OUT/head/``::

    semgir_head.pt     torch.save({"state_dict": ..., "manifest": {...}})
    semgir_head.json   the same manifest, readable: component versions and feature key, models
                       source, data manifest SHA-256, split counts, metrics, threshold, version

``OUT`` is laid out like a models folder, so ``--models OUT`` loads this head (through
:meth:`SemgirHead.build`) together with ``OUT/blip``, ``OUT/sd`` and ``OUT/clip`` or, where those
are absent, the Hugging Face cache. To pair a head with a weights folder ``W``, either train with
``--out W`` (it only writes ``W/head/``), or link the weights beside the head::

    ln -s W/blip W/sd W/clip OUT/    # then: semgir-engine score --models OUT ...
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import SemgirError
from . import configs
from .models import SemgirHead
from .pipeline import RegenConfig
from .sources import ModelSource

log = logging.getLogger(__name__)

HEAD_FILE = "semgir_head.pt"
HEAD_JSON = "semgir_head.json"


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings shared by the detection and attribution heads (paper defaults)."""

    epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-4
    val_fraction: float = 0.2
    patience: int = 20
    seed: int = 0
    hidden: int | None = None  # None: the configured size (640 full, 32 tiny)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 1:
            raise ValueError("epochs, batch_size, patience must be >= 1 and lr > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def fit(model: nn.Module, loss_on: Callable[[torch.Tensor], torch.Tensor], n_train: int,
        val_loss: Callable[[], float] | None, cfg: FitConfig) -> History:
    """Mini-batch Adam on ``loss_on(indices)``; early stopping on ``val_loss`` (train loss without
    validation); the best epoch's weights are restored."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    hist = History()
    best, best_state, bad = math.inf, None, 0
    for epoch in range(cfg.epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(n_train, generator=gen).split(cfg.batch_size):
            loss = loss_on(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        hist.train_loss.append(total / max(n_train, 1))
        monitored = hist.train_loss[-1]
        if val_loss is not None:
            with torch.no_grad():
                monitored = float(val_loss())
            hist.val_loss.append(monitored)
        if monitored < best - 1e-6:
            best, bad, hist.best_epoch = monitored, 0, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                hist.stopped_early = True
                log.info("early stop at epoch %d (best %d, loss %.4f)", epoch, hist.best_epoch, best)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return hist


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The decision threshold (best balanced accuracy, ties nearest 0.5: the one chooser in
    :mod:`..calibration`); 0.5 when the validation data lack a class."""
    from ..calibration import choose_threshold as best_threshold

    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return 0.5
    return best_threshold(p, y)


def jsonable(obj):
    """Plain Python (NaN -> None) for json and for ``torch.load(weights_only=True)``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def write_checkpoint(path: Path, payload: dict, manifest: dict, json_path: Path, force: bool) -> None:
    """Atomic: tmp file, fsync, rename; refuses to replace an existing file without ``force``."""
    if path.exists() and not force:
        raise SemgirError(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, write in ((path, lambda fh: torch.save(payload, fh)),
                          (json_path, lambda fh: fh.write(json.dumps(manifest, indent=2).encode()))):
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)


def _state_digest(state: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class TrainResult:
    head_path: Path
    manifest: dict
    history: History


def _split(rows, fraction: float, seed: int):
    from ..datasets import stratified_split

    if fraction <= 0 or len(rows) < 4:
        return list(rows), []
    return stratified_split(rows, fraction, seed)


def train_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, dim: int,
               hidden: int, cfg: FitConfig) -> tuple[SemgirHead, History]:
    """Fit a :class:`SemgirHead` (2*dim -> hidden -> ReLU -> 2) with cross-entropy."""
    torch.manual_seed(cfg.seed)
    head = SemgirHead(dim, hidden)
    xt, yt = torch.from_numpy(np.asarray(x_train, np.float32)), torch.from_numpy(np.asarray(y_train, np.int64))
    xv, yv = torch.from_numpy(np.asarray(x_val, np.float32)), torch.from_numpy(np.asarray(y_val, np.int64))
    ce = nn.CrossEntropyLoss()
    val = (lambda: ce(head(xv), yv)) if len(yv) else None
    hist = fit(head, lambda idx: ce(head(xt[idx]), yt[idx]), len(yt), val, cfg)
    return head, hist


@torch.no_grad()
def head_probabilities(head: SemgirHead, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(0)
    return head(torch.from_numpy(np.asarray(x, np.float32))).softmax(-1)[:, 1].double().numpy()


def train_semgir(manifest: str | os.PathLike, out: str | os.PathLike, *, models: str | None = None,
                 fit_cfg: FitConfig = FitConfig(), regen: RegenConfig = RegenConfig(), noise_seed: int = 0,
                 max_new_tokens: int = 20, num_beams: int = 1, feature_cache: str | None = "auto",
                 batch_size: int = 8, device: str = "cpu", progress: bool = True, force: bool = False,
                 n_boot: int = 200) -> TrainResult:
    """Extract (or read cached) features for every manifest image, train the head, write OUT/head/."""
    from ..datasets import read_manifest
    from ..metrics import binary_report
    from .extract import TorchFeatureStages, extract_rows, feature_version_of, open_cache

    out = Path(out)
    head_path = out / "head" / HEAD_FILE
    if head_path.exists() and not force:
        raise SemgirError(f"{head_path} exists; pass --force to replace it")
    data = read_manifest(manifest)
    src = ModelSource.parse(models, seed=0)
    log.info("building SemGIR feature components (%s)", src.describe())
    stages = TorchFeatureStages(src, regen, max_new_tokens, num_beams, device)
    version = feature_version_of(stages, noise_seed)
    from .features import Branch

    cache = open_cache(feature_cache, src.random_weights)
    t0 = time.perf_counter()
    try:
        ext = extract_rows(stages, [Branch("detect", version, stages.regenerate)], data.rows, noise_seed, cache,
                           batch_size=batch_size, progress=progress)
    finally:
        if cache is not None:
            cache.close()
    feat_s = time.perf_counter() - t0
    if len(ext.rows) < 2 or len(set(r.label for r in ext.rows)) < 2:
        raise SemgirError(f"need images of both labels to train; have {len(ext.rows)} usable rows "
                          f"({len(ext.skipped)} skipped)")
    index = {id(r): i for i, r in enumerate(ext.rows)}
    train_rows, val_rows = _split(ext.rows, fit_cfg.val_fraction, fit_cfg.seed)
    x = ext.detection()
    y = ext.labels()
    ti = np.array([index[id(r)] for r in train_rows], np.int64)
    vi = np.array([index[id(r)] for r in val_rows], np.int64)
    dim = stages.dim
    hidden = fit_cfg.hidden or configs.HEAD["tiny" if src.size.value == "tiny" else "full"]["hidden"]
    t1 = time.perf_counter()
    head, hist = train_head(x[ti], y[ti], x[vi], y[vi], dim, hidden, fit_cfg)
    train_s = time.perf_counter() - t1
    p_tr, p_va = head_probabilities(head, x[ti]), head_probabilities(head, x[vi])
    threshold = choose_threshold(y[vi], p_va) if len(vi) else 0.5
    metrics = {"train": binary_report(y[ti], p_tr, threshold, n_boot=n_boot, seed=fit_cfg.seed).to_dict()}
    if len(vi):
        metrics["val"] = binary_report(y[vi], p_va, threshold, n_boot=n_boot, seed=fit_cfg.seed).to_dict()
    state = head.state_dict()
    digest = _state_digest(state)
    man = jsonable({
        "format": "semgir-head", "format_version": 1,
        "version": f"semgir-head-{digest[:12]}",
        "dim": dim, "hidden": hidden, "threshold": threshold,
        "feature_key": version.key, "base_key": version.base_key(), "components": version.description,
        "models": src.describe(), "models_arg": models,
        "data": {"manifest": str(data.path), "sha256": data.sha256, "rows": len(data.rows), "used": len(ext.rows),
                 "skipped": len(ext.skipped), "train": len(ti), "val": len(vi),
                 "train_counts": {"real": int((y[ti] == 0).sum()), "ai": int((y[ti] == 1).sum())},
                 "val_counts": {"real": int((y[vi] == 0).sum()), "ai": int((y[vi] == 1).sum())}},
        "training": {**asdict(fit_cfg), "hidden": hidden, "epochs_run": len(hist.train_loss),
                     "best_epoch": hist.best_epoch, "stopped_early": hist.stopped_early,
                     "final_train_loss": hist.train_loss[-1], "first_train_loss": hist.train_loss[0],
                     "best_val_loss": min(hist.val_loss) if hist.val_loss else None,
                     "feature_seconds": feat_s, "train_seconds": train_s},
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    write_checkpoint(head_path, {"state_dict": state, "manifest": man}, man, head_path.with_name(HEAD_JSON), force)
    log.info("wrote %s (val balanced accuracy %s)", head_path, metrics.get("val", {}).get("balanced_accuracy"))
    return TrainResult(head_path, man, hist)


def load_head(path: str | os.PathLike) -> tuple[SemgirHead, dict]:
    """A trained head from OUT, OUT/head or the .pt file itself."""
    p = Path(path)
    for cand in (p, p / HEAD_FILE, p / "head" / HEAD_FILE):
        if cand.is_file():
            state = torch.load(cand, map_location="cpu", weights_only=True)
            man = state.get("manifest", {})
            if "dim" not in man:
                raise SemgirError(f"{cand} has no manifest dim; is it a head written by `train semgir`?")
            head = SemgirHead(int(man["dim"]), int(man["hidden"]))
            head.load_state_dict(state["state_dict"])
            return head.eval(), man
    raise SemgirError(f"no {HEAD_FILE} under {p} (looked in {p}, {p / HEAD_FILE}, {p / 'head' / HEAD_FILE})")
