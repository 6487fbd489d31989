"""Triton Inference Server model repository from an ONNX export directory.

>>> write_triton_repo("export/", "triton_repo/")          # doctest: +SKIP

For every stateless component in ``export/manifest.json`` (encoders, UNet step, VAE, heads, the
patch detector when exported) it writes::

    triton_repo/<component>/config.pbtxt            backend onnxruntime, IO from the graph itself
    triton_repo/<component>/1/model.onnx            (+ the external-data file, same name as exported)
    triton_repo/<component>/semgir_manifest.json    what it was built from (sha256, spec digest)

and, when every SemGIR pipeline component is there, a Python-backend BLS model that runs the
loops (greedy caption decoding, the few-step DPM-Solver++ regeneration) and calls the component
models one request at a time::

    triton_repo/semgir_pipeline/config.pbtxt        backend python; image bytes in, p_ai + caption out
    triton_repo/semgir_pipeline/1/model.py          BLS over :class:`~semgir_engine.runtime.ort_semgir.OrtSemgir`
    triton_repo/semgir_pipeline/1/assets/           manifest + tokenizer files (graphs point at ../../<component>)

Triton itself is not installable here: :func:`validate_repo` checks each config structurally (the
real ``ModelConfig`` protobuf schema when ``tritonclient`` is installed, else a small text-format
parser), that every input/output matches the ONNX graph's names, types and shapes, and that the
files are where Triton looks for them. See ``docs/triton.md``.

The manifest read here is the one :mod:`.onnx_export` writes (format 1)::

    {"format": 1,
     "components": {NAME: {PRECISION: {"file": "NAME.PRECISION.onnx", "sha256": ..., "files": [{"file", ...}],
                                       "spec": ComponentSpec.to_dict(), "spec_digest": ..., ...}}},
     "pipeline": {"captioner": {...}, "regenerator": {...}, "clip_tokenizer": {...}, ...}}
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import click

from ..errors import SemgirError

from .. import registry  # noqa: E402

log = logging.getLogger(__name__)

PIPELINE_MODEL = "semgir_pipeline"
#: components the BLS pipeline calls: the pipeline's, with the stateless decoder in place of the key/value-cache
#: pair (Triton batches requests from many clients dynamically; a per-request cache does not batch)
PIPELINE_COMPONENTS = tuple(n for n in registry.PIPELINE_COMPONENTS if not n.startswith("blip_text_decoder")) \
    + ("blip_text_decoder",)
BATCH_AXIS = "batch"
INSTANCE_KINDS = ("auto", "gpu", "cpu")

#: ONNX TensorProto element types -> Triton data types
_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32",
                   7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}
TRITON_TYPES = frozenset(_ONNX_TO_TRITON.values()) | {"TYPE_STRING", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64"}


class TritonRepoError(SemgirError):
    """The export directory cannot be turned into a repository, or a repository is malformed."""


@dataclass(frozen=True)
class TritonTensor:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[int, ...]  # without the batch axis when the model batches; -1 = dynamic
    reshape: tuple[int, ...] | None = None  # for tensors that are only the batch axis: dims [1], reshape []


@dataclass(frozen=True)
class TritonModel:
    name: str
    backend: str
    max_batch_size: int
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    preferred_batch_sizes: tuple[int, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# planning: manifest + graph -> TritonModel
# ------------------------------------------------------------------------------------------
def read_export_manifest(export_dir: str | os.PathLike) -> dict:
    p = Path(export_dir) / "manifest.json"
    if not p.is_file():
        raise TritonRepoError(f"{export_dir} has no manifest.json; export first: semgir-engine export --out {export_dir}")
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise TritonRepoError(f"{p} is not valid JSON: {exc}") from exc
    if m.get("format") != 1 or not isinstance(m.get("components"), dict):
        raise TritonRepoError(f"{p}: unknown manifest format {m.get('format')!r} (this build reads format 1)")
    return m


def _graph_io(path: Path) -> tuple[list[tuple[str, int, list]], list[tuple[str, int, list]]]:
    """(inputs, outputs) of an ONNX graph as (name, elem_type, [int | str | None per axis])."""
    try:
        import onnx
    except ImportError as exc:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("onnx", "export", "writing a Triton repository") from exc
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def io(values):
        out = []
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
            out.append((v.name, t.elem_type, dims))
        return out

    return io(model.graph.input), io(model.graph.output)


def _tensor(name: str, elem_type: int, dims: list, batched: bool, where: str) -> TritonTensor:
    if elem_type not in _ONNX_TO_TRITON:
        raise TritonRepoError(f"{where}: tensor {name!r} has ONNX type {elem_type}, which Triton cannot serve")
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in dims]
    if batched:
        shape = shape[1:]
    if batched and not shape:
        return TritonTensor(name, _ONNX_TO_TRITON[elem_type], (1,), reshape=())
    return TritonTensor(name, _ONNX_TO_TRITON[elem_type], tuple(shape))


def plan_component(export_dir: str | os.PathLike, manifest: dict, component: str, precision: str = "fp32",
                   max_batch_size: int | None = None) -> tuple[TritonModel, list[Path]]:
    """The Triton model for one exported component, and the files it needs (graph first)."""
    entries = manifest["components"].get(component)
    if not entries:
        raise TritonRepoError(f"{export_dir} holds no {component!r} (has: {', '.join(sorted(manifest['components']))})")
    if precision not in entries:
        raise TritonRepoError(f"{component}: no {precision} export (has: {', '.join(sorted(entries))})")
    entry = entries[precision]
    files = [Path(export_dir) / f["file"] for f in entry.get("files", [{"file": entry["file"]}])]
    for f in files:
        if not f.is_file():
            raise TritonRepoError(f"{f} is listed in the manifest but missing; re-export {component}")
    graph_in, graph_out = _graph_io(files[0])
    spec = entry.get("spec") or {}
    spec_in = [t["name"] for t in spec.get("inputs", [])]
    spec_out = [t["name"] for t in spec.get("outputs", [])]
    if spec_in and sorted(spec_in) != sorted(n for n, _, _ in graph_in):
        raise TritonRepoError(f"{component}: graph inputs {[n for n, _, _ in graph_in]} differ from the spec's {spec_in}")
    if spec_out and not set(spec_out) <= {n for n, _, _ in graph_out}:
        raise TritonRepoError(f"{component}: graph outputs {[n for n, _, _ in graph_out]} lack the spec's {spec_out}")
    # batching: every spec tensor starts with the batch axis (the registry's convention)
    spec_tensors = spec.get("inputs", []) + spec.get("outputs", [])
    batched = bool(spec_tensors) and all(t["shape"] and t["shape"][0] == BATCH_AXIS for t in spec_tensors)
    profile = spec.get("profile", {}).get(BATCH_AXIS)
    if batched:
        mbs = int(max_batch_size or (profile[2] if profile else 8))
        preferred = tuple(sorted({b for b in ((profile[1] if profile else 1), mbs) if 1 <= b <= mbs}))
    else:
        mbs, preferred = 0, ()
    where = f"{component} ({files[0].name})"
    inputs = tuple(_tensor(n, e, d, batched, where) for n, e, d in graph_in)
    outputs = tuple(_tensor(n, e, d, batched, where) for n, e, d in graph_out)
    provenance = {"component": component, "precision": precision, "source_file": entry["file"],
                  "sha256": entry.get("sha256"), "spec_digest": entry.get("spec_digest"),
                  "source": entry.get("source"), "opset": entry.get("opset"), "preprocess": entry.get("preprocess")}
    return TritonModel(component, "onnxruntime", mbs, inputs, outputs, preferred, provenance=provenance), files


def pipeline_model(max_batch_size: int, parameters: dict[str, str]) -> TritonModel:
    """The BLS model: encoded image bytes in; p_ai, caption and sha256 out (one row per image)."""
    return TritonModel(
        PIPELINE_MODEL, "python", max_batch_size,
        inputs=(TritonTensor("image", "TYPE_STRING", (1,)),),
        outputs=(TritonTensor("p_ai", "TYPE_FP64", (1,)), TritonTensor("caption", "TYPE_STRING", (1,)),
                 TritonTensor("sha256", "TYPE_STRING", (1,))),
        preferred_batch_sizes=(max_batch_size,), parameters=parameters,
        provenance={"component": PIPELINE_MODEL, "calls": list(PIPELINE_COMPONENTS)})


# ------------------------------------------------------------------------------------------
# rendering config.pbtxt
# ------------------------------------------------------------------------------------------
def _dims(d: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(x) for x in d) + " ]"


def _tensor_block(t: TritonTensor) -> str:
    lines = ["  {", f'    name: "{t.name}"', f"    data_type: {t.data_type}", f"    dims: {_dims(t.dims)}"]
    if t.reshape is not None:
        lines.append(f"    reshape: {{ shape: {_dims(t.reshape)} }}")
    lines.append("  }")
    return "\n".join(lines)


def render_config(model: TritonModel, instance_kind: str = "auto", instance_count: int = 1,
                  max_queue_delay_us: int = 1000) -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ModelConfig)."""
    if instance_kind not in INSTANCE_KINDS:
        from ..errors import UnknownNameError

        raise UnknownNameError("instance kind", instance_kind, INSTANCE_KINDS)
    out = [f'name: "{model.name}"', f'backend: "{model.backend}"', f"max_batch_size: {model.max_batch_size}"]
    out.append("input [\n" + ",\n".join(_tensor_block(t) for t in model.inputs) + "\n]")
    out.append("output [\n" + ",\n".join(_tensor_block(t) for t in model.outputs) + "\n]")
    if model.max_batch_size > 0:
        out.append("dynamic_batching {\n"
                   + (f"  preferred_batch_size: {_dims(model.preferred_batch_sizes)}\n"
                      if model.preferred_batch_sizes else "")
                   + f"  max_queue_delay_microseconds: {max_queue_delay_us}\n}}")
    if instance_kind != "auto":  # auto: Triton's default, one instance per GPU (or CPU without one)
        out.append(f"instance_group [ {{ count: {instance_count} kind: KIND_{instance_kind.upper()} }} ]")
    out.append("version_policy: { latest: { num_versions: 1 } }")
    for k, v in sorted(model.parameters.items()):
        out.append(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}')
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# writing the repository
# ------------------------------------------------------------------------------------------
def _place(src: Path, dest: Path) -> None:
    """Hard-link when possible (graphs can be GBs), else copy."""
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def write_triton_repo(export_dir: str | os.PathLike, repo_dir: str | os.PathLike,
                      components: Iterable[str] | None = None, precision: str = "fp32", *,
                      max_batch_size: int | None = None, instance_kind: str = "auto", max_queue_delay_us: int = 1000,
                      pipeline: bool | None = None, steps: int = 4, guidance_scale: float = 1.0, seed: int = 0,
                      max_new_tokens: int = 20, force: bool = False) -> list[TritonModel]:
    """Write a Triton model repository for the exported components (default: all in the manifest).

    ``pipeline``: add the BLS ``semgir_pipeline`` model (default: when every pipeline component is
    included). An existing model folder is replaced only with ``force``.
    """
    export_dir, repo = Path(export_dir), Path(repo_dir)
    manifest = read_export_manifest(export_dir)
    names = list(components) if components is not None else sorted(manifest["components"])
    if not names:
        raise TritonRepoError(f"{export_dir}/manifest.json lists no components")
    with_pipeline = set(PIPELINE_COMPONENTS) <= set(names) if pipeline is None else pipeline
    if with_pipeline:
        missing = [c for c in PIPELINE_COMPONENTS if c not in names]
        if missing:
            raise TritonRepoError(f"the pipeline model needs {', '.join(missing)} too")
        for need in ("captioner", "regenerator", "clip_tokenizer", "embedder", "head"):
            if need not in manifest.get("pipeline", {}):
                raise TritonRepoError(f"{export_dir}: manifest lacks the {need!r} pipeline settings; re-export")
    planned = [plan_component(export_dir, manifest, c, precision, max_batch_size) for c in names]
    targets = [m.name for m, _ in planned] + ([PIPELINE_MODEL] if with_pipeline else [])
    clash = [t for t in targets if (repo / t).exists()]
    if clash and not force:
        raise TritonRepoError(f"{repo} already holds {', '.join(clash)}; pass --force to replace")
    repo.mkdir(parents=True, exist_ok=True)
    written: list[TritonModel] = []
    for model, files in planned:
        mdir = repo / model.name
        if mdir.exists():
            shutil.rmtree(mdir)
        (mdir / "1").mkdir(parents=True)
        _place(files[0], mdir / "1" / "model.onnx")
        for extra in files[1:]:  # external data keeps the name the graph refers to
            _place(extra, mdir / "1" / extra.name)
        (mdir / "config.pbtxt").write_text(render_config(model, instance_kind, 1, max_queue_delay_us))
        (mdir / "semgir_manifest.json").write_text(json.dumps(model.provenance, indent=2, sort_keys=True,
                                                              default=str))
        written.append(model)
    if with_pipeline:
        # the pipeline's batch goes to every component in one request (twice over to the UNet with guidance)
        # (the embedder sees candidates and regenerations together; BLS chunks anything larger)
        limits = {m.name: m.max_batch_size for m, _ in planned if m.max_batch_size}
        doubled = {"clip_image"} | ({"unet"} if guidance_scale > 1 else set())
        pipe_mbs = min([max_batch_size or 8] + [v // (2 if k in doubled else 1)
                                                 for k, v in limits.items() if k in PIPELINE_COMPONENTS])
        written.append(_write_pipeline(export_dir, manifest, repo, precision, planned, max(1, pipe_mbs),
                                       instance_kind, max_queue_delay_us,
                                       {"steps": str(steps), "guidance_scale": str(guidance_scale), "seed": str(seed),
                                        "max_new_tokens": str(max_new_tokens), "precision": precision}))
    log.info("wrote %d Triton model(s) to %s", len(written), repo)
    return written


