"""The scoring API: load everything once, score batches of images. The CLI is a thin layer on this.

>>> from semgir_engine import Scorer, ScorerConfig
>>> with Scorer(ScorerConfig(method="patch")) as scorer:
...     results = scorer.score(["a.jpg", "b.png"])

Thread safety: one :class:`Scorer` may be shared by threads; model calls are serialised by an
internal lock (decoding is not), so concurrent callers get correct per-call results.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Sequence

from .errors import InputError, SemgirError, SystematicError, UnknownNameError
from .images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DecodedImage, ImageInput, load_image
from .precision import resolve_precision
from .results import Result
from .semgir.pipeline import CaptionConfig, RegenConfig, StageTimer, run_semgir
from .spec import Precision

log = logging.getLogger(__name__)

METHODS = ("auto", "semgir", "patch", "cascade")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")
PRECISIONS = tuple(p.value for p in Precision)
#: consecutive items failing with the same error before the run is stopped as a systematic fault
SYSTEMATIC_AFTER = 3


@dataclass(frozen=True)
class ScorerConfig:
    method: str = "auto"  # auto | semgir | patch
    models: str | None = None  # SemGIR models: tiny | random | DIR | None (real weights if found)
    backend: str = "auto"  # auto: tensorrt > onnxruntime when an export is given, else torch
    device: str = "cpu"  # cpu | cuda | cuda:N (refused when that GPU is not there)
    batch_size: int = 8
    seed: int = 0
    steps: int = RegenConfig.steps
    guidance_scale: float = RegenConfig.guidance_scale
    scheduler: str = RegenConfig.scheduler
    resolution: int | None = RegenConfig.resolution
    max_new_tokens: int | None = CaptionConfig.max_new_tokens
    num_beams: int | None = CaptionConfig.num_beams
    patch_model: str | None = None  # a patch-detector checkpoint; None = the shipped default
    export_dir: str | None = None  # ONNX export (`semgir-engine export`): enables onnxruntime / tensorrt
    precision: Precision | None = None  # None: the backend's default (engine.precision: tensorrt fp16, else fp32)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    feature_cache: str | None = None  # SemGIR feature cache (opt-in): a folder, "auto" (see featcache) or None
    attribute: str | None = None  # SemGIR-A: trained heads (generators.json of `train attribution`)
    target_fpr: float | None = None  # patch detector: threshold at this FPR on its calibration split
    # cascade (semgir_engine.cascade): band "LO,HI" or a band file; regeneration budget; stage-1 batch
    cascade_band: str | None = None
    max_regen_fraction: float | None = None
    first_stage_batch_size: int = 256
    save_regenerations: str | None = None  # a folder: keep SemGIR's regenerated images (PNG) there

    def __post_init__(self):
        if self.method not in METHODS:
            raise UnknownNameError("method", self.method, METHODS)
        if self.backend not in BACKENDS:
            raise UnknownNameError("backend", self.backend, BACKENDS)
        if self.precision is not None:
            try:
                object.__setattr__(self, "precision", Precision(self.precision))
            except ValueError:
                raise UnknownNameError("precision", str(self.precision), PRECISIONS) from None
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.steps < 1:
            raise ValueError("steps must be >= 1")

    @property
    def regen(self) -> RegenConfig:
        return RegenConfig(self.steps, self.guidance_scale, self.scheduler, self.resolution)

    @property
    def caption(self) -> CaptionConfig:
        return CaptionConfig(self.max_new_tokens, self.num_beams)


def semgir_weights_available(models: str | None) -> bool:
    """True when real SemGIR weights (BLIP, SD, CLIP and a trained head) are all on disk."""
    from .semgir.sources import CLIP_FILES, ModelSource

    src = ModelSource.parse(models)
    return (src.available("blip", ("config.json",)) and src.available("sd", ("model_index.json",))
            and src.available("clip", CLIP_FILES) and src.available("head", ("semgir_head.pt",)))


def resolve_method(cfg: ScorerConfig) -> str:
    if cfg.method != "auto":
        return cfg.method
    if cfg.export_dir:
        from .registry import PIPELINE_COMPONENTS
        from .runtime.manifest import load_manifest

        comps = load_manifest(cfg.export_dir)["components"]
        if "patch_cnn" in comps and not any(n in comps for n in PIPELINE_COMPONENTS):
            return "patch"  # an export of the patch detector alone
        return "semgir"
    if cfg.models is not None and cfg.models not in ("auto", "real"):
        return "semgir"  # models were named explicitly: the user wants SemGIR
    return "semgir" if semgir_weights_available(cfg.models) else "patch"


class Scorer:
    """Loads the chosen method's models once and scores images in batches."""

    _features = None  # semgir.features.CachedSemgir when a feature cache or attribution is on

    def __init__(self, config: ScorerConfig = ScorerConfig()):
        self.method = resolve_method(config)
        self.config = replace(config, method=self.method)
        self.timer = StageTimer()
        self._lock = threading.Lock()
        self._closed = False
        if self.method == "cascade":
            from .cascade import CascadeScorer

            self._impl = CascadeScorer(self.config, self.timer)
        elif self.method == "semgir":
            self._impl = self._load_semgir()
        else:
            self._impl = self._load_patch()
            if config.target_fpr is not None:
                self._impl.set_target_fpr(config.target_fpr)
        self.random_weights: bool = bool(getattr(self._impl, "random_weights", False))
        self.version: str = self._impl.version
        self.threshold: float = float(self._impl.threshold)
        if self.random_weights and self.method != "cascade":  # the cascade's SemGIR stage has warned
            log.warning("RANDOM WEIGHTS: %s scores are meaningless (timing and parity only); labels are withheld",
                        self.method)

    @classmethod
    def from_config(cls, config: ScorerConfig | None = None, **kwargs) -> "Scorer":
        """Build a scorer from a config, or from :class:`ScorerConfig` fields given as keywords.

        ``Scorer.from_config(method="semgir", models="tiny")``; keywords override ``config``'s fields.
        """
        if config is None:
            config = ScorerConfig(**kwargs)
        elif kwargs:
            config = replace(config, **kwargs)
        return cls(config)

    # -- loading -------------------------------------------------------------------------------
    def _backend(self) -> str:
        b = self.config.backend
        if b == "auto":
            # the exported backends take over once an export directory is given: tensorrt > onnxruntime > torch
            if not self.config.export_dir:
                return "torch"
            from .deps import available
            from .runtime import trt

            if trt.trt_available():
                return "tensorrt"
            if self.config.precision in ("bf16", "int8") and available("openvino"):
                return "openvino"  # on a CPU, bf16 and INT8 run fastest on OpenVINO (bench/results/precision)
            if available("onnxruntime"):
                return "onnxruntime"
            return "torch"
        return b

    def _precision(self, backend: str) -> Precision:
        """The precision ``backend`` runs (its default when none was asked); refused when it cannot."""
        return resolve_precision(backend, self.config.precision)

    def _export_kw(self, backend: str) -> dict:
        """How an exported backend runs its graphs: ONNX Runtime sessions, or TensorRT engines built from them."""
        c = self.config
        if not c.export_dir:
            raise SemgirError(f"backend {backend!r} needs an export directory (--export-dir), made with "
                              "`semgir-engine export`")
        kw = {"precision": self._precision(backend), "device": c.device}
        if backend == "openvino":  # bf16 and int8 come from the fp32 graphs (precision hint, nncf IR)
            from .runtime.openvino import ov_factory

            kw.update(runner_factory=ov_factory(c.export_dir, kw["precision"]), kind=f"openvino-{kw['precision'].value}",
                      precision=Precision.FP32)
        elif backend == "tensorrt" and kw["precision"] is Precision.INT8:  # from the QDQ graphs or calibrated
            from .runtime.trt_int8 import int8_engine_factory

            kw.update(runner_factory=int8_engine_factory(c.export_dir), kind="tensorrt-int8", precision=Precision.FP32)
        elif backend == "tensorrt":
            from .runtime.trt import engine_factory

            kw.update(runner_factory=engine_factory(c.export_dir, precision=kw["precision"]), kind="tensorrt")
        return kw

    def _load_semgir(self):
        """One pipeline on every backend; the backend only provides the component sessions."""
        from .semgir.pipeline import SemgirPipeline

        c = self.config
        backend = self._backend()
        if backend in ("onnxruntime", "tensorrt", "openvino"):
            from .runtime.ort_semgir import OrtSemgir

            log.info("loading SemGIR (%s) from %s", backend, c.export_dir)
            pipe = OrtSemgir(c.export_dir, c.regen, c.caption, **self._export_kw(backend))
        else:
            from .semgir.sources import ModelSource
            from .semgir.torch_backend import TorchSessions

            src = ModelSource.parse(c.models, seed=0)
            log.info("loading SemGIR (%s)", src.describe())
            lcm = c.scheduler in ("auto", "lcm")  # LCM-LoRA weights are fused only for the LCM sampler
            pipe = SemgirPipeline(TorchSessions(src, c.device, lcm=lcm), c.regen, c.caption)
        self.backend = backend
        self._features = self._load_features(pipe, backend)
        return pipe

    def _load_features(self, pipe, backend: str):
        """The cached SemGIR path (feature cache and/or SemGIR-A attribution), or None."""
        from .featcache import FeatureCache, resolve_cache_option
        from .semgir.extract import feature_version_of
        from .semgir.features import CachedSemgir

        c = self.config
        root = resolve_cache_option(c.feature_cache, pipe.random_weights) if c.feature_cache else None
        attributor = None
        if c.attribute:
            from .semgir.attribution_runtime import read_generators

            names = [g.name for g in read_generators(c.attribute)[0]] if str(c.attribute).endswith(".json") else None
            if backend == "torch":
                from .semgir.attribution import torch_attribution

                attributor = torch_attribution(c.attribute, c.device)
            else:
                from .runtime.ort_semgir import export_attribution

                attributor = export_attribution(c.export_dir, **self._export_kw(backend))
            if names is not None and names != attributor.names:
                raise SemgirError(f"{c.attribute} names the generators {names}, but the attribution heads loaded "
                                  f"are for {attributor.names}; re-export with --attribute {c.attribute}")
        if root is None and attributor is None:
            return None
        return CachedSemgir(pipe, feature_version_of(pipe, c.seed), FeatureCache(root) if root else None, attributor)

    def _load_patch(self):
        from .patch.detector import PatchDetector

        c = self.config
        if c.attribute:
            raise SemgirError("attribution (--attribute) needs the SemGIR method (--method semgir)")
        backend = self._backend()
        precision = self._precision(backend)
        if backend == "torch":
            return PatchDetector.load(c.patch_model)
        if not c.export_dir:
            raise SemgirError(f"backend {backend!r} needs an export directory (--export-dir) holding patch_cnn: "
                              "`semgir-engine export --components patch_cnn --out DIR`")
        if c.patch_model:
            raise SemgirError("--patch-model applies to the torch backend; export that model with "
                              "`semgir-engine export --components patch_cnn --patch-model PATH` instead")
        log.info("loading the patch-shuffle detector (%s) from %s", backend, c.export_dir)
        from .runtime.ort_patch import OrtPatchDetector

        kw = self._export_kw(backend)
        kind = kw.pop("kind", "onnxruntime")
        det = OrtPatchDetector(c.export_dir, backend=kind, **kw)
        if kind.startswith("openvino") or kind == "tensorrt-int8":  # derived from the fp32 graph
            det.precision = precision.value
        return det

    # -- scoring -------------------------------------------------------------------------------
    def _label(self, p: float) -> str | None:
        if self.random_weights:
            return None
        return "ai" if p >= self.threshold else "real"

    def _error(self, name: str, msg: str, sha: str | None = None) -> Result:
        return Result(path=name, sha256=sha, p_ai=None, label=None, method=self.method, model_version=self.version,
                      random_weights=self.random_weights, error=msg)

    def _decode(self, item: ImageInput) -> DecodedImage:
        return load_image(item, max_pixels=self.config.max_pixels, max_bytes=self.config.max_bytes)

    def _score_decoded(self, names: list[str], decoded: list[DecodedImage]) -> list[Result]:
        arrays = [d.pixels for d in decoded]
        shas = [d.sha256 for d in decoded]
        regen_paths: list[str | None] = [None] * len(arrays)
        with self._lock:
            attributions = None
            if self.method == "semgir":
                if self._features is not None:
                    out, attributions = self._features.run(arrays, shas, self.timer)
                else:
                    out = run_semgir(self._impl, arrays, shas, self.config.seed, self.timer)
                p_ai, captions, timings = out.p_ai, out.captions, out.timings_ms
                if self.config.save_regenerations:
                    from .regenstore import save_regenerations

                    regen_paths = save_regenerations(self.config.save_regenerations, shas, out.regenerated,
                                                     self.config.seed)
            else:
                before = self.timer.totals.get("patch", 0.0)
                p_ai = self.timer.run("patch", self._impl.predict, arrays)
                captions = [None] * len(arrays)
                timings = {"patch": 1000.0 * (self.timer.totals["patch"] - before) / len(arrays)}
        results = []
        for k, (name, d, p, cap) in enumerate(zip(names, decoded, p_ai, captions)):
            p = float(p)
            attr = attributions[k] if attributions is not None else None
            gen = max(attr, key=attr.get) if attr and not self.random_weights else None  # withheld like label
            results.append(Result(path=name, sha256=d.sha256, p_ai=p, label=self._label(p), method=self.method,
                                  model_version=self.version, random_weights=self.random_weights, caption=cap,
                                  note=d.note, width=d.size[0], height=d.size[1], timings_ms=dict(timings),
                                  attribution=attr, generator=gen, regeneration=regen_paths[k]))
        return results

    def _systematic(self, exc: BaseException) -> SystematicError:
        return SystematicError(f"{self.method} cannot run ({type(exc).__name__}: {exc}); the model or session is "
                               "broken, not the input: stopping (rows already written are kept)")

    def _score_safely(self, names: list[str], decoded: list[DecodedImage]) -> list[Result]:
        """Score a batch; if the batch fails, score its items one by one so that only the bad one fails.

        Failures are classified: out of memory, every item of a batch failing the same way, or
        ``SYSTEMATIC_AFTER`` items in a row failing the same way mean the model or session is broken:
        :class:`SystematicError` stops the run. Anything else is that item's error row."""
        try:
            out = self._score_decoded(names, decoded)
            self._fail_streak = (None, 0)
            return out
        except (KeyboardInterrupt, SemgirError):
            raise
        except MemoryError as exc:
            raise self._systematic(exc) from exc
        except Exception as exc:  # noqa: BLE001 - a model failure on one input must not end the run
            sig = (type(exc).__name__, str(exc)[:200])
            if len(decoded) == 1:
                last, count = getattr(self, "_fail_streak", (None, 0))
                count = count + 1 if last == sig else 1
                self._fail_streak = (sig, count)
                if count >= SYSTEMATIC_AFTER:
                    raise self._systematic(exc) from exc
                log.exception("scoring %s failed", names[0])
                return [self._error(names[0], f"scoring failed: {type(exc).__name__}: {exc}", decoded[0].sha256)]
            log.warning("batch failed (%s); retrying its %d items one by one", exc, len(decoded))
            rows = [r for n, d in zip(names, decoded) for r in self._score_safely([n], [d])]
            errors = {r.error for r in rows}
            if all(r.error for r in rows) and len(errors) == 1 and len(rows) > 1:
                raise self._systematic(exc) from exc
            return rows

    def score_decoded(self, decoded: Sequence[DecodedImage], names: Sequence[str]) -> list[Result]:
        """Score images already decoded by :func:`~semgir_engine.images.load_image`; one :class:`Result` each.

        Lets a caller (the HTTP service) reject bad inputs before batching them, without decoding twice.
        """
        if self._closed:
            raise SemgirError("scorer is closed")
        if not decoded:
            return []
        if self.method == "cascade":
            return self._impl.score_decoded(list(decoded), list(names))
        return self._score_safely(list(names), list(decoded))

    def iter_scores(self, items: Iterable[ImageInput], names: Iterable[str] | None = None,
                    batch_size: int | None = None) -> Iterator[Result]:
        """Score ``items`` in batches, yielding one :class:`Result` per item, in input order.

        A bad item yields an error row; the others are scored.
        """
        if self._closed:
            raise SemgirError("scorer is closed")
        if self.method == "cascade":  # rows in completion order: stage-1 decisions come first
            yield from self._impl.iter_scores(items, names, batch_size)
            return
        bs = batch_size or self.config.batch_size
        name_iter = iter(names) if names is not None else None
        it = iter(items)
        counter = itertools.count()
        while True:
            chunk = list(itertools.islice(it, bs))
            if not chunk:
                return
            rows: list[Result | None] = [None] * len(chunk)
            ok_idx, ok_names, ok_dec = [], [], []
            for i, item in enumerate(chunk):
                k = next(counter)
                name = next(name_iter) if name_iter is not None else (
                    os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"item-{k}")
                try:
                    dec = self._decode(item)
                except InputError as exc:
                    rows[i] = self._error(name, str(exc))
                    continue
                ok_idx.append(i)
                ok_names.append(name)
                ok_dec.append(dec)
            if ok_dec:
                for i, r in zip(ok_idx, self._score_safely(ok_names, ok_dec)):
                    rows[i] = r
            yield from rows  # type: ignore[misc]

    def score(self, items: Sequence[ImageInput] | Iterable[ImageInput], names: Iterable[str] | None = None,
              batch_size: int | None = None) -> list[Result]:
        if self.method == "cascade":  # input order (iter_scores yields the cascade's rows as they are decided)
            return self._impl.score(items, names, batch_size)
        return list(self.iter_scores(items, names, batch_size))

    def close(self) -> None:
        self._closed = True
        if self.method == "cascade" and self._impl is not None:
            self._impl.close()
        self._impl = None
        if self._features is not None and self._features.cache is not None:
            self._features.cache.close()
        self._features = None

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
