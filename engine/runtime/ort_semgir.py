"""SemGIR on exported graphs: component sessions from an export directory (torch-free).

:class:`ExportSessions` is the :class:`..semgir.pipeline.SessionProvider` of an export: one ONNX
Runtime session per graph (or, with ``runner_factory``, a TensorRT engine built from it), the
manifest's ``pipeline`` settings, and the tokenizer files the export carries. The pipeline
itself -- preprocessing, caption decoding, the scheduler loop, guidance, embedding, the head -- is
:class:`..semgir.pipeline.SemgirPipeline`, the same code every backend runs. Imports only
onnxruntime, numpy, Pillow and ``tokenizers``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from .. import registry
from ..spec import Precision
from .manifest import ExportDirError, component_entry, load_manifest

log = logging.getLogger(__name__)

#: where ``export --attribute`` puts the SemGIR-A graphs: OUT/attribution/{manifest.json, GENERATOR/...}
ATTRIBUTION_DIR = "attribution"


def ort_device(device: str) -> tuple[str, int]:
    """("cpu" | "auto" | "cuda", GPU index) from a ``--device`` value."""
    if device in ("cpu", "auto"):
        return device, 0
    if device == "cuda" or device.startswith("cuda:"):
        try:
            return "cuda", int(device.split(":", 1)[1]) if ":" in device else 0
        except ValueError as exc:
            raise ExportDirError(f"invalid device {device!r} (cpu, cuda, cuda:N)") from exc
    raise ExportDirError(f"invalid device {device!r} (cpu, cuda, cuda:N)")


class ExportSessions:
    """Sessions of the graphs in one export directory (created on first use, verified by sha256)."""

    def __init__(self, export_dir: str | Path, precision: Precision | str | None = None,
                 providers: Sequence[str] | None = None, device: str = "auto", verify: bool = True,
                 runner_factory: Callable[[str, Path], Callable] | None = None, kind: str = "onnxruntime"):
        self.dir = self.asset_dir = Path(export_dir)
        self.manifest = load_manifest(self.dir)
        self.settings = self.manifest["pipeline"]
        self.precision = Precision(precision or Precision.FP32)
        self.providers, self.verify, self.runner_factory, self.kind = providers, verify, runner_factory, kind
        self.device, self.gpu = ort_device(device)
        self.random_weights = self.settings.get("source", {}).get("kind", "real") != "real"
        self._sessions: dict = {}

    def has(self, name: str) -> bool:
        return bool(self.manifest["components"].get(name))

    def session(self, name: str):
        if name not in self._sessions:
            from .ort import OrtRunner

            path, _ = component_entry(self.dir, self.manifest, name, self.precision, self.verify)
            if self.runner_factory is not None:  # e.g. TensorRT engines built from these graphs
                self._sessions[name] = self.runner_factory(name, path)
            else:
                self._sessions[name] = OrtRunner(path, self.providers, self.device, gpu=self.gpu)
        return self._sessions[name]

    def session_providers(self) -> list[str]:
        s = next(iter(self._sessions.values()), None)
        return s.session.get_providers() if hasattr(s, "session") else [self.kind]

    def describe(self) -> dict:
        graphs = {n: e.get(self.precision.value, next(iter(e.values()))).get("sha256")
                  for n, e in sorted(self.manifest["components"].items()) if e}
        return {"source": self.settings.get("source"), "backend": self.kind, "precision": self.precision.value,
                "graphs": graphs}


def OrtSemgir(export_dir: str | Path, regen=None, caption=None, precision: Precision | str | None = None,
              device: str = "auto", **kw):
    """The SemGIR pipeline on an export directory (ONNX Runtime unless ``runner_factory`` says otherwise)."""
    from ..semgir.pipeline import CaptionConfig, RegenConfig, SemgirPipeline

    provider = ExportSessions(export_dir, precision, device=device, **kw)
    for need in registry.PIPELINE_COMPONENTS[:1] + registry.PIPELINE_COMPONENTS[3:]:
        if not provider.has(need):
            raise ExportDirError(f"{export_dir} holds no {need!r} graph; export every pipeline component: "
                                 f"{', '.join(registry.PIPELINE_COMPONENTS)}")
    return SemgirPipeline(provider, regen or RegenConfig(), caption or CaptionConfig())


def export_attribution(export_dir: str | Path, precision: Precision | str | None = None, device: str = "auto",
                       **kw):
    """SemGIR-A on exported graphs: the combiner and, per generator, its regenerator graphs and head
    (written by ``semgir-engine export --attribute GENERATORS.json``)."""
    from ..semgir.attribution_runtime import Attribution, GeneratorSpec

    root = Path(export_dir) / ATTRIBUTION_DIR
    if not (root / "manifest.json").is_file():
        raise ExportDirError(f"{export_dir} holds no SemGIR-A graphs ({root}/manifest.json); export them with "
                             f"`semgir-engine export --attribute GENERATORS.json --out {export_dir}`")
    base = ExportSessions(root, precision, device=device, **kw)
    meta = base.settings.get("attribution")
    if not meta:
        raise ExportDirError(f"{root}: the manifest lacks the attribution settings; re-export with --attribute")
    gens = [(GeneratorSpec.from_dict({k: v for k, v in g.items() if k != "dir"}, str(root)),
             ExportSessions(root / g["dir"], precision, device=device, **kw)) for g in meta["generators"]]
    return Attribution.from_sessions(base.session("attribution_combiner"), gens, meta)