def _write_pipeline(export_dir: Path, manifest: dict, repo: Path, precision: str, planned, max_batch_size: int,
                    instance_kind: str, max_queue_delay_us: int, params: dict[str, str]) -> TritonModel:
    model = pipeline_model(max_batch_size, params)
    mdir = repo / PIPELINE_MODEL
    if mdir.exists():
        shutil.rmtree(mdir)
    assets = mdir / "1" / "assets"
    assets.mkdir(parents=True)
    shutil.copyfile(Path(__file__).with_name("triton_bls.py"), mdir / "1" / "model.py")
    # the manifest the pipeline reads: the same settings; each graph entry points at the served model
    m = {"format": manifest["format"], "pipeline": manifest["pipeline"], "components": {},
         "triton_max_batch_size": {comp.name: comp.max_batch_size for comp, _ in planned}}
    for comp, _files in planned:
        if comp.name in PIPELINE_COMPONENTS:
            entry = dict(manifest["components"][comp.name][precision])
            entry["file"] = f"../../../{comp.name}/1/model.onnx"
            entry.pop("files", None)
            m["components"][comp.name] = {precision: entry}
    (assets / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True, default=str))
    for key in ("captioner", "clip_tokenizer"):
        rel = manifest["pipeline"][key].get("vocab_file") or manifest["pipeline"][key].get("bpe_file")
        (assets / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export_dir / rel, assets / rel)
    (mdir / "config.pbtxt").write_text(render_config(model, instance_kind, 1, max_queue_delay_us))
    (mdir / "semgir_manifest.json").write_text(json.dumps(model.provenance, indent=2, sort_keys=True))
    return model


