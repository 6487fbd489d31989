from __future__ import annotations

import json

import pytest

from semgir_engine.errors import ResumeError
from semgir_engine.results import Result, RowWriter, iter_rows


def _row(i: int, err: str | None = None) -> Result:
    return Result(path=f"/x/{i}.png", sha256="ab" * 32, p_ai=None if err else i / 10, label=None if err else "ai",
                  method="patch", model_version="v1", random_weights=False, error=err,
                  timings_ms={"patch": 1.5})


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_roundtrip_and_resume(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"r.{fmt}"
    with RowWriter(out, fmt) as w:
        for i in range(3):
            w.write(_row(i))
    with pytest.raises(ResumeError, match="--resume"):
        RowWriter(out, fmt)
    with RowWriter(out, fmt, resume=True) as w:
        assert w.done == {f"/x/{i}.png" for i in range(3)}
        w.write(_row(3, err="broken"))
    rows = list(iter_rows(out))
    assert [r.path for r in rows] == [f"/x/{i}.png" for i in range(4)]
    assert rows[1].p_ai == pytest.approx(0.1) and rows[1].timings_ms == {"patch": 1.5}
    assert rows[3].error == "broken" and rows[3].p_ai is None and rows[0].random_weights is False


def test_jsonl_partial_tail_is_dropped(tmp_path):
    out = tmp_path / "r.jsonl"
    with RowWriter(out, "jsonl") as w:
        w.write(_row(0))
    with open(out, "a") as fh:
        fh.write('{"path": "/x/1.png", "sha2')  # a kill mid-row
    with RowWriter(out, "jsonl", resume=True) as w:
        assert w.done == {"/x/0.png"}
        w.write(_row(1))
    lines = out.read_text().splitlines()
    assert [json.loads(x)["path"] for x in lines] == ["/x/0.png", "/x/1.png"]


def test_parquet_journal_survives_kill(tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "r.parquet"
    w = RowWriter(out, "parquet")
    w.write(_row(0))
    w._fh.close()  # simulate a kill: journal written, parquet never finished
    assert not out.exists()
    with RowWriter(out, "parquet", resume=True) as w2:
        assert w2.done == {"/x/0.png"}
        w2.write(_row(1))
    assert [r.path for r in iter_rows(out)] == ["/x/0.png", "/x/1.png"]


def test_foreign_file_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("hello world\n")
    with pytest.raises(ResumeError, match="not a JSON row"):
        RowWriter(out, "jsonl", resume=True)
