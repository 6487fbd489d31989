"""Result rows and crash-safe writers (jsonl / csv / parquet) with resume (torch-free)."""

from __future__ import annotations

import csv
import io
import json
import logging
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
    def from_dict(cls, d: dict) -> "Result":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for k in ("timings_ms", "attribution"):
            if isinstance(d.get(k), str):
                d[k] = json.loads(d[k]) if d[k] else ({} if k == "timings_ms" else None)
        if d.get("timings_ms") is None:
            d["timings_ms"] = {}
        return cls(**d)


COLUMNS = [f.name for f in fields(Result)]


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
    """Rows already in an output file (and, for parquet, its journal)."""
    rows: list[dict] = []
    if fmt == "parquet":
        if path.exists():
            import pyarrow.parquet as pq

            try:
                rows += pq.read_table(path).to_pylist()
            except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
                raise ResumeError(f"cannot read existing parquet output {path}: {exc}") from exc
        journal = journal_path(path)
        if journal.exists():
            rows += read_rows(journal, "jsonl")
        return rows
    if not path.exists():
        return rows
    _truncate_partial_tail(path)
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ResumeError(f"{path}:{n} is not a JSON row; is this an output of ours?") from exc
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames and "path" not in reader.fieldnames:
                raise ResumeError(f"{path} has no 'path' column; is this an output of ours?")
            for r in reader:
                rows.append({k: (None if v == "" else v) for k, v in r.items()})
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
            w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
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
        if isinstance(r.get("random_weights"), str):
            r["random_weights"] = r["random_weights"] == "True"
        for k, conv in (("p_ai", float), ("p_patch", float), ("p_semgir", float), ("width", int), ("height", int)):
            if isinstance(r.get(k), str):
                r[k] = conv(r[k])
        yield Result.from_dict(r)