# ------------------------------------------------------------------------------------------
# structural validation (Triton is not installable here)
# ------------------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([A-Za-z_][A-Za-z0-9_.]*)|(-?[0-9][0-9.eE+-]*))')


def parse_pbtxt(text: str) -> dict:
    """A small parser for protobuf text format: messages become dicts, repeated fields lists.

    Enough to check a config without ``tritonclient``; a field seen twice becomes a list.
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TritonRepoError(f"config.pbtxt: cannot parse at {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.group(1):
            continue
        kind = "str" if m.group(2) else "punct" if m.group(3) else "ident" if m.group(4) else "num"
        val = next(g for g in m.groups()[1:] if g is not None)
        tokens.append((kind, val))
    i = 0

    def peek():
        return tokens[i] if i < len(tokens) else ("eof", "")

    def take(expect: str | None = None):
        nonlocal i
        tok = peek()
        if expect is not None and tok[1] != expect:
            raise TritonRepoError(f"config.pbtxt: expected {expect!r}, got {tok[1]!r}")
        i += 1
        return tok

    def scalar():
        kind, val = take()
        if kind == "str":
            return json.loads(val)
        if kind == "num":
            return float(val) if any(c in val for c in ".eE") else int(val)
        if kind == "ident":
            return val
        raise TritonRepoError(f"config.pbtxt: unexpected {val!r}")

    def value():
        kind, val = peek()
        if val == "{":
            take("{")
            return message("}")
        if val == "[":
            take("[")
            items = []
            while not at_end("]"):
                items.append(value())
                if peek()[1] == ",":
                    take(",")
            take("]")
            return items
        return scalar()

    def at_end(end: str) -> bool:
        kind, val = peek()
        if kind == "eof":
            if end != "eof":
                raise TritonRepoError(f"config.pbtxt: missing {end!r} at the end")
            return True
        return kind == "punct" and val == end

    def message(end: str) -> dict:
        out: dict = {}
        while not at_end(end):
            kind, key = take()
            if kind != "ident":
                raise TritonRepoError(f"config.pbtxt: expected a field name, got {key!r}")
            if peek()[1] == ":":
                take(":")
            v = value()
            if key in out:
                prev = out[key]
                out[key] = (prev if isinstance(prev, list) else [prev]) + (v if isinstance(v, list) else [v])
            else:
                out[key] = v
            if peek()[1] in (",", ";"):
                take()
        if end != "eof":
            take(end)
        return out

    return message("eof")


def _parse_with_tritonclient(text: str) -> dict | None:
    """Parse against Triton's real ModelConfig schema (unknown fields or enum values raise)."""
    try:
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise TritonRepoError(f"config.pbtxt does not follow Triton's ModelConfig schema: {exc}") from exc
    return json_format.MessageToDict(cfg, preserving_proto_field_name=True)


