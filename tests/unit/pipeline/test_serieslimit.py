"""`pipeline.serieslimit`: the series cap shared by `cardinality_limit` and `genai_metrics`."""
from __future__ import annotations

from pipeline.serieslimit import SeriesLimiter


def test_admits_up_to_the_limit_then_refuses_until_silent_series_age_out() -> None:
    lim = SeriesLimiter(2, ttl=10.0, limits={"small": 1})
    st = lim.metric("m", 0.0)
    assert [lim.admit(st, k, 0.0) for k in ("a", "b", "c")] == [True, True, False]
    assert st.limited and lim.admit(st, "a", 5.0)  # a series let through stays through
    assert not lim.admit(st, "c", 5.0)  # swept at 5 s (once per second at most): nothing silent for 10 s yet
    assert not lim.admit(st, "c", 5.5)  # no sweep again within a second
    assert lim.admit(st, "c", 10.5)  # swept at 10.5 s: "b" (seen at 0) aged out, "a" (seen at 5) stays
    assert lim.series_count("m") == 2
    small = lim.metric("small", 0.0)
    assert small.limit == 1 and small.limited  # its own limit: reported from the start


def test_expire_forgets_silent_series_and_unused_metrics() -> None:
    lim = SeriesLimiter(10, ttl=10.0)
    st = lim.metric("m", 0.0)
    lim.admit(st, "a", 0.0)
    lim.metric("busy", 0.0)
    lim.admit(lim.metric("busy", 5.0), "x", 5.0)
    removed, forgotten = lim.expire(12.0)
    assert (removed, forgotten) == (1, ["m"])
    assert [name for name, _ in lim] == ["busy"] and lim.series_count("m") == 0
