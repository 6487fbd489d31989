"""Export registered components to ONNX, validate them against PyTorch, and write the manifest.

>>> from semgir_engine.export.onnx_export import export_components
>>> export_components(["clip_image"], ModelSource.parse("tiny"), "out/")   # doctest: +SKIP

Every component follows its registry spec: input/output names, dynamic axes (the spec's string
dims), sample inputs. The graph is exported with ``torch.onnx.export(dynamo=True)`` (falling back
to the TorchScript exporter if dynamo fails), checked with ``onnx.checker``, then validated (see
:mod:`.validate`). Graphs over 2 GB keep their weights in one external-data file beside them.

The export directory::

    out/manifest.json                    versions, hashes, specs, precision, preprocessing, validation
    out/<component>.<precision>.onnx     (+ .onnx.data when over 2 GB)
    out/tokenizers/blip_vocab.txt        BLIP WordPiece vocabulary (captioner)
    out/tokenizers/bpe_simple_vocab_16e6.txt.gz   CLIP BPE vocabulary (SD text encoder, CLIP text)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from .. import registry
from ..errors import SemgirError
from ..hashing import sha256_file
from ..runtime.manifest import MANIFEST, MANIFEST_FORMAT, load_manifest
from ..spec import ComponentSpec, ModelSize, Precision
from .errors import ExportError, ExportExistsError
from .validate import ValidationReport, sample_inputs, validate

if TYPE_CHECKING:  # torch-free at import time
    from ..semgir.components import Bundles

log = logging.getLogger(__name__)

TWO_GB = 2**31 - 1
#: op types kept in fp32 by the fp16 conversion: normalisations, softmax, resampling, reductions
#: and the exponent/power ops whose fp16 range is too small
FP16_OP_BLOCK_LIST = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "SkipLayerNormalization", "SimplifiedLayerNormalization", "Softmax", "LogSoftmax", "Resize", "Upsample",
    "ReduceMean", "ReduceSum", "ReduceL2", "ReduceSumSquare", "Pow", "Sqrt", "Reciprocal", "Exp", "Erf",
    "Range", "CumSum", "TopK", "Min", "Max", "LpNormalization",
)
#: number of trailing graph nodes kept in fp32, per component ("the VAE decoder's last layers")
FP16_TAIL_FP32 = {"vae_decoder": 8}


@dataclass(frozen=True)
class ExportRecord:
    component: str
    precision: str
    path: str
    sha256: str
    size_bytes: int
    export_seconds: float
    validation: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def versions() -> dict:
    out = {}
    for mod in ("torch", "onnx", "onnxruntime", "onnxscript", "transformers", "diffusers", "open_clip"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001
            out[mod] = None
    from .. import __version__

    out["semgir_engine"] = __version__
    return out


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The export folder's manifest (an empty one for a new folder); the runtimes read it the same way."""
    return load_manifest(out_dir, missing_ok=True)


def write_manifest(out_dir: str | os.PathLike, manifest: dict) -> None:
    p = Path(out_dir) / MANIFEST
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, p)


def onnx_file_name(name: str, precision: Precision) -> str:
    return f"{name}.{precision.value}.onnx"


def _source(name: str, src, bundles) -> dict:
    """What the exported weights are: the SemGIR source, or for patch_cnn the patch model itself."""
    if name == "patch_cnn":
        det = bundles.patch_detector()
        return {"kind": "patch", "version": det.version, "weights_sha256": det.manifest["weights_sha256"]}
    from ..semgir.sources import weights_fingerprint

    return weights_fingerprint(src)


def _bundles(src, patch_model: str | None = None):
    from ..semgir.components import Bundles  # torch: imported only when exporting

    return Bundles(src, patch_model)


