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

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from .. import registry
from ..errors import SemgirError
from ..hashing import sha256_file
from ..spec import ComponentSpec, ModelSize, Precision
from .errors import ExportError, ExportExistsError
from .validate import ValidationReport, sample_inputs, validate

if TYPE_CHECKING:  # torch-free at import time
    from ..semgir.components import Bundles

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
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
def weights_fingerprint(src) -> dict:
    """What the weights are: tiny/random (seed + torch version: random init depends on it) or real
    (the HF snapshot revision when the folder is one, else a fingerprint of file names, sizes, mtimes)."""
    if src.size is not ModelSize.REAL:
        import torch

        return {"kind": src.size.value, "seed": src.seed, "fingerprint": f"{src.size.value}-seed{src.seed}-torch{torch.__version__}"}
    parts = {}
    for part in ("blip", "sd", "clip", "head", "lcm-lora"):
        folder = src.find(part, (), required=False)
        if folder is None:
            continue
        if folder.parent.name == "snapshots":
            parts[part] = f"revision:{folder.name}"
            continue
        h = hashlib.sha256()
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns};".encode())
        parts[part] = f"files:{h.hexdigest()[:16]}"
    blob = json.dumps(parts, sort_keys=True)
    return {"kind": "real", "root": str(src.root) if src.root else None, "parts": parts,
            "fingerprint": hashlib.sha256(blob.encode()).hexdigest()[:16]}


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
    p = Path(out_dir) / MANIFEST
    if not p.exists():
        return {"format": MANIFEST_FORMAT, "components": {}, "pipeline": {}}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{p} is not valid JSON ({exc}); move it away or export with --force") from exc


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
#: the patch-shuffle manifest entries a runtime needs beside the graph (no weights: the graph holds them)
PATCH_RUNTIME_KEYS = ("format", "format_version", "version", "weights_sha256", "config", "preprocessing", "threshold",
                      "temperature", "test_time", "architecture", "calibration", "decision")


def write_pipeline_assets(names: Iterable[str], bundles: Bundles, out_dir: str | os.PathLike) -> dict:
    """Tokenizer files and pipeline settings for the components in ``names`` (merged into the manifest)."""
    out = Path(out_dir)
    tok_dir = out / "tokenizers"
    tok_dir.mkdir(parents=True, exist_ok=True)
    names = set(names)
    size = "tiny" if bundles.src.size is ModelSize.TINY else "full"
    pipe: dict = {"size": size, "source": weights_fingerprint(bundles.src)}
    if names & {"blip_vision", "blip_text_decoder", "blip_text_decoder_init", "blip_text_decoder_with_past"}:
        cap = bundles.captioner()
        tok = cap.tokenizer
        vocab = tok.get_vocab()
        inv = [None] * (max(vocab.values()) + 1)
        for t, i in vocab.items():
            inv[i] = t
        inv = [t if t is not None else f"[unused_{i}]" for i, t in enumerate(inv)]
        (tok_dir / "blip_vocab.txt").write_text("\n".join(inv) + "\n", encoding="utf-8")
        cfg = cap.model.config.text_config
        gen = cap.model.generation_config
        pipe["captioner"] = {
            "vocab_file": "tokenizers/blip_vocab.txt",
            "bos_token_id": int(getattr(cap.model, "decoder_input_ids", None) or cfg.bos_token_id),
            "eos_token_id": int(cfg.sep_token_id),
            "pad_token_id": int(cfg.pad_token_id),
            "special_ids": sorted(int(i) for i in tok.all_special_ids),
            "do_lower_case": bool(getattr(tok, "do_lower_case", True)),
            "max_new_tokens": cap.max_new_tokens,
            "preprocess": registry.get("blip_vision", size).to_dict()["preprocess"],
            "generation": {k: getattr(gen, k, None) for k in ("repetition_penalty", "no_repeat_ngram_size",
                                                                "min_length", "max_length")},
        }
    if names & {"sd_text_encoder", "unet", "vae_decoder", "vae_encoder", "clip_text"}:
        import open_clip.tokenizer as oct

        gz = Path(oct.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
        shutil.copyfile(gz, tok_dir / gz.name)
        pipe["clip_tokenizer"] = {"bpe_file": f"tokenizers/{gz.name}", "context_length": 77}
    if names & {"sd_text_encoder", "unet", "vae_decoder"}:
        r = bundles.regenerator()
        pad_id = getattr(r.tokenizer, "pad_id", None)  # SD pads with <|endoftext|>, open_clip with 0
        if pad_id is None:
            hf = getattr(r.tokenizer, "hf", None)
            pad_id = 0 if hf is None else int(hf.pad_token_id)
        pad_id = int(pad_id)
        pipe["regenerator"] = {
            "scheduler_config": {k: v for k, v in r.scheduler_config.items() if not str(k).startswith("_")},
            "scheduler": r.scheduler_name,
            "has_lcm": r.has_lcm,
            "resolution": r.resolution,
            "vae_scale": r.vae_scale,
            "vae_scaling_factor": float(r.vae.config.scaling_factor),
            "latent_channels": int(r.unet.config.in_channels),
            "tokenizer_pad_id": pad_id,
        }
    if names & {"clip_image", "clip_text"}:
        e = bundles.embedder()
        pipe["embedder"] = {"dim": e.dim, "preprocess": registry.get("clip_image", size).to_dict()["preprocess"]}
    if "patch_cnn" in names:
        # the runtime needs the model's own manifest (preprocessing, temperature, threshold), never its weights
        det = bundles.patch_detector()
        pipe["patch"] = {k: det.manifest[k] for k in PATCH_RUNTIME_KEYS if k in det.manifest}
    if "semgir_head" in names:
        _, head_manifest = bundles.head()
        pipe["head"] = {"threshold": float(head_manifest.get("threshold", 0.5)),
                        "version": str(head_manifest.get("version", "semgir-head"))}
    manifest = read_manifest(out)
    merged = dict(manifest.get("pipeline", {}))
    merged.update(pipe)
    manifest["pipeline"] = merged
    write_manifest(out, manifest)
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
                      patch_model: str | None = None) -> list[ExportRecord]:
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
    bundles = _bundles(src, patch_model)
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