def _as_list(v) -> list:
    return v if isinstance(v, list) else ([] if v is None else [v])


def load_config(path: str | os.PathLike, schema: bool = True) -> dict:
    """A config.pbtxt as a dict; checked against Triton's schema when ``tritonclient`` is installed."""
    text = Path(path).read_text()
    parsed = parse_pbtxt(text)
    if schema:
        _parse_with_tritonclient(text)
    return parsed


def validate_repo(repo_dir: str | os.PathLike, schema: bool = True) -> dict[str, dict]:
    """Check a model repository as Triton would load it; returns {model: parsed config}.

    Raises :class:`TritonRepoError` listing every problem: config syntax and schema, name = folder,
    version folder with the backend's file, batching consistency, and for ONNX models every
    input/output name, type and shape against the graph.
    """
    repo = Path(repo_dir)
    problems: list[str] = []
    configs: dict[str, dict] = {}
    models = sorted(p for p in repo.iterdir() if p.is_dir()) if repo.is_dir() else []
    if not models:
        raise TritonRepoError(f"{repo} holds no model folders")
    for mdir in models:
        name = mdir.name
        cfg_path = mdir / "config.pbtxt"
        if not cfg_path.is_file():
            problems.append(f"{name}: no config.pbtxt")
            continue
        try:
            cfg = load_config(cfg_path, schema)
        except TritonRepoError as exc:
            problems.append(f"{name}: {exc}")
            continue
        configs[name] = cfg
        if cfg.get("name") != name:
            problems.append(f"{name}: config name {cfg.get('name')!r} differs from the folder name")
        backend = cfg.get("backend")
        versions = [p for p in mdir.iterdir() if p.is_dir() and p.name.isdigit()]
        if not versions:
            problems.append(f"{name}: no numeric version folder")
        mbs = cfg.get("max_batch_size", 0)
        if not isinstance(mbs, int) or mbs < 0:
            problems.append(f"{name}: max_batch_size must be an integer >= 0")
        if "dynamic_batching" in cfg and not mbs:
            problems.append(f"{name}: dynamic_batching needs max_batch_size > 0")
        tensors = {"input": _as_list(cfg.get("input")), "output": _as_list(cfg.get("output"))}
        for kind, ts in tensors.items():
            if not ts:
                problems.append(f"{name}: no {kind}s")
            for t in ts:
                if t.get("data_type") not in TRITON_TYPES:
                    problems.append(f"{name}: {kind} {t.get('name')!r} has data_type {t.get('data_type')!r}")
                dims = _as_list(t.get("dims"))
                if not dims or any(not isinstance(d, int) or d == 0 or d < -1 for d in dims):
                    problems.append(f"{name}: {kind} {t.get('name')!r} has bad dims {dims}")
        for v in versions:
            if backend == "onnxruntime":
                graph = v / "model.onnx"
                if not graph.is_file():
                    problems.append(f"{name}/{v.name}: no model.onnx")
                    continue
                problems += _check_against_graph(name, graph, tensors, mbs)
            elif backend == "python":
                if not (v / "model.py").is_file():
                    problems.append(f"{name}/{v.name}: no model.py")
            else:
                problems.append(f"{name}: unexpected backend {backend!r}")
    if problems:
        raise TritonRepoError(f"{repo}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return configs


def _check_against_graph(name: str, graph: Path, tensors: dict[str, list], mbs: int) -> list[str]:
    problems = []
    graph_in, graph_out = _graph_io(graph)
    for kind, graph_ts in (("input", graph_in), ("output", graph_out)):
        want = {n: (e, d) for n, e, d in graph_ts}
        got = {t.get("name"): t for t in tensors[kind]}
        if set(want) != set(got):
            problems.append(f"{name}: config {kind}s {sorted(got)} differ from the graph's {sorted(want)}")
            continue
        for n, (elem, dims) in want.items():
            t = got[n]
            if _ONNX_TO_TRITON.get(elem) != t.get("data_type"):
                problems.append(f"{name}: {kind} {n!r} is {t.get('data_type')} in the config, "
                                f"{_ONNX_TO_TRITON.get(elem, elem)} in the graph")
            shape = [d if isinstance(d, int) and d > 0 else -1 for d in dims]
            if mbs:
                if not shape or shape[0] != -1:
                    problems.append(f"{name}: {kind} {n!r} has no dynamic batch axis in the graph but the config batches")
                    continue
                shape = shape[1:]
            cfg_dims = _as_list(t.get("dims"))
            reshape = t.get("reshape")
            effective = _as_list(reshape.get("shape")) if isinstance(reshape, dict) else cfg_dims
            if len(effective) != len(shape) or any(c != g and -1 not in (c, g) for c, g in zip(effective, shape)):
                problems.append(f"{name}: {kind} {n!r} dims {cfg_dims} do not fit the graph's {shape}")
    return problems


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------
@click.command("triton-repo")
@click.option("--export-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="ONNX export directory (`semgir-engine export --out DIR`).")
@click.option("--triton-repo", "repo_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Model repository to write (config.pbtxt + 1/model.onnx per component).")
@click.option("--components", default="all", show_default=True, metavar="NAMES|all",
              help="Comma-separated components, or every one in the export.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--max-batch-size", type=click.IntRange(1), default=None,
              help="Triton max_batch_size (default: each component's profile maximum).")
@click.option("--instance-kind", type=click.Choice(INSTANCE_KINDS), default="auto", show_default=True,
              help="instance_group kind; auto leaves Triton's default (one instance per GPU).")
@click.option("--pipeline/--no-pipeline", default=None,
              help="Add the BLS semgir_pipeline model (default: when every pipeline component is exported).")
@click.option("--steps", type=click.IntRange(1), default=4, show_default=True, help="Pipeline regeneration steps.")
@click.option("--force", is_flag=True, help="Replace models already in the repository.")
def triton_repo_cmd(export_dir, repo_dir, components, precision, max_batch_size, instance_kind, pipeline, steps,
                    force):
    """Write a Triton Inference Server model repository from an ONNX export, and check it."""
    names = None if components == "all" else [c.strip() for c in components.split(",") if c.strip()]
    models = write_triton_repo(export_dir, repo_dir, names, precision, max_batch_size=max_batch_size,
                               instance_kind=instance_kind, pipeline=pipeline, steps=steps, force=force)
    validate_repo(repo_dir)
    for m in models:
        click.echo(f"{m.name:18s} {m.backend:12s} max_batch_size {m.max_batch_size}", err=True)
    click.echo(f"wrote and checked {len(models)} model(s) in {repo_dir} (structure only: Triton is not run)",
               err=True)
