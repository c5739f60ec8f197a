"""The evaluator against hand-computed values: every aggregation, reset-aware increases, histogram
quantiles as Prometheus' histogram_quantile computes them, grouping, ratios, offsets, volume guards.

Data goes in as serialized OTLP requests through the store's ingest (the exporter's own path),
each stamped with the arrival time the test chooses.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytest

from exporters.pagerduty.evaluator import CompiledRule, Evaluator, bucket_quantile, retention
from exporters.pagerduty.store import SeriesStore
from tests.unit.exporters.pagerduty.pdhelpers import T0_NS, counter, gauge, histogram, request, rule

WATCH_NS = T0_NS - 10**12  # the exporter began watching before every start time below (unless said)


def setup(rules: Iterable[CompiledRule], *, watch_start: float = -1e9, resolution: float = 1.0) -> Evaluator:
    store = SeriesStore(retention(rules), resolution=resolution, max_series=1000, watch_start_ns=WATCH_NS)
    return Evaluator(store, watch_start=watch_start)


def feed(ev: Evaluator, t: float, *metrics: Any, resource: dict[str, object] | None = None) -> None:
    result = ev.store.ingest(request(*metrics, resource=resource), t)
    assert not result.skipped, result


def value(ev: Evaluator, r: CompiledRule, now: float, group: tuple[str, ...] = ()) -> float:
    return ev.evaluate(r, now)[group].value


# -- gauges ----------------------------------------------------------------------------------------

GAUGE_SAMPLES = [(10, 3.0), (20, 7.0), (30, 1.0), (40, 9.0), (50, 5.0)]


@pytest.mark.parametrize(("aggregation", "expected"), [
    ("last", 5.0), ("avg", 5.0), ("min", 1.0), ("max", 9.0), ("sum", 15.0), ("count", 3.0),
    ("increase", -2.0),        # 5 at the end minus 7, the value just before the window
    ("rate", -2.0 / 30),
])
def test_gauge_aggregations_over_the_window(aggregation: str, expected: float) -> None:
    r = rule(metric="queue", aggregation=aggregation, window="30s")
    ev = setup([r])
    for t, v in GAUGE_SAMPLES:
        feed(ev, t, gauge("queue", [({}, v)]))
    # window (20, 50]: the samples at 30, 40 and 50
    assert value(ev, r, 50.0) == pytest.approx(expected)


def test_gauge_sums_and_averages_stay_exact_after_old_samples_are_forgotten() -> None:
    avg = rule(metric="g", aggregation="avg", window="30s")
    total = rule(name="s", metric="g", aggregation="sum", window="100s")
    ev = setup([avg, total])
    for t in range(1, 201):
        feed(ev, float(t), gauge("g", [({}, float(t))]))
        ev.store.prune(float(t))
    (series,) = ev.store.series("g")
    assert len(series.times) < 150  # pruned: at most the longest reach (100 s + a slot) plus an eighth
    assert value(ev, avg, 200.0) == pytest.approx(sum(range(171, 201)) / 30)  # (170, 200]
    assert value(ev, total, 200.0) == pytest.approx(sum(range(101, 201)))


def test_points_within_one_slot_are_folded_but_keep_sum_count_min_max() -> None:
    r_avg = rule(metric="g", aggregation="avg", window="60s")
    r_cnt = rule(name="c", metric="g", aggregation="count", window="60s")
    r_min = rule(name="mi", metric="g", aggregation="min", window="60s")
    r_last = rule(name="l", metric="g", aggregation="last", window="60s")
    ev = setup([r_avg, r_cnt, r_min, r_last], resolution=10.0)
    for t, v in [(1.0, 4.0), (2.0, 2.0), (9.0, 6.0), (11.0, 8.0)]:  # three in slot [0, 10), one in [10, 20)
        feed(ev, t, gauge("g", [({}, v)]))
    assert value(ev, r_avg, 20.0) == 5.0
    assert value(ev, r_cnt, 20.0) == 4.0
    assert value(ev, r_min, 20.0) == 2.0
    assert value(ev, r_last, 20.0) == 8.0
    assert len(next(iter(ev.store.tables["g"].series.values())).times) == 2


# -- counters --------------------------------------------------------------------------------------

def test_cumulative_counter_increase_is_reset_aware() -> None:
    r = rule(metric="req", aggregation="increase", window="60s")
    ev = setup([r])
    # 100 → 110 → 125, restart (start time changes, value drops) → 5 → 20
    for i, (v, start) in enumerate([(100, 1), (110, 1), (125, 1), (5, 2), (20, 2)]):
        feed(ev, 10.0 * (i + 1), counter("req", [({}, v)], start_ns=start, time_ns=T0_NS + i))
    # window (0, 60]: the first sample (100) is the baseline: 10 + 15 + 5 + 15 = 45
    assert value(ev, r, 60.0) == 45.0
    # window (25, 85]: the baseline is 110 at t=20: 15 + 5 + 15 = 35
    assert value(ev, r, 85.0) == 35.0


def test_a_lower_value_without_a_start_time_is_a_reset_too() -> None:
    r = rule(metric="req", aggregation="increase", window="60s")
    ev = setup([r])
    for i, v in enumerate([50, 70, 10, 30]):
        feed(ev, 10.0 * (i + 1), counter("req", [({}, v)], start_ns=0, time_ns=T0_NS + i))
    assert value(ev, r, 45.0) == 20 + 10 + 20  # 50→70, reset to 10 (counts from 0), →30


def test_counter_rate_is_the_increase_per_second_of_the_window() -> None:
    r = rule(metric="req", aggregation="rate", window="1m")
    ev = setup([r])
    for i, v in enumerate([0, 30, 60, 90]):
        feed(ev, 20.0 * i, counter("req", [({}, v)], time_ns=T0_NS + i))
    # at 80: window (20, 80]: baseline 30 at t=20, last 90 at t=60 → 60 / 60 s
    assert value(ev, r, 80.0) == 1.0


def test_rate_divides_by_the_part_of_the_window_the_exporter_watched() -> None:
    """A 24 h baseline right after start is not diluted by hours nobody saw (Prometheus would divide by 24 h)."""
    r = rule(metric="tok", aggregation="rate", window="24h")
    ev = setup([r], watch_start=1000.0)
    feed(ev, 1000.0, counter("tok", [({}, 0)], delta=True))
    feed(ev, 1060.0, counter("tok", [({}, 600)], delta=True))
    assert value(ev, r, 1100.0) == 6.0  # 600 tokens in the 100 s since watching began


def test_cumulative_counter_that_started_after_watching_counts_from_zero() -> None:
    r = rule(metric="req", aggregation="increase", window="5m")
    ev = setup([r])
    started = WATCH_NS + 5 * 10**9  # after the exporter began watching: the first value is all new
    feed(ev, 10.0, counter("req", [({"k": "new"}, 7)], start_ns=started, time_ns=started + 10**9))
    feed(ev, 10.0, counter("req", [({"k": "old"}, 7)], start_ns=WATCH_NS - 1))
    obs = ev.evaluate(rule(metric="req", aggregation="increase", window="5m", group_by=["k"]), 20.0)
    assert obs[("new",)].value == 7.0
    assert obs[("old",)].value == 0.0  # only one sample and an unknown past: nothing measurable yet


def test_a_counter_that_comes_back_after_being_forgotten_is_not_counted_from_zero() -> None:
    """Started while watched, but quiet for longer than the history kept: its series was forgotten, and its
    first point since is a baseline (counting it from zero would page on its whole lifetime's total)."""
    r = rule(metric="req", aggregation="increase", window="5m")
    ev = setup([r])
    started = WATCH_NS + 5 * 10**9
    feed(ev, 10.0, counter("req", [({}, 7)], start_ns=started, time_ns=started + 10**9))
    ev.store.prune(1000.0)  # nothing since: forgotten
    assert ev.store.series_count == 0
    feed(ev, 1010.0, counter("req", [({}, 5000)], start_ns=started, time_ns=started + 1000 * 10**9))
    assert value(ev, r, 1020.0) == 0.0
    feed(ev, 1030.0, counter("req", [({}, 5004)], start_ns=started, time_ns=started + 1020 * 10**9))
    assert value(ev, r, 1040.0) == 4.0


def test_delta_counters_are_summed_and_a_quiet_counter_counts_zero() -> None:
    r = rule(metric="hall", aggregation="increase", window="15s")
    last = rule(name="l", metric="hall", aggregation="last", window="15s")
    ev = setup([r, last])
    for t, v in [(10.0, 2), (20.0, 3), (30.0, 4)]:
        feed(ev, t, counter("hall", [({}, v)], delta=True))
    assert value(ev, r, 30.0) == 7.0       # (15, 30]: 3 + 4
    assert value(ev, r, 30.0 + 15 + 5) == 0.0  # (35, 50]: nothing arrived, the counter is known: 0
    assert ev.evaluate(last, 50.0) == {}      # but it has no last value in that window
    assert value(ev, r, 25.0) == 3.0       # (10, 25]: the first delta (at 10) is the baseline
    assert value(ev, r, 12.0) == 2.0       # (-3, 12]: new inside the window: counted from zero


@pytest.mark.parametrize(("aggregation", "expected"), [("sum", 7.0), ("count", 7.0), ("last", 9.0), ("max", 9.0),
                                                       ("min", 5.0), ("avg", 7.0)])
def test_other_aggregations_of_a_counter(aggregation: str, expected: float) -> None:
    r = rule(metric="c", aggregation=aggregation, window="15s")
    ev = setup([r])
    for t, v in [(10.0, 2), (20.0, 3), (30.0, 4)]:
        feed(ev, t, counter("c", [({}, v)], delta=True))
    # running totals 2, 5, 9; the window (15, 30] holds 5 and 9
    assert value(ev, r, 30.0) == expected


# -- histograms ------------------------------------------------------------------------------------

BOUNDS = [0.1, 0.5, 1.0, 5.0]
# 100 observations in the window: per bucket 10, 20, 30, 39, 1 → cumulative 10, 30, 60, 99, 100
WINDOW_COUNTS = [10, 20, 30, 39, 1]


@pytest.mark.parametrize(("aggregation", "expected"), [
    ("p50", 0.5 + 0.5 * 20 / 30),    # rank 50 in (0.5, 1]: 20 of its 30
    ("p90", 1.0 + 4.0 * 30 / 39),    # rank 90 in (1, 5]: 30 of its 39
    ("p95", 1.0 + 4.0 * 35 / 39),
    ("p99", 5.0),                    # rank 99: the top of (1, 5]
    ("count", 100.0), ("increase", 100.0), ("rate", 100.0 / 60), ("sum", 80.0), ("avg", 0.8),
])
def test_histogram_aggregations_over_bucket_increases(aggregation: str, expected: float) -> None:
    r = rule(metric="lat", aggregation=aggregation, window="1m")
    ev = setup([r])
    before = [5, 5, 5, 5, 0]  # already there before the window: subtracted
    feed(ev, 0.0, histogram("lat", [({}, before, 20.0)], BOUNDS, time_ns=T0_NS))
    halfway = [b + c // 2 for b, c in zip(before, WINDOW_COUNTS)]
    feed(ev, 30.0, histogram("lat", [({}, halfway, 60.0)], BOUNDS, time_ns=T0_NS + 1))
    feed(ev, 60.0, histogram("lat", [({}, [b + c for b, c in zip(before, WINDOW_COUNTS)], 100.0)], BOUNDS,
                             time_ns=T0_NS + 2))
    assert value(ev, r, 60.0) == pytest.approx(expected)


def test_histogram_quantile_survives_a_reset() -> None:
    r = rule(metric="lat", aggregation="p50", window="1m")
    ev = setup([r])
    feed(ev, 0.0, histogram("lat", [({}, [0, 0, 50, 0, 0], 40.0)], BOUNDS, start_ns=1, time_ns=T0_NS))
    # restart: the new process counts from zero: 10 in (0.1, 0.5] and 10 in (1, 5]
    feed(ev, 30.0, histogram("lat", [({}, [0, 10, 0, 10, 0], 20.0)], BOUNDS, start_ns=2, time_ns=T0_NS + 1))
    # window (0, 60]: baseline is the first sample; increase is the 20 new observations
    assert value(ev, r, 60.0) == pytest.approx(0.1 + 0.4 * 10 / 10)  # rank 10: top of (0.1, 0.5]


def test_delta_histograms_accumulate() -> None:
    r = rule(metric="lat", aggregation="p50", window="1m")
    ev = setup([r])
    feed(ev, 10.0, histogram("lat", [({}, [4, 0, 0, 0, 0], 0.2)], BOUNDS, delta=True))
    feed(ev, 20.0, histogram("lat", [({}, [0, 0, 0, 4, 0], 12.0)], BOUNDS, delta=True))
    assert value(ev, r, 30.0) == pytest.approx(0.1)  # rank 4 of 8: the top of the first bucket


def test_bucket_quantile_edge_cases_match_prometheus() -> None:
    inf = math.inf
    # the rank in the first bucket interpolates from 0
    assert bucket_quantile(0.5, [(1.0, 10.0), (inf, 10.0)]) == 0.5
    # a rank in +Inf gives the largest finite bound
    assert bucket_quantile(0.99, [(1.0, 1.0), (2.0, 2.0), (inf, 10.0)]) == 2.0
    # a first bucket at or below zero is returned as is
    assert bucket_quantile(0.1, [(-1.0, 5.0), (inf, 10.0)]) == -1.0
    # no observations, fewer than two buckets, no +Inf bucket: NaN
    assert math.isnan(bucket_quantile(0.5, [(1.0, 0.0), (inf, 0.0)]))
    assert math.isnan(bucket_quantile(0.5, [(inf, 3.0)]))
    assert math.isnan(bucket_quantile(0.5, [(1.0, 3.0), (2.0, 4.0)]))
    # out-of-range q as Prometheus: -Inf / +Inf
    assert bucket_quantile(-0.1, [(1.0, 1.0), (inf, 1.0)]) == -inf
    assert bucket_quantile(1.1, [(1.0, 1.0), (inf, 1.0)]) == inf
    # non-monotonic cumulative counts are forced monotonic: (2, 3) becomes 5 → the median is in (0, 1]
    assert bucket_quantile(0.5, [(2.0, 3.0), (1.0, 5.0), (inf, 10.0)]) == pytest.approx(1.0)
    # unsorted input and a repeated bound (merged)
    assert bucket_quantile(0.5, [(inf, 4.0), (1.0, 1.0), (1.0, 1.0)]) == pytest.approx(1.0)


# -- groups, filters, ratios, offsets, volume guards -----------------------------------------------

def test_grouping_sums_counting_aggregations_and_averages_over_all_values() -> None:
    inc = rule(metric="req", aggregation="increase", window="1m", group_by=["service.name"])
    avg = rule(name="avg", metric="g", aggregation="avg", window="1m", group_by=["service.name"])
    ev = setup([inc, avg])
    for t, (a, b, c) in [(0.0, (0, 0, 0)), (30.0, (10, 20, 5))]:
        feed(ev, t, counter("req", [({"pod": "1"}, a), ({"pod": "2"}, b)], time_ns=T0_NS + int(t)),
             resource={"service.name": "x"})
        feed(ev, t, counter("req", [({"pod": "3"}, c)], time_ns=T0_NS + int(t)), resource={"service.name": "y"})
    obs = ev.evaluate(inc, 30.0)
    assert {g: o.value for g, o in obs.items()} == {("x",): 30.0, ("y",): 5.0}
    feed(ev, 40.0, gauge("g", [({"pod": "1"}, 1.0), ({"pod": "2"}, 2.0)]), resource={"service.name": "x"})
    feed(ev, 50.0, gauge("g", [({"pod": "1"}, 6.0)]), resource={"service.name": "x"})
    assert value(ev, avg, 50.0, ("x",)) == 3.0  # (1 + 2 + 6) / 3


def test_quantiles_merge_the_buckets_of_a_group_even_with_different_bounds() -> None:
    r = rule(metric="lat", aggregation="p50", window="1m")
    ev = setup([r])
    feed(ev, 0.0, histogram("lat", [({"a": "1"}, [0, 0, 0], 0.0)], [1.0, 2.0], time_ns=T0_NS))
    feed(ev, 0.0, histogram("lat", [({"a": "2"}, [0, 0, 0, 0], 0.0)], [1.0, 2.0, 4.0], time_ns=T0_NS))
    feed(ev, 30.0, histogram("lat", [({"a": "1"}, [2, 2, 0], 4.0)], [1.0, 2.0], time_ns=T0_NS + 1))
    feed(ev, 30.0, histogram("lat", [({"a": "2"}, [0, 0, 4, 0], 12.0)], [1.0, 2.0, 4.0], time_ns=T0_NS + 1))
    # sum by (le): le=1: 2, le=2: 4 + 0, le=4: 4, +Inf: 4 + 4 = 8 → forced monotonic: 2, 4, 4, 8
    # rank 4 → first cumulative >= 4 is le=2: 1 + 1 * (4 - 2) / (4 - 2) = 2.0
    assert value(ev, r, 30.0) == pytest.approx(2.0)


def test_filters_match_values_lists_regexes_and_missing_attributes() -> None:
    cases = {
        "value": ({"status": "error"}, {"e1"}),
        "number": ({"code": 500}, {"e1"}),
        "list": ({"status": ["error", "timeout"]}, {"e1", "t1"}),
        "regex": ({"route": {"regex": "/v1/.*"}}, {"e1", "ok"}),
        "regex is anchored": ({"route": {"regex": "v1"}}, set()),
        "missing is empty": ({"route": ""}, {"t1"}),
    }
    rules = {name: rule(name=name, metric="req", aggregation="last", filter=flt, group_by=["id"])
             for name, (flt, _) in cases.items()}
    ev = setup(rules.values())
    feed(ev, 1.0, gauge("req", [({"id": "e1", "status": "error", "code": 500, "route": "/v1/a"}, 1.0),
                                ({"id": "t1", "status": "timeout", "code": 504}, 1.0),
                                ({"id": "ok", "status": "ok", "code": 200, "route": "/v1/b"}, 1.0)]))
    for name, (_, expected) in cases.items():
        assert {g[0] for g in ev.evaluate(rules[name], 2.0)} == expected, name


def test_point_attributes_win_over_resource_attributes() -> None:
    r = rule(metric="g", aggregation="last", group_by=["service.name", "host.name"])
    ev = setup([r])
    feed(ev, 1.0, gauge("g", [({"service.name": "point"}, 1.0)]),
         resource={"service.name": "resource", "host.name": "h1"})
    assert set(ev.evaluate(r, 2.0)) == {("point", "h1")}


def error_rate_rule(**extra: Any) -> CompiledRule:
    return rule(metric="req", aggregation="increase", window="5m", filter={"status": "error"},
                ratio_to={"filter": {}}, group_by=["service.name"], condition=">", threshold=0.05, **extra)


def feed_requests(ev: Evaluator, service: str, t: float, ok: int, errors: int) -> None:
    points: list[tuple[dict[str, object], float]] = [({"status": "ok"}, ok)]
    if errors >= 0:
        points.append(({"status": "error"}, errors))
    feed(ev, t, counter("req", points, delta=True), resource={"service.name": service})


def test_ratio_gives_error_rates_per_group() -> None:
    r = error_rate_rule()
    ev = setup([r])
    feed_requests(ev, "a", 10.0, ok=90, errors=10)
    feed_requests(ev, "b", 10.0, ok=99, errors=1)
    feed_requests(ev, "c", 10.0, ok=50, errors=-1)  # no error series at all
    obs = ev.evaluate(r, 20.0)
    assert obs[("a",)].value == pytest.approx(0.1) and obs[("a",)].holds
    assert (obs[("a",)].numerator, obs[("a",)].denominator) == (10.0, 100.0)
    assert obs[("b",)].value == pytest.approx(0.01) and not obs[("b",)].holds
    assert obs[("c",)].value == 0.0  # no failures counted: 0 over its 50 requests


def test_ratio_denominator_grouped_by_fewer_attributes() -> None:
    r = rule(metric="calls", aggregation="increase", window="5m", filter={"status": "error"},
             ratio_to={"filter": {}, "group_by": []}, group_by=["tool"], condition=">", threshold=0.1)
    ev = setup([r])
    feed(ev, 10.0, counter("calls", [({"tool": "search", "status": "error"}, 5),
                                     ({"tool": "search", "status": "ok"}, 45),
                                     ({"tool": "code", "status": "ok"}, 50)], delta=True))
    assert value(ev, r, 20.0, ("search",)) == pytest.approx(5 / 100)  # over all 100 calls


def test_division_by_zero_follows_prometheus() -> None:
    r = rule(metric="n", aggregation="last", ratio_to={"metric": "d"}, group_by=["k"], threshold=1)
    ev = setup([r])
    feed(ev, 1.0, gauge("n", [({"k": "pos"}, 2.0), ({"k": "zero"}, 0.0)]),
         gauge("d", [({"k": "pos"}, 0.0), ({"k": "zero"}, 0.0)]))
    obs = ev.evaluate(r, 2.0)
    assert obs[("pos",)].value == math.inf and obs[("pos",)].holds
    assert ("zero",) not in obs  # 0 / 0 is NaN: no value


def test_offset_compares_with_the_same_window_earlier() -> None:
    """p99 now over p99 an hour ago (the '3x the baseline' rule)."""
    r = rule(metric="lat", aggregation="p99", window="5m", ratio_to={"offset": "1h"}, condition=">", threshold=3)
    ev = setup([r])
    bounds = [1.0, 2.0, 4.0, 8.0]
    feed(ev, 0.0, histogram("lat", [({}, [0, 0, 0, 0, 0], 0.0)], bounds, time_ns=T0_NS))
    feed(ev, 100.0, histogram("lat", [({}, [100, 0, 0, 0, 0], 50.0)], bounds, time_ns=T0_NS + 1))  # p99 0.99
    feed(ev, 3600.0, histogram("lat", [({}, [100, 0, 0, 0, 0], 50.0)], bounds, time_ns=T0_NS + 2))
    feed(ev, 3700.0, histogram("lat", [({}, [100, 0, 0, 100, 0], 650.0)], bounds, time_ns=T0_NS + 3))  # p99 7.96
    obs = ev.evaluate(r, 3700.0)[()]
    assert obs.numerator == pytest.approx(4.0 + 4.0 * 99 / 100)
    assert obs.denominator == pytest.approx(0.99)
    assert obs.holds
    # without history an hour back there is no baseline, so no value (no page at start-up)
    assert ev.evaluate(r, 1000.0) == {}


def test_min_volume_guards_low_traffic_groups() -> None:
    r = error_rate_rule(min_volume={"filter": {}, "threshold": 100})
    ev = setup([r])
    feed_requests(ev, "busy", 10.0, ok=180, errors=20)
    feed_requests(ev, "quiet", 10.0, ok=1, errors=1)  # 50% errors, but two requests
    obs = ev.evaluate(r, 20.0)
    assert obs[("busy",)].holds and obs[("busy",)].volume == 200.0
    assert obs[("quiet",)].value == 0.5 and not obs[("quiet",)].holds and obs[("quiet",)].volume == 2.0


def test_quantile_of_a_gauge_is_reported_as_unsupported() -> None:
    r = rule(metric="g", aggregation="p99")
    ev = setup([r])
    feed(ev, 1.0, gauge("g", [({}, 1.0)]))
    assert ev.evaluate(r, 2.0) == {}
    assert ev.unsupported == {("g", "p99", "gauge")}


def test_selectors_shared_by_rules_are_computed_once_per_round() -> None:
    a = rule(name="a", metric="g", aggregation="last", threshold=1)
    b = rule(name="b", metric="g", aggregation="last", threshold=5)
    ev = setup([a, b])
    feed(ev, 1.0, gauge("g", [({}, 3.0)]))
    cache: dict[Any, Any] = {}
    assert ev.evaluate(a, 2.0, cache)[()].holds
    assert not ev.evaluate(b, 2.0, cache)[()].holds
    assert len(cache) == 1