def __getattr__(name: str):  # `from semgir_engine.export.onnx_export import Bundles` stays lazy
    if name == "Bundles":
        from ..semgir.components import Bundles

        return Bundles
    raise AttributeError(name)


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------
def _torch_export(module, spec: ComponentSpec, path: Path, opset: int) -> str:
    """Export with dynamo (preferred), else the TorchScript exporter. Returns the exporter used."""
    import torch

    inputs = sample_inputs(spec, "opt", seed=0)
    args = tuple(torch.from_numpy(inputs[n]) for n in spec.input_names())
    dyn = {t.name: t.dynamic_axes for t in spec.inputs + spec.outputs if t.dynamic_axes}
    kw = dict(input_names=spec.input_names(), output_names=spec.output_names(), opset_version=opset,
              dynamic_axes=dyn)
    errors = []
    for dynamo in (True, False):
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*dynamic_axes.*")
                torch.onnx.export(module, args, str(path), dynamo=dynamo, **kw)
            return "dynamo" if dynamo else "torchscript"
        except Exception as exc:  # noqa: BLE001 - try the other exporter, report both on failure
            log.warning("%s: %s exporter failed: %s", spec.name, "dynamo" if dynamo else "torchscript", exc)
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(exc).__name__}: {exc}")
    raise ExportError(f"{spec.name}: both ONNX exporters failed: " + " | ".join(errors))


def _name_output_axes(model, spec: ComponentSpec) -> None:
    """Give derived output axes (dynamo writes e.g. ``2*height``) the spec's names. An axis the
    exporter fixed to a number stays a number, so that validation reports it."""
    by_name = {t.name: t for t in spec.inputs + spec.outputs}
    for v in list(model.graph.input) + list(model.graph.output):
        t = by_name.get(v.name)
        if t is None:
            continue
        for d, want in zip(v.type.tensor_type.shape.dim, t.shape):
            if isinstance(want, str) and d.dim_param and d.dim_param != want:
                d.dim_param = want


def _fix_ssa(model) -> int:
    """Rename values that more than one node produces (dynamo names an internal ``aten.embedding``
    output ``embedding``, which clashes with a graph output of that name). The last producer keeps
    the name; earlier ones and their consumers get a suffix. Returns the number of renames."""
    from collections import Counter

    total = Counter(o for n in model.graph.node for o in n.output if o)
    dups = {k for k, v in total.items() if v > 1}
    if not dups:
        return 0
    seen: Counter = Counter()
    alias: dict[str, str] = {}
    renamed = 0
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
        for i, name in enumerate(node.output):
            if name not in dups:
                continue
            seen[name] += 1
            if seen[name] < total[name]:
                new = f"{name}__ssa{seen[name]}"
                node.output[i] = new
                alias[name] = new
                renamed += 1
            else:
                alias.pop(name, None)
    return renamed


def _toposort(model) -> None:
    """Reorder nodes topologically (the fp16 converter appends its input Casts at the end)."""
    from collections import defaultdict, deque

    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [set(producer[x] for x in n.input if x in producer) for n in nodes]
    users = defaultdict(list)
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    remaining = [len(d) for d in deps]
    ready = deque(i for i, r in enumerate(remaining) if r == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        raise ExportError("graph has a cycle after fp16 conversion")
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)


def _with_shapes(model, tmp: Path):
    """``model`` with inferred value shapes. Under 2 GB in memory; above, through a file, since
    in-memory inference serialises the model into one protobuf (2 GB limit) and fails."""
    import onnx

    if sum(len(t.raw_data) for t in model.graph.initializer) + (64 << 20) < TWO_GB:
        return onnx.shape_inference.infer_shapes(model)
    src, dst = tmp / "fp16-src.onnx", tmp / "fp16-shapes.onnx"
    _save(model, src)
    del model
    onnx.shape_inference.infer_shapes_path(str(src), str(dst))
    return onnx.load(str(dst))  # weights come from src's external data file, beside it


def _to_fp16(model, name: str, tmp: Path):
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    block_ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_OP_BLOCK_LIST))
    tail = FP16_TAIL_FP32.get(name, 0)
    block_nodes = [n.name for n in model.graph.node[-tail:]] if tail else []
    model = _with_shapes(model, tmp)
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=block_ops, node_block_list=block_nodes,
                                     disable_shape_infer=True)
    _toposort(model)
    return model


