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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ExportDirError(f"{p} is not valid JSON ({why}); re-export, or export with --force") from exc
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
    if digest is not None and not isinstance(digest, str):
        return False
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
    files = _entry_files(export_dir, name, entry)
    if not spec_current(name, entry):
        raise ExportDirError(f"{export_dir}: {name} was exported with another version of its spec (inputs/outputs "
                             f"changed since); re-export it with `semgir-engine export --components {name} --force`")
    from ..hashing import file_size, sha256_file

    path = Path(export_dir) / entry["file"]
    for f in [entry["file"]] + [f for f, _ in files]:  # the graph and its external data
        if file_size(Path(export_dir) / f) is None:
            raise ExportDirError(f"{str(Path(export_dir) / f)[:300]} is listed in the manifest but missing; "
                                 f"re-export {name}")
    for f, digest in files if verify else []:
        try:
            actual = sha256_file(Path(export_dir) / f)
        except OSError as exc:
            raise ExportDirError(f"{f[:300]}: cannot read it ({exc}); re-export {name}") from exc
        if actual != digest:
            raise ExportDirError(f"{f[:300]}: sha256 differs from the manifest (corrupt or replaced); re-export")
    return path, entry


def _relative_file(export_dir, name: str, value) -> str:
    """A file name the manifest lists (relative to the export directory; the Triton pipeline's points
    into the model repository with ``../``), refused unless it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ExportDirError(f"{export_dir}: the manifest entry of {name} names no valid file ({value!r}); re-export it")
    return value


def _entry_files(export_dir, name: str, entry) -> list[tuple[str, str | None]]:
    """(file, sha256) of every file of one manifest entry (the graph and its external data), validated."""
    if not isinstance(entry, dict):
        raise ExportDirError(f"{export_dir}: the manifest entry of {name} is malformed; re-export it")
    _relative_file(export_dir, name, entry.get("file"))
    records = entry.get("files", [{"file": entry["file"], "sha256": entry.get("sha256")}])
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ExportDirError(f"{export_dir}: the file list of {name} in the manifest is malformed; re-export it")
    out = []
    for r in records:
        digest = r.get("sha256")
        if digest is not None and not isinstance(digest, str):
            raise ExportDirError(f"{export_dir}: a sha256 of {name} in the manifest is malformed; re-export it")
        out.append((_relative_file(export_dir, name, r.get("file")), digest))
    return out


def pipeline_settings(export_dir: str | Path, manifest: dict, *needs: str) -> dict:
    """The manifest's ``pipeline`` section, refused clearly when a needed part is missing."""
    pipe = manifest.get("pipeline", {})
    missing = [n for n in needs if n not in pipe]
    if missing:
        raise ExportDirError(f"{export_dir}: the manifest lacks the {', '.join(missing)} settings; export the "
                             "components they belong to (`semgir-engine export --components ...`)")
    return pipe
