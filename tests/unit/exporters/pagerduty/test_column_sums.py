"""The evaluator's column sums of histogram rows (evaluator._column_sums): the C pass's `column_sums` gives
exactly what `map(sum, zip(*rows))` gives, or hands the case to it."""
from __future__ import annotations

from array import array
from itertools import repeat
from operator import getitem

from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.pagerduty import evaluator

FLOATS = st.floats(allow_nan=False, width=64) | st.sampled_from([0.0, -0.0, 1e308, -1e308, 0.1, 3.0])


def python_sums(datas: list[array[float]], start: int, width: int) -> list[float]:
    return list(map(sum, zip(*map(getitem, datas, repeat(slice(start, start + width))))))


def test_the_c_pass_is_built_here() -> None:
    """(This package's tests run on both ingest paths; the evaluator's column sums are C's on both.)"""
    assert evaluator._native_column_sums is not None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(FLOATS, max_size=24), max_size=12), st.integers(0, 24), st.integers(0, 12))
def test_column_sums_equal_the_python_sums(rows: list[list[float]], start: int, width: int) -> None:
    datas = [array("d", r) for r in rows]
    want = python_sums(datas, start, width)
    assert evaluator._column_sums(datas, start, width) == want  # (short arrays: the Python form)
    native = evaluator._native_column_sums
    assert native is not None
    got = native(datas, start, width)
    if got is not None:
        assert got == want and [str(x) for x in got] == [str(x) for x in want]  # (-0.0 and 0.0 told apart)
    else:
        assert any(len(d) < start + width for d in datas)


def test_what_is_not_an_array_of_doubles_goes_to_python() -> None:
    native = evaluator._native_column_sums
    assert native is not None
    assert native([array("d", [1.0]), [1.0]], 0, 1) is None  # type: ignore[list-item]
    assert native([array("f", [1.0])], 0, 1) is None
    assert native([], 3, 2) == []
    assert evaluator._column_sums([array("d", [1.0, 2.0]), array("d", [3.0])], 0, 2) == [4.0]
