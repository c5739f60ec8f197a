"""The evaluator's vectorized paths against the per-series definition (`series_part` + `combine`).

When the series of a group share a timeline (the same sample times: series fed by the same requests),
the evaluator finds a window's indices once and reads every series' values with C loops; otherwise it
walks the series one by one. Both must give what the per-series definition gives, for every kind and
aggregation, with resets, zero-based and late-starting series, folded slots and pruning. The histories
below mix series that report at every step (shared timelines) with series that skip steps (their own).
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from exporters.pagerduty.config import QUANTILES
from exporters.pagerduty.evaluator import _UNSUPPORTED, Evaluator, Group, Selector, combine, series_part
from exporters.pagerduty.store import SeriesStore
from tests.unit.exporters.pagerduty.pdhelpers import T0_NS, counter, gauge, histogram, request

BOUNDS = (1.0, 2.0, 5.0)
STEPS = 60
RESOLUTION = 2.0
AGGREGATIONS = ("last", "avg", "min", "max", "sum", "count", "rate", "increase", *QUANTILES)


def _attrs(i: int) -> dict[str, object]:
    return {"svc": f"s{i % 3}", "status": "error" if i % 2 else "ok", "i": i}


def _build(seed: int, *, gaps: bool = True) -> Iterator[tuple[Evaluator, float]]:
    """A store fed `STEPS` requests (some twice into one slot) over 12 series of each kind and temporality;
    yields after each. Without `gaps`, every series reports at every step: every metric has one timeline."""
    rng = random.Random(seed)
    watch_ns = T0_NS - 10**12
    store = SeriesStore({name: 40.0 for name in ("g", "c", "cd", "h", "hd")}, resolution=RESOLUTION,
                        max_series=1000, watch_start_ns=watch_ns)
    ev = Evaluator(store, watch_start=5.0)
    n = 12
    raw = [0] * n
    hraw = [[0] * (len(BOUNDS) + 1) for _ in range(n)]
    t = 0.0
    for step in range(STEPS):
        t += rng.choice((0.5, 1.0, 2.0, 3.0))  # some steps share a slot: the last sample is replaced
        # Series 0-5 report at every step once started (shared timelines); 6-11 skip steps at random.
        live = [i for i in range(n) if not gaps or (step >= i % 4 * 5 and (i < 6 or rng.random() < 0.6))]
        gauges, counters, deltas, hists, hdeltas = [], [], [], [], []
        for i in live:
            if rng.random() < 0.05:
                raw[i] = 0  # a reset
            raw[i] += rng.randrange(5)
            gauges.append((_attrs(i), float(rng.randrange(-5, 20))))
            counters.append((_attrs(i), float(raw[i])))
            deltas.append((_attrs(i), float(rng.randrange(4))))
            inc = [rng.randrange(3) for _ in range(len(BOUNDS) + 1)]
            hraw[i] = inc if rng.random() < 0.05 else [a + b for a, b in zip(hraw[i], inc)]
            hists.append((_attrs(i), list(hraw[i]), float(sum(hraw[i]))))
            hdeltas.append((_attrs(i), inc, float(sum(inc))))
        time_ns = T0_NS + step * 10**9
        # Odd seeds: the cumulative series started while watched, just before the first step (zero-based
        # while their first sample is recent); even seeds: long before (their first sample is a baseline).
        start_ns = 1 if seed % 2 == 0 else T0_NS - 10**9
        result = store.ingest(request(
            gauge("g", gauges), counter("c", counters, start_ns=start_ns, time_ns=time_ns),
            counter("cd", deltas, delta=True, time_ns=time_ns),
            histogram("h", hists, BOUNDS, start_ns=start_ns, time_ns=time_ns),
            histogram("hd", hdeltas, BOUNDS, delta=True, time_ns=time_ns)), t)
        assert not result.skipped, result
        store.prune(t)
        yield ev, t


def _reference(ev: Evaluator, sel: Selector, now: float) -> dict[Group, float]:
    """The selector's value per group, one series at a time."""
    end = now - sel.offset
    start = end - sel.window
    parts: dict[Group, list[Any]] = {}
    for s in ev.store.series(sel.metric):
        if not all(m(s.attrs.get(k, "")) for k, m in sel.matchers):
            continue
        part = series_part(s, sel.aggregation, start, end)
        if part is None or part is _UNSUPPORTED:
            continue
        parts.setdefault(tuple(s.attrs.get(k, "") for k in sel.group_by), []).append(part)
    out = {}
    for group, ps in parts.items():
        value = combine(sel.aggregation, ps, end - max(start, ev.watch_start))
        if value is not None:
            out[group] = value
    return out


@pytest.mark.parametrize(("seed", "gaps"), [(0, True), (1, True), (2, True), (3, True), (4, False), (5, False)])
def test_every_aggregation_matches_the_per_series_definition(seed: int, gaps: bool) -> None:
    checked = 0
    for step, (ev, now) in enumerate(_build(seed, gaps=gaps)):
        if step in (3, 8, 16, 30, STEPS - 1):
            per_table = [[s.tl for s in table.series.values()] for table in ev.store.tables.values()]
            if gaps:  # some series share a timeline, others do not: both paths are taken
                assert all(1 < len(set(tls)) < len(tls) for tls in per_table), per_table
            else:
                assert all(len(set(tls)) == 1 for tls in per_table), per_table
            checked += _check(ev, now)
    assert checked > 5000


def _check(ev: Evaluator, now: float) -> int:
    checked = 0
    for metric in ("g", "c", "cd", "h", "hd"):
        for agg in AGGREGATIONS:  # (those that do not apply to a kind give nothing either way)
            for group_by in ((), ("svc",), ("svc", "status"), ("i",)):
                for window, offset in ((1.0, 0.0), (7.0, 0.0), (15.0, 4.0), (30.0, 0.0), (39.0, 1.0)):
                    sel = Selector(metric, (), agg, window, offset, group_by)
                    got, want = ev.select(sel, now), _reference(ev, sel, now)
                    assert got.keys() == want.keys(), (sel, got, want)
                    for g, v in want.items():
                        assert got[g] == pytest.approx(v, rel=1e-12, abs=1e-12) or (math.isinf(v) and got[g] == v)
                    checked += len(want)
    return checked


def test_series_with_equal_timelines_hold_equal_times() -> None:
    for ev, _ in _build(7):
        by_timeline: dict[int, list[float]] = {}
        for table in ev.store.tables.values():
            for s in table.series.values():
                assert by_timeline.setdefault(s.tl, list(s.times)) == list(s.times)
