"""The export directory's ``manifest.json``: the one reader (torch-free).

The manifest is the contract between the exporter and every runtime (Python backends, Triton,
the native C API): per component and precision the graph file, its hashes, shapes and the spec
digest it was exported from; under ``pipeline`` the settings a runtime needs besides the graphs
(tokenizer files, generation config, scheduler config, preprocessing, thresholds).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import SemgirError
from ..spec import Precision

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class ExportDirError(SemgirError):
    """The export directory is missing, incomplete, or its files do not match the manifest."""


def load_manifest(export_dir: str | Path, missing_ok: bool = False) -> dict:
    """The parsed manifest; with ``missing_ok`` an empty one when the folder has none yet (export)."""
    p = Path(export_dir) / MANIFEST
    if not p.is_file():
        if missing_ok:
            return {"format": MANIFEST_FORMAT, "components": {}, "pipeline": {}}
        raise ExportDirError(f"{export_dir} has no {MANIFEST}: export it with `semgir-engine export --out {export_dir}`")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportDirError(f"{p} is not valid JSON ({exc}); re-export, or export with --force") from exc
    if not isinstance(data, dict) or not isinstance(data.get("components", {}), dict) \
            or not isinstance(data.get("pipeline", {}), dict):
        raise ExportDirError(f"{p} is not an export manifest (expected an object with 'components' and 'pipeline')")
    data.setdefault("components", {})
    data.setdefault("pipeline", {})
    return data


def spec_current(name: str, entry: dict) -> bool:
    """True when a manifest entry was exported from the spec this engine registers (at either size)."""
    from .. import registry

    digest = entry.get("spec_digest")
    return digest is None or digest in {registry.get(name, size).digest() for size in ("tiny", "full")}


def component_entry(export_dir: str | Path, manifest: dict, name: str, precision: Precision | str | None = None,
                    verify: bool = False) -> tuple[Path, dict]:
    """(path, manifest entry) of one exported graph: the requested precision (default fp32), else the
    one exported (with a warning); refused when stale (older spec), missing, or (``verify``) not
    matching its sha256."""
    precision = Precision(precision or Precision.FP32).value
    entries = manifest.get("components", {}).get(name)
    if not isinstance(entries, dict) or not entries:
        raise ExportDirError(f"{export_dir} holds no {name!r} graph (has: {sorted(manifest.get('components', {}))}); "
                             f"export it with `semgir-engine export --components {name}`")
    entry = entries.get(precision)
    if entry is None:
        got, entry = next(iter(entries.items()))
        log.warning("%s: no %s graph of %s in %s; using the %s one", name, precision, name, export_dir, got)
    if not isinstance(entry, dict) or "file" not in entry:
        raise ExportDirError(f"{export_dir}: the manifest entry of {name} is malformed; re-export it")
    if not spec_current(name, entry):
        raise ExportDirError(f"{export_dir}: {name} was exported with another version of its spec (inputs/outputs "
                             f"changed since); re-export it with `semgir-engine export --components {name} --force`")
    path = Path(export_dir) / entry["file"]
    if not path.is_file():
        raise ExportDirError(f"{path} is listed in the manifest but missing; re-export {name}")
    if verify:
        from ..hashing import sha256_file

        for f in entry.get("files", [{"file": entry["file"], "sha256": entry.get("sha256")}]):
            if sha256_file(Path(export_dir) / f["file"]) != f["sha256"]:
                raise ExportDirError(f"{f['file']}: sha256 differs from the manifest (corrupt or replaced); re-export")
    return path, entry


def pipeline_settings(export_dir: str | Path, manifest: dict, *needs: str) -> dict:
    """The manifest's ``pipeline`` section, refused clearly when a needed part is missing."""
    pipe = manifest.get("pipeline", {})
    missing = [n for n in needs if n not in pipe]
    if missing:
        raise ExportDirError(f"{export_dir}: the manifest lacks the {', '.join(missing)} settings; export the "
                             "components they belong to (`semgir-engine export --components ...`)")
    return pipe