def _save(model, path: Path) -> list[Path]:
    """Save as one file, or with one external-data file when the weights pass 2 GB."""
    import onnx

    data = path.with_name(path.name + ".data")
    for p in (path, data):
        if p.exists():
            p.unlink()
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    if weight_bytes + (64 << 20) < TWO_GB:
        onnx.save_model(model, str(path))
        return [path]
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    return [path, data]


def export_component(name: str, src, out_dir: str | os.PathLike, precision: Precision = Precision.FP32,
                     opset: int = 18, force: bool = False, bundles: Bundles | None = None,
                     check: bool = True) -> ExportRecord:
    """Export one registered component, validate it, and record it in ``out_dir/manifest.json``."""
    import onnx

    precision = Precision(precision)
    if opset < 18:
        raise ExportError(f"opset {opset} < 18 is not supported")
    spec = registry.get(name, "tiny" if src.size is ModelSize.TINY else "full")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out)
    target = out / onnx_file_name(name, precision)
    if not force and (target.exists() or precision.value in manifest.get("components", {}).get(name, {})):
        raise ExportExistsError(f"{target} already exists; pass --force (force=True) to replace it")
    bundles = bundles or _bundles(src)
    module = bundles.module(name)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}-") as tmp:
        raw = Path(tmp) / f"{name}.onnx"
        exporter = _torch_export(module, spec, raw, opset)
        model = onnx.load(str(raw))  # pulls external data into memory
        _fix_ssa(model)
        _name_output_axes(model, spec)
        if precision is Precision.FP16:
            model = _to_fp16(model, name, Path(tmp))
        staged = Path(tmp) / target.name
        files = _save(model, staged)
        del model
        try:
            onnx.checker.check_model(str(staged), full_check=False)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{name}: onnx.checker rejected the graph: {exc}") from exc
        export_s = time.perf_counter() - t0
        report: ValidationReport | None = validate(name, spec, str(staged), module, precision) if check else None
        final = []
        for f in files:
            dest = out / f.name
            os.replace(f, dest)
            final.append(dest)
    total = time.perf_counter() - t0
    file_info = [{"file": f.name, "sha256": sha256_file(f), "bytes": f.stat().st_size} for f in final]
    entry = {
        "file": target.name,
        "sha256": file_info[0]["sha256"],
        "files": file_info,
        "spec_digest": spec.digest(),
        "spec": spec.to_dict(),
        "precision": precision.value,
        "opset": opset,
        "exporter": exporter,
        "versions": versions(),
        "source": _source(name, src, bundles),
        "preprocess": spec.to_dict()["preprocess"],
        "validation": report.to_dict() if report else None,
        "export_seconds": round(export_s, 3),
        "total_seconds": round(total, 3),
    }
    manifest = read_manifest(out)  # re-read: assets may have been written meanwhile
    manifest.setdefault("components", {}).setdefault(name, {})[precision.value] = entry
    manifest["format"] = MANIFEST_FORMAT
    write_manifest(out, manifest)
    size = sum(f["bytes"] for f in file_info)
    log.info("%s (%s): exported in %.1fs, %.1f MB, validation %s", name, precision.value, total, size / 1e6,
             report.to_dict() if report else "skipped")
    return ExportRecord(name, precision.value, str(target), entry["sha256"], size, round(total, 3),
                        report.to_dict() if report else {})


# ------------------------------------------------------------------------------------------
# pipeline assets: tokenizers and the settings a runtime needs besides the graphs
# ------------------------------------------------------------------------------------------
def write_pipeline_assets(names: Iterable[str], bundles: Bundles, out_dir: str | os.PathLike) -> dict:
    """Tokenizer files and pipeline settings for the components in ``names`` (merged into the manifest)."""
    from ..semgir.components import pipeline_settings

    pipe = pipeline_settings(names, bundles, out_dir)
    manifest = read_manifest(out_dir)
    merged = dict(manifest.get("pipeline", {}))
    merged.update(pipe)
    manifest["pipeline"] = merged
    write_manifest(out_dir, manifest)
    return merged


