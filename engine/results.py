"""Result rows and crash-safe writers (jsonl / csv / parquet) with resume (torch-free)."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Iterable

from .errors import ResumeError, UnknownNameError

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "parquet")


@dataclass(frozen=True)
class Result:
    """One scored (or failed) input. ``p_ai`` and ``label`` are None on error.

    ``label`` is also None when the models carry random weights: those scores are no verdict.
    """

    path: str
    sha256: str | None
    p_ai: float | None
    label: str | None
    method: str | None
    model_version: str | None
    random_weights: bool
    caption: str | None = None
    error: str | None = None
    note: str | None = None
    width: int | None = None
    height: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    attribution: dict[str, float] | None = None
    generator: str | None = None
    # cascade (semgir_engine.cascade): which stage decided, and each stage's p_ai where it ran
    stage: str | None = None
    p_patch: float | None = None
    p_semgir: float | None = None
    regeneration: str | None = None  # the saved regenerated image (score --save-regenerations DIR)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "row") -> "Result":
        """A row as written by :class:`RowWriter` (jsonl, or csv/parquet text fields), checked field by
        field; :class:`ResumeError` names ``where`` and the first bad field. Unknown keys are ignored."""
        return cls(**_normalise(d, where))


COLUMNS = [f.name for f in fields(Result)]
_TEXT = ("sha256", "label", "method", "model_version", "caption", "error", "note", "generator", "stage",
         "regeneration")
_PROBABILITIES = ("p_ai", "p_patch", "p_semgir")


def _normalise(raw: object, where: str) -> dict:
    """Type-checked fields of one stored row (csv's strings and JSON text converted back)."""
    if not isinstance(raw, dict):
        raise ResumeError(f"{where}: a row must be an object, got {type(raw).__name__}; is this an output of ours?")

    def bad(k: str, v: object) -> ResumeError:
        return ResumeError(f"{where}: field {k!r} has a bad value {str(v)[:80]!r}; is this an output of ours?")

    d: dict = {}
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        raise bad("path", path)
    d["path"] = path
    for k in _TEXT:
        v = raw.get(k)
        if v is not None and not isinstance(v, str):
            raise bad(k, v)
        d[k] = v
    for k in _PROBABILITIES:
        v = raw.get(k)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise bad(k, v)
            try:
                v = float(v)
            except ValueError:
                raise bad(k, v) from None
            if not math.isfinite(v):
                raise bad(k, v)
        d[k] = v
    v = raw.get("random_weights", False)
    if isinstance(v, str) and v in ("True", "False", "true", "false"):
        v = v.lower() == "true"
    if not isinstance(v, bool):
        raise bad("random_weights", v)
    d["random_weights"] = v
    for k in ("width", "height"):
        v = raw.get(k)
        if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) < 10:
            v = int(v)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise bad(k, v)
        d[k] = v
    for k in ("timings_ms", "attribution"):
        v = raw.get(k)
        if isinstance(v, str):
            try:
                v = json.loads(v) if v else None
            except (ValueError, RecursionError):
                raise bad(k, v) from None
        if v is None and k == "timings_ms":
            v = {}
        if v is not None and not (isinstance(v, dict) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())):
            raise bad(k, v)
        d[k] = v
    return d


def _flat(row: dict) -> dict:
    """Nested fields as JSON text, for csv and parquet."""
    out = dict(row)
    for k in ("timings_ms", "attribution"):
        out[k] = json.dumps(out[k], sort_keys=True) if out.get(k) is not None else None
    return out


