"""Property-based checks (hypothesis) where byte-level fuzzing does not fit: structured values.

- any Result survives write -> resume -> read in every output format, unchanged;
- any PIL image (every mode the decoder converts, any size within the limit) and any numpy array
  gives 8-bit RGB of the same size or InputError.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from semgir_engine.errors import InputError  # noqa: E402
from semgir_engine.images import load_image  # noqa: E402
from semgir_engine.results import Result, RowWriter, iter_rows  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])

text = st.text(st.characters(codec="utf-8"), max_size=40)  # what a str field can hold (no lone surrogates)
maybe_text = st.none() | text
number = st.floats(allow_nan=False, allow_infinity=False, width=32)
results = st.builds(
    Result,
    path=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    sha256=maybe_text, p_ai=st.none() | st.floats(0, 1), label=st.none() | st.sampled_from(["ai", "real"]),
    method=maybe_text, model_version=maybe_text, random_weights=st.booleans(), caption=maybe_text,
    error=maybe_text, note=maybe_text, width=st.none() | st.integers(0, 1 << 20),
    height=st.none() | st.integers(0, 1 << 20), timings_ms=st.dictionaries(text, number, max_size=3),
    attribution=st.none() | st.dictionaries(text, number, max_size=3), generator=maybe_text)


def _same(a: Result, b: Result, fmt: str) -> bool:
    da, db = a.to_dict(), b.to_dict()
    if fmt == "csv":  # CSV cannot tell an empty text from a missing one: "" reads back as null (documented)
        da = {k: None if v == "" else v for k, v in da.items()}
    pa, pb = da.pop("p_ai"), db.pop("p_ai")
    return da == db and ((pa is None and pb is None) or math.isclose(pa, pb, rel_tol=0, abs_tol=0))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@FAST
@given(rows=st.lists(results, min_size=1, max_size=5, unique_by=lambda r: r.path))
def test_any_result_survives_write_resume_read(tmp_path_factory, fmt, rows):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path_factory.mktemp("r") / f"out.{fmt}"
    with RowWriter(out, fmt) as w:
        for r in rows[:-1]:
            w.write(r)
    with RowWriter(out, fmt, resume=True) as w:
        assert w.done == {r.path for r in rows[:-1]}
        w.write(rows[-1])
    back = list(iter_rows(out))
    assert len(back) == len(rows)
    for a, b in zip(rows, back):
        assert _same(a, b, fmt), (a, b)


MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa", "La",
         "I;16", "I;16B", "I;16L"]


@FAST
@given(mode=st.sampled_from(MODES), w=st.integers(1, 40), h=st.integers(1, 40), seed=st.integers(0, 2 ** 32 - 1),
       with_transparency=st.booleans())
def test_any_pil_image_gives_rgb_or_input_error(mode, w, h, seed, with_transparency):
    rng = np.random.default_rng(seed)
    img = Image.new(mode, (w, h))
    raw = rng.integers(0, 256, len(img.tobytes()), dtype=np.uint8).tobytes()
    img.frombytes(raw)
    if mode == "P" and with_transparency:
        img.info["transparency"] = int(rng.integers(0, 256))
    try:
        d = load_image(img)
    except InputError:
        return
    assert d.pixels.dtype == np.uint8 and d.pixels.shape == (h, w, 3)


@FAST
@given(shape=st.lists(st.integers(0, 12), min_size=0, max_size=4),
       dtype=st.sampled_from(["uint8", "float32", "float64", "int16", "bool", "uint16", "complex64"]),
       seed=st.integers(0, 2 ** 32 - 1), special=st.sampled_from([None, "nan", "inf", "big"]))
def test_any_array_gives_rgb_or_input_error(shape, dtype, seed, special):
    rng = np.random.default_rng(seed)
    a = (rng.random(shape) * 300).astype(dtype)
    if special and a.size and np.issubdtype(a.dtype, np.floating):
        a.flat[0] = {"nan": np.nan, "inf": np.inf, "big": 1e30}[special]
    try:
        d = load_image(a)
    except InputError:
        return
    assert d.pixels.dtype == np.uint8 and d.pixels.ndim == 3 and d.pixels.shape[:2] == tuple(shape[:2])