def resolve_names(components: str | Iterable[str] | None) -> list[str]:
    """``None``/``"all"`` -> every registered component; a comma list or iterable -> checked names."""
    if components is None or components == "all":
        return registry.names()
    if isinstance(components, str):
        components = [c.strip() for c in components.split(",") if c.strip()]
    names = list(components)
    for n in names:
        registry.get(n, "tiny")  # raises UnknownNameError listing the valid names
    return names


def export_components(components, src, out_dir: str | os.PathLike, precision: Precision = Precision.FP32,
                      opset: int = 18, force: bool = False, check: bool = True,
                      on_done: Callable[[ExportRecord], None] | None = None,
                      on_start: Callable[[str], None] | None = None,
                      patch_model: str | None = None, bundles: Bundles | None = None) -> list[ExportRecord]:
    """Export several components (each validated) and the pipeline assets they need.
    ``patch_model``: the patch-shuffle model that ``patch_cnn`` exports (default: the shipped one)."""
    names = resolve_names(components)
    out = Path(out_dir)
    manifest = read_manifest(out)
    if not force:
        clash = [n for n in names if Precision(precision).value in manifest.get("components", {}).get(n, {})
                 or (out / onnx_file_name(n, Precision(precision))).exists()]
        if clash:
            raise ExportExistsError(f"{out} already holds {', '.join(clash)} ({Precision(precision).value}); "
                                    "pass --force to replace")
    bundles = bundles or _bundles(src, patch_model)
    records = []
    for n in names:
        if on_start:
            on_start(n)
        try:
            rec = export_component(n, src, out, precision, opset, force=force, bundles=bundles, check=check)
        except SemgirError:
            raise
        except Exception as exc:  # noqa: BLE001 - name the component in whatever went wrong
            raise ExportError(f"{n}: {type(exc).__name__}: {exc}") from exc
        records.append(rec)
        if on_done:
            on_done(rec)
    write_pipeline_assets(names, bundles, out)
    return records


def export_attribution(generators: str | os.PathLike, src, out_dir: str | os.PathLike,
                       precision: Precision = Precision.FP32, opset: int = 18, force: bool = False,
                       check: bool = True, on_start: Callable[[str], None] | None = None,
                       on_done: Callable[[ExportRecord], None] | None = None) -> list[ExportRecord]:
    """SemGIR-A graphs under ``out_dir/attribution/``: the combiner, and per generator its regenerator graphs
    and its head (as that folder's ``semgir_head``), each validated like any component. ``generators``: the
    generators.json written by ``train attribution``; ``src``: the captioner/embedder weights they were
    trained with (the main export's)."""
    from ..runtime.ort_semgir import ATTRIBUTION_DIR
    from ..semgir.attribution import load_attribution
    from ..semgir.components import Bundles

    model, man, specs = load_attribution(generators)
    root = Path(out_dir) / ATTRIBUTION_DIR
    records = export_components(["attribution_combiner"], src, root, precision, opset, force, check, on_done,
                                on_start, bundles=Bundles(src, attribution=model))
    thresholds = man.get("thresholds", {})
    gens = []
    for spec, head in zip(specs, model.heads):
        folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name)
        meta = {"version": f"attribution-head-{spec.name}", "threshold": float(thresholds.get(spec.name, 0.5))}
        bundles = Bundles(spec.source, head=(head.eval(), meta))
        records += export_components(list(registry.GENERATOR_COMPONENTS), spec.source, root / folder, precision,
                                     opset, force, check, on_done, on_start, bundles=bundles)
        gens.append({"name": spec.name, "models": spec.models, "seed": spec.seed, "steps": spec.steps,
                     "guidance_scale": spec.guidance_scale, "scheduler": spec.scheduler,
                     "resolution": spec.resolution, "dir": folder})
    manifest = read_manifest(root)
    manifest["pipeline"]["attribution"] = {"generators": gens, "names": [g["name"] for g in gens],
                                           "base_key": man.get("base_key", ""), "thresholds": thresholds}
    write_manifest(root, manifest)
    return records