def infer_format(out: str | None, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise UnknownNameError("format", fmt, FORMATS)
        return fmt
    if out:
        suffix = Path(out).suffix.lower().lstrip(".")
        if suffix in FORMATS:
            return suffix
        if suffix == "json":
            return "jsonl"
    return "jsonl"


def _truncate_partial_tail(path: Path) -> None:
    """Drop a last line that a kill left unfinished (no trailing newline)."""
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            fh.truncate(cut)
            log.warning("dropped an unfinished last line of %s (%d bytes)", path, len(data) - cut)


def read_rows(path: Path, fmt: str) -> list[dict]:
    """Rows already in an output file (and, for parquet, its journal), each checked and normalised
    (see :meth:`Result.from_dict`); anything that is not an output of ours raises :class:`ResumeError`."""
    rows: list[dict] = []
    if fmt == "parquet":
        if path.exists():
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
                if "path" not in table.column_names:
                    raise ResumeError(f"{path} has no 'path' column; is this an output of ours?")
                rows += [_normalise(r, f"{path} row {n}") for n, r in enumerate(table.to_pylist(), 1)]
            except ResumeError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
                raise ResumeError(f"cannot read existing parquet output {path}: {exc}") from exc
        journal = journal_path(path)
        if journal.exists():
            rows += read_rows(journal, "jsonl")
        return rows
    if not path.exists():
        return rows
    _truncate_partial_tail(path)
    try:
        if fmt == "jsonl":
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except (json.JSONDecodeError, RecursionError) as exc:
                        raise ResumeError(f"{path}:{n} is not a JSON row; is this an output of ours?") from exc
                    rows.append(_normalise(row, f"{path}:{n}"))
        else:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames and "path" not in reader.fieldnames:
                    raise ResumeError(f"{path} has no 'path' column; is this an output of ours?")
                for r in reader:
                    rows.append(_normalise({k: (None if v == "" else v) for k, v in r.items()},
                                           f"{path}:{reader.line_num}"))
    except UnicodeDecodeError as exc:
        raise ResumeError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "is this an output of ours?") from exc
    except csv.Error as exc:
        raise ResumeError(f"{path} is not a CSV file of ours: {exc}") from exc
    return rows


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial.jsonl")


class RowWriter:
    """Appends rows as they come and flushes each one, so a kill loses at most the row in flight.

    ``resume=True`` keeps the rows already in ``path`` and exposes their paths in :attr:`done`.
    Parquet cannot be appended to: rows go to a jsonl journal beside it, merged into the
    parquet file (written atomically) by :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike | None, fmt: str = "jsonl", *, resume: bool = False,
                 overwrite: bool = False, stream: IO[str] | None = None):
        self.fmt = fmt
        self.path = Path(path) if path else None
        self.done: set[str] = set()
        self._previous: list[dict] = []
        if self.path is None:
            if fmt == "parquet":
                raise ResumeError("parquet output needs a file (--out FILE)")
            if resume:
                raise ResumeError("--resume needs an output file (--out FILE)")
            self._fh: IO[str] = stream or sys.stdout
            self._owns = False
        else:
            exists = self.path.exists() or (fmt == "parquet" and journal_path(self.path).exists())
            if exists and not (resume or overwrite):
                raise ResumeError(f"{self.path} exists; pass --resume to continue it or --overwrite to replace it")
            if exists and resume:
                self._previous = read_rows(self.path, fmt)
                self.done = {r["path"] for r in self._previous}
            elif exists and overwrite:
                self.path.unlink(missing_ok=True)
                journal_path(self.path).unlink(missing_ok=True)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = journal_path(self.path) if fmt == "parquet" else self.path
            self._fh = open(target, "a", encoding="utf-8", newline="")
            self._owns = True
        self._csv_header = self.fmt == "csv" and (self.path is None or self._fh.tell() == 0)
        self.count = 0

    def write(self, result: Result) -> None:
        row = result.to_dict()
        if self.fmt == "csv":
            buf = io.StringIO()
            # CRLF (RFC 4180): the writer then quotes any field holding \r or \n; with "\n" a bare \r in a caption
            # or error message went out unquoted and split the row on reading (found by a property test)
            w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n")
            if self._csv_header:
                w.writeheader()
                self._csv_header = False
            w.writerow(_flat(row))
            text = buf.getvalue()
        else:  # jsonl, and parquet's journal
            text = json.dumps(row, sort_keys=False, allow_nan=False) + "\n"
        self._fh.write(text)
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        if self._owns and not self._fh.closed:
            self._fh.close()
            if self.fmt == "parquet":
                self._finish_parquet()
        elif not self._owns:
            self._fh.flush()

    def _finish_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert self.path is not None
        rows = read_rows(self.path, "parquet")
        table = pa.Table.from_pylist([_flat(Result.from_dict(r).to_dict()) for r in rows],
                                     schema=parquet_schema())
        tmp = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)
        journal_path(self.path).unlink(missing_ok=True)

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parquet_schema():
    import pyarrow as pa

    types = {"p_ai": pa.float64(), "p_patch": pa.float64(), "p_semgir": pa.float64(), "random_weights": pa.bool_(), "width": pa.int64(), "height": pa.int64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])


def iter_rows(path: str | os.PathLike) -> Iterable[Result]:
    """Read a results file of any format back as :class:`Result` objects."""
    p = Path(path)
    for r in read_rows(p, infer_format(str(p), None)):
        yield Result(**r)
