"""Cascade scoring: the cheap patch detector on every image, SemGIR only on the uncertain ones (torch-free).

Stage 1 (the patch-shuffle detector) scores every decoded image in large batches
(``first_stage_batch_size``). An image whose calibrated stage-1 ``p_ai`` lies inside the cascade
band (:mod:`semgir_engine.calibration.cascade`) is queued for stage 2 (SemGIR: caption,
regenerate, embed, head), which runs in its own batches of ``batch_size`` as soon as enough are
queued; the others are decided by stage 1 at once. Each row says which ``stage`` decided, with
``p_patch`` always and ``p_semgir`` where SemGIR ran; ``p_ai``, ``label`` and ``random_weights``
are the deciding stage's.

Rows come out as they are decided, so :meth:`CascadeScorer.iter_scores` yields them in completion
order (stage-1 decisions first); :meth:`CascadeScorer.score` returns them in input order.

``max_regen_fraction`` is a hard budget on top of the band: after each stage-1 batch at most that
share of the images scored so far has been regenerated; over budget, the in-band images closest to
the stage-1 threshold (in logits) are regenerated first and the rest keep stage 1's decision with a
note. Without any band, ``max_regen_fraction`` alone routes the most uncertain images.

Where the band comes from, first found wins: ``cascade_band`` ("LO,HI" or a band file),
``cascade.json`` in a ``--models`` folder, ``<model>.cascade.json`` beside the patch model's
manifest (the shipped detector has one), else a typed error saying how to fit one.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from .calibration.cascade import BAND_FILE, CascadeBand, CascadeBandError, load_band, logit_distance, parse_band
from .errors import InputError, SemgirError
from .images import DecodedImage, ImageInput
from .results import Result

if TYPE_CHECKING:
    from .scorer import Scorer, ScorerConfig
    from .semgir.pipeline import StageTimer

log = logging.getLogger(__name__)

STAGES = ("patch", "semgir")
OVER_BUDGET_NOTE = "cascade: in the band but over the regeneration budget; decided by the patch detector"


def band_path_for_patch_model(patch_model: str | None) -> Path:
    """``<model>.cascade.json`` beside a patch-detector manifest (the shipped one when None)."""
    from .patch.detector import resolve_manifest

    m = resolve_manifest(patch_model)
    return m.with_name(m.stem + ".cascade.json")


def resolve_band(config: "ScorerConfig", first_stage_version: str) -> CascadeBand | None:
    """The band this configuration asks for (see the module docstring); None only with a budget alone."""
    spec = config.cascade_band
    if spec:
        if Path(spec).is_file() or spec.endswith(".json"):
            return load_band(spec, first_stage_version)
        return parse_band(spec)
    candidates = []
    if config.models and config.models not in ("tiny", "random", "auto", "real") and Path(config.models).is_dir():
        candidates.append(Path(config.models) / BAND_FILE)
    candidates.append(band_path_for_patch_model(config.patch_model))
    for c in candidates:
        if c.is_file():
            band = load_band(c, first_stage_version)
            log.info("cascade band %s from %s", band.describe(), c)
            return band
    if config.max_regen_fraction is not None:
        return None
    raise CascadeBandError("no fitted cascade band found (looked in: " + "; ".join(map(str, candidates)) +
                           "); fit one with `semgir-engine calibrate cascade`, or give --cascade-band LO,HI "
                           "or --max-regen-fraction F")


@dataclass
class _Pending:
    index: int
    name: str
    decoded: DecodedImage
    first: Result


class CascadeScorer:
    """Two :class:`~semgir_engine.scorer.Scorer` objects, patch then SemGIR, and the routing between them."""

    method = "cascade"

    def __init__(self, config: "ScorerConfig", timer: "StageTimer | None" = None):
        from .scorer import Scorer

        if config.attribute:
            raise SemgirError("attribution (--attribute) is not available with --method cascade")
        if config.max_regen_fraction is not None and not 0.0 <= config.max_regen_fraction <= 1.0:
            raise CascadeBandError(f"--max-regen-fraction must be in [0, 1], got {config.max_regen_fraction}")
        self.config = config
        self.patch: Scorer = Scorer(replace(config, method="patch", backend=self._patch_backend(config),
                                            export_dir=config.export_dir if self._patch_backend(config) != "torch"
                                            else None, save_regenerations=None))
        self.band = resolve_band(config, self.patch.version)
        self.semgir: Scorer = Scorer(replace(config, method="semgir"))
        if timer is not None:  # one set of stage totals for the whole cascade
            self.patch.timer = self.semgir.timer = timer
        self.threshold = self.patch.threshold
        self.random_weights = self.semgir.random_weights
        self.version = f"{self.patch.version}+{self.semgir.version}"
        self.counts = {s: 0 for s in STAGES}
        self._seen = 0  # decoded images routed so far (for the budget)
        log.info("cascade: band %s, regeneration budget %s", self.band.describe() if self.band else "none",
                 config.max_regen_fraction)

    @staticmethod
    def _patch_backend(config: "ScorerConfig") -> str:
        """Stage 1 runs on the exported backend only when the export holds patch_cnn; else on torch."""
        if not config.export_dir or config.backend == "torch":
            return "torch"
        from .runtime.manifest import load_manifest

        return config.backend if "patch_cnn" in load_manifest(config.export_dir).get("components", {}) else "torch"

    # -- routing -------------------------------------------------------------------------------
    def _route(self, firsts: list[Result]) -> np.ndarray:
        """Which of one stage-1 batch's (successful) rows go to SemGIR."""
        p = np.array([r.p_ai for r in firsts], np.float64)
        self._seen += len(firsts)
        inside = self.band.contains(p) if self.band is not None else np.ones(p.size, bool)
        f = self.config.max_regen_fraction
        if f is None:
            return inside
        allowed = max(int(np.floor(f * self._seen + 1e-9)) - self.counts["semgir"] - self._queued, 0)
        idx = np.flatnonzero(inside)
        if idx.size > allowed:
            keep = idx[np.argsort(logit_distance(p[idx], self.threshold), kind="stable")[:allowed]]
            inside = np.zeros(p.size, bool)
            inside[keep] = True
        return inside

    _queued = 0

    def _first_row(self, r: Result, note: str | None = None) -> Result:
        notes = "; ".join(n for n in (r.note, note) if n) or None
        return replace(r, method=self.method, stage="patch", p_patch=r.p_ai, note=notes)

    def _merge(self, pend: _Pending, second: Result) -> Result:
        first = pend.first
        timings = {**first.timings_ms, **second.timings_ms}
        if not second.ok:
            return replace(first, method=self.method, stage="semgir", p_ai=None, label=None, p_patch=first.p_ai,
                           error=f"stage 2 (semgir): {second.error}", random_weights=second.random_weights,
                           timings_ms=timings)
        return replace(second, method=self.method, stage="semgir", p_patch=first.p_ai, p_semgir=second.p_ai,
                       timings_ms=timings)

    def _run_second(self, batch: list[_Pending]) -> Iterator[tuple[int, Result]]:
        seconds = self.semgir.score_decoded([b.decoded for b in batch], [b.name for b in batch])
        self._queued -= len(batch)
        for b, s in zip(batch, seconds):
            self.counts["semgir"] += 1
            yield b.index, self._merge(b, s)

    def _run(self, decoded: Iterable[tuple[int, str, DecodedImage]], batch_size: int) -> Iterator[tuple[int, Result]]:
        """Route decoded images: stage 1 in chunks of ``first_stage_batch_size``, stage 2 in ``batch_size``."""
        chunk_size = max(self.config.first_stage_batch_size, 1)
        queue: list[_Pending] = []
        it = iter(decoded)
        while True:
            chunk = [x for _, x in zip(range(chunk_size), it)]
            if chunk:
                firsts = self.patch.score_decoded([d for _, _, d in chunk], [n for _, n, _ in chunk])
                ok = [k for k, r in enumerate(firsts) if r.ok]
                for k, r in enumerate(firsts):
                    if not r.ok:
                        yield chunk[k][0], replace(r, method=self.method, stage="patch")
                routed = self._route([firsts[k] for k in ok]) if ok else np.zeros(0, bool)
                for k, go in zip(ok, routed):
                    i, name, dec = chunk[k]
                    if go:
                        queue.append(_Pending(i, name, dec, firsts[k]))
                        self._queued += 1
                    else:
                        over = self.band is None or self.band.contains(firsts[k].p_ai)
                        self.counts["patch"] += 1
                        yield i, self._first_row(firsts[k], OVER_BUDGET_NOTE if over and
                                                 self.config.max_regen_fraction is not None else None)
            while len(queue) >= batch_size or (queue and not chunk):
                batch, queue = queue[:batch_size], queue[batch_size:]
                yield from self._run_second(batch)
            if not chunk:
                return

    def rerouted(self, band: CascadeBand | None, max_regen_fraction: float | None = None) -> "CascadeScorer":
        """The same loaded stages with another band and budget (benchmarks compare routings on one load)."""
        other = copy.copy(self)
        other.band = band
        other.config = replace(self.config, max_regen_fraction=max_regen_fraction)
        other.counts = {s: 0 for s in STAGES}
        other._seen = other._queued = 0
        return other

    # -- the Scorer-facing API -----------------------------------------------------------------
    def _iter_indexed(self, items: Iterable[ImageInput], names: Iterable[str] | None,
                      batch_size: int | None) -> Iterator[tuple[int, Result]]:
        errors: list[tuple[int, Result]] = []  # undecodable inputs, yielded as soon as the stream moves

        def decoded() -> Iterator[tuple[int, str, DecodedImage]]:
            name_iter = iter(names) if names is not None else None
            for k, item in enumerate(items):
                name = next(name_iter) if name_iter is not None else (
                    os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"item-{k}")
                try:
                    yield k, name, self.patch._decode(item)
                except InputError as exc:
                    errors.append((k, replace(self.patch._error(name, str(exc)), method=self.method)))

        for row in self._run(decoded(), batch_size or self.config.batch_size):
            yield from errors
            errors.clear()
            yield row
        yield from errors

    def iter_scores(self, items: Iterable[ImageInput], names: Iterable[str] | None = None,
                    batch_size: int | None = None) -> Iterator[Result]:
        """One row per item, in completion order; a bad item gives an error row."""
        return (r for _, r in self._iter_indexed(items, names, batch_size))

    def score(self, items: Iterable[ImageInput], names: Iterable[str] | None = None,
              batch_size: int | None = None) -> list[Result]:
        """One row per item, in input order."""
        return [r for _, r in sorted(self._iter_indexed(items, names, batch_size), key=lambda t: t[0])]

    def score_decoded(self, decoded: Sequence[DecodedImage], names: Sequence[str]) -> list[Result]:
        out = sorted(self._run(((k, n, d) for k, (n, d) in enumerate(zip(names, decoded))), self.config.batch_size),
                     key=lambda t: t[0])
        return [r for _, r in out]

    def close(self) -> None:
        self.patch.close()
        self.semgir.close()
