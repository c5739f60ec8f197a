"""Interval aggregation of StatsD samples and the exact OTLP points it produces."""
from __future__ import annotations

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from receivers.statsd.aggregator import (
    DEFAULT_TIMER_BUCKETS,
    DEFAULT_VALUE_BUCKETS,
    SCOPE_NAME,
    Observer,
    StatsDAggregator,
)
from receivers.statsd.parser import DISTRIBUTION, HISTOGRAM, TIMER, StatsDParser

T0 = 1_700_000_000_000_000_000
T1 = T0 + 10 * 10**9
T2 = T1 + 10 * 10**9
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


def feed(agg: StatsDAggregator, *lines: str) -> None:
    agg.add(StatsDParser().parse([ln.encode() for ln in lines]))


def metrics(agg: StatsDAggregator, now: int) -> dict[str, list[Metric]]:
    req = agg.flush(now)
    assert req is not None
    assert len(req.resource_metrics) == 1 and len(req.resource_metrics[0].scope_metrics) == 1
    sm = req.resource_metrics[0].scope_metrics[0]
    assert sm.scope.name == SCOPE_NAME
    out: dict[str, list[Metric]] = {}
    for m in sm.metrics:
        out.setdefault(m.name, []).append(m)
    return out


def one(agg: StatsDAggregator, now: int, name: str) -> Metric:
    ms = metrics(agg, now)[name]
    assert len(ms) == 1
    return ms[0]


def attrs(dp: object) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in dp.attributes}  # type: ignore[attr-defined]


def test_counter_is_a_monotonic_delta_sum_scaled_by_sample_rate() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "req:1|c", "req:1|c", "req:1|c", "req:1|c|@0.5", "req:10|c|@0.1")
    m = one(agg, T1, "req")
    assert m.WhichOneof("data") == "sum"
    assert m.sum.is_monotonic and m.sum.aggregation_temporality == DELTA
    [dp] = m.sum.data_points
    assert dp.WhichOneof("value") == "as_int" and dp.as_int == 105
    assert (dp.start_time_unix_nano, dp.time_unix_nano) == (T0, T1)


def test_float_counters_are_kept_as_doubles() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "cost:0.25|c", "cost:0.5|c", "cost:2|c", "ratio:1|c|@0.3")
    ms = metrics(agg, T1)
    dp = ms["cost"][0].sum.data_points[0]
    assert dp.WhichOneof("value") == "as_double" and dp.as_double == 2.75
    assert ms["ratio"][0].sum.data_points[0].as_double == pytest.approx(1 / 0.3)


def test_counters_reset_every_interval_and_start_times_chain() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "c:5|c")
    assert one(agg, T1, "c").sum.data_points[0].as_int == 5
    assert agg.flush(T1 + 1) is None  # nothing arrived: no request at all
    feed(agg, "c:2|c")
    dp = one(agg, T2, "c").sum.data_points[0]
    assert dp.as_int == 2
    assert (dp.start_time_unix_nano, dp.time_unix_nano) == (T1 + 1, T2)


def test_gauges_last_value_and_relative_updates_persist_across_intervals() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "q:10|g", "q:+5|g")
    dp = one(agg, T1, "q").gauge.data_points[0]
    assert dp.as_int == 15 and dp.time_unix_nano == T1
    feed(agg, "q:-3|g")
    assert one(agg, T2, "q").gauge.data_points[0].as_int == 12
    assert agg.flush(T2 + 1) is None  # an untouched gauge is not re-sent (so it can expire downstream)
    feed(agg, "q:+0.5|g")
    dp = one(agg, T2 + 2, "q").gauge.data_points[0]
    assert dp.WhichOneof("value") == "as_double" and dp.as_double == 12.5
    feed(agg, "q:7|g", "fresh:-4|g")
    ms = metrics(agg, T2 + 3)
    assert ms["q"][0].gauge.data_points[0].as_int == 7
    assert ms["fresh"][0].gauge.data_points[0].as_int == -4  # relative on an unknown gauge starts from 0


def test_gauge_state_is_forgotten_after_its_ttl() -> None:
    agg = StatsDAggregator(start_ns=T0, gauge_ttl=60)
    feed(agg, "old:100|g", "kept:1|g")
    metrics(agg, T0 + 1)
    feed(agg, "kept:+1|g")
    metrics(agg, T0 + 50 * 10**9)
    assert agg.flush(T0 + 70 * 10**9) is None  # 'old' was last set 70 s ago, past the 60 s TTL: forgotten
    feed(agg, "old:+1|g", "kept:+1|g")
    ms = metrics(agg, T0 + 100 * 10**9)
    assert ms["old"][0].gauge.data_points[0].as_int == 1
    assert ms["kept"][0].gauge.data_points[0].as_int == 3


def test_timers_become_second_histograms_with_llm_latency_buckets() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "llm:320|ms", "llm:4|ms", "llm:5|ms", "llm:1500|ms", "llm:200000|ms")
    m = one(agg, T1, "llm")
    assert m.unit == "s" and m.histogram.aggregation_temporality == DELTA
    [dp] = m.histogram.data_points
    assert list(dp.explicit_bounds) == list(DEFAULT_TIMER_BUCKETS)
    assert DEFAULT_TIMER_BUCKETS[0] == 0.005 and DEFAULT_TIMER_BUCKETS[-1] == 120.0
    expected = [0] * (len(DEFAULT_TIMER_BUCKETS) + 1)
    expected[0] = 2   # 0.004 and 0.005 (upper bounds are inclusive)
    expected[6] = 1   # 0.32  in (0.25, 0.5]
    expected[8] = 1   # 1.5   in (1, 2.5]
    expected[-1] = 1  # 200 s above the last bound
    assert list(dp.bucket_counts) == expected
    assert dp.count == 5
    assert dp.sum == pytest.approx(0.32 + 0.004 + 0.005 + 1.5 + 200.0)
    assert (dp.min, dp.max) == (0.004, 200.0)
    assert (dp.start_time_unix_nano, dp.time_unix_nano) == (T0, T1)


def test_sample_rate_scales_histogram_counts() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "t:100|ms|@0.5", "t:100|ms", "t:3000|ms|@0.25")
    dp = one(agg, T1, "t").histogram.data_points[0]
    assert dp.count == 7  # 2 + 1 + 4
    assert dp.bucket_counts[DEFAULT_TIMER_BUCKETS.index(0.1)] == 3
    assert dp.bucket_counts[DEFAULT_TIMER_BUCKETS.index(5.0)] == 4
    assert dp.sum == pytest.approx(0.1 * 3 + 3.0 * 4)


def test_histograms_and_distributions_keep_their_own_unit() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "tokens:1500|h", "tokens:20|h", "bytes:0.5|d", "bytes:2000000|d")
    ms = metrics(agg, T1)
    tok = ms["tokens"][0]
    assert tok.unit == "" and list(tok.histogram.data_points[0].explicit_bounds) == list(DEFAULT_VALUE_BUCKETS)
    counts = list(tok.histogram.data_points[0].bucket_counts)
    assert counts[DEFAULT_VALUE_BUCKETS.index(25.0)] == 1 and counts[DEFAULT_VALUE_BUCKETS.index(2500.0)] == 1
    assert tok.histogram.data_points[0].sum == 1520.0
    b = ms["bytes"][0].histogram.data_points[0]
    assert b.bucket_counts[DEFAULT_VALUE_BUCKETS.index(0.5)] == 1 and b.bucket_counts[-1] == 1


def test_sets_count_distinct_members_per_interval() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "users:a|s", "users:b|s", "users:a|s", "users:c|s")
    dp = one(agg, T1, "users").gauge.data_points[0]
    assert dp.as_int == 3
    feed(agg, "users:a|s")
    assert one(agg, T2, "users").gauge.data_points[0].as_int == 1


def test_each_name_type_and_attribute_set_is_one_series() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "x:1|c|#a:1,b:2", "x:2|c|#b:2,a:1", "x:4|c|#a:1", "x:8|c", "x:3|g|#a:1")
    ms = metrics(agg, T1)
    assert len(ms["x"]) == 2
    sums = {m.WhichOneof("data"): m for m in ms["x"]}
    points = {tuple(sorted(attrs(dp).items())): dp.as_int for dp in sums["sum"].sum.data_points}
    assert points == {(("a", "1"), ("b", "2")): 3, (("a", "1"),): 4, (): 8}
    assert [attrs(dp) for dp in sums["gauge"].gauge.data_points] == [{"a": "1"}]


def test_tags_and_container_id_become_attributes() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "x:1|c|#env:prod,flag|c:abc123")
    dp = one(agg, T1, "x").sum.data_points[0]
    assert attrs(dp) == {"container.id": "abc123", "env": "prod", "flag": ""}


def test_enable_metric_type_adds_the_type_attribute() -> None:
    agg = StatsDAggregator(start_ns=T0, enable_metric_type=True)
    feed(agg, "a:1|c|#k:v", "b:1|g", "c:1|ms", "d:1|h", "e:1|d", "f:x|s", "g:1|c|#metric_type:fake")
    ms = metrics(agg, T1)
    got = {}
    for name, [m] in ms.items():
        dp = getattr(m, m.WhichOneof("data")).data_points[0]
        got[name] = attrs(dp)
    assert got == {"a": {"k": "v", "metric_type": "counter"}, "b": {"metric_type": "gauge"},
                   "c": {"metric_type": "timing"}, "d": {"metric_type": "histogram"},
                   "e": {"metric_type": "distribution"}, "f": {"metric_type": "set"},
                   "g": {"metric_type": "counter"}}


def test_timestamps_from_the_line_are_the_point_times() -> None:
    agg = StatsDAggregator(start_ns=T0)
    ts = 1_699_999_990
    feed(agg, f"g:5|g|T{ts}", f"c:1|c|T{ts - 5}", f"c:1|c|T{ts}", "plain:1|c")
    ms = metrics(agg, T1)
    assert ms["g"][0].gauge.data_points[0].time_unix_nano == ts * 10**9
    c = ms["c"][0].sum.data_points[0]
    assert c.as_int == 2 and c.time_unix_nano == ts * 10**9
    assert c.start_time_unix_nano == ts * 10**9  # never after the point time
    assert ms["plain"][0].sum.data_points[0].time_unix_nano == T1


def test_packed_values_aggregate_like_separate_lines() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, "h:1:2:3|h", "c:1:2|c", "g:5:+1|g")
    ms = metrics(agg, T1)
    assert ms["h"][0].histogram.data_points[0].count == 3
    assert ms["h"][0].histogram.data_points[0].sum == 6.0
    assert ms["c"][0].sum.data_points[0].as_int == 3
    assert ms["g"][0].gauge.data_points[0].as_int == 6


def test_summary_observer_reports_exact_quantiles_of_the_interval() -> None:
    agg = StatsDAggregator(start_ns=T0, observers={TIMER: Observer("summary", quantiles=(0.0, 0.5, 0.9, 1.0))})
    feed(agg, *[f"t:{v}|ms" for v in range(10, 110, 10)])  # 10 … 100 ms
    m = one(agg, T1, "t")
    assert m.unit == "s" and m.WhichOneof("data") == "summary"
    dp = m.summary.data_points[0]
    assert dp.count == 10 and dp.sum == pytest.approx(0.55)
    assert [(q.quantile, q.value) for q in dp.quantile_values] == [(0.0, 0.01), (0.5, 0.05), (0.9, 0.09), (1.0, 0.1)]


def test_summary_observer_weighs_sampled_values() -> None:
    agg = StatsDAggregator(start_ns=T0, observers={HISTOGRAM: Observer("summary", quantiles=(0.5, 0.99))})
    feed(agg, "h:1|h", "h:100|h|@0.1")  # 1 once, 100 ten times
    dp = one(agg, T1, "h").summary.data_points[0]
    assert dp.count == 11 and dp.sum == 1001.0
    assert [(q.quantile, q.value) for q in dp.quantile_values] == [(0.5, 100.0), (0.99, 100.0)]


def test_gauge_observer_reports_the_last_value() -> None:
    agg = StatsDAggregator(start_ns=T0, observers={DISTRIBUTION: Observer("gauge"), TIMER: Observer("gauge")})
    feed(agg, "d:3|d", "d:7|d", "t:250|ms")
    ms = metrics(agg, T1)
    assert ms["d"][0].gauge.data_points[0].as_double == 7.0
    assert ms["t"][0].unit == "s" and ms["t"][0].gauge.data_points[0].as_double == 0.25


def test_custom_histogram_buckets() -> None:
    agg = StatsDAggregator(start_ns=T0, observers={HISTOGRAM: Observer("histogram", buckets=(10.0, 100.0))})
    feed(agg, "h:5|h", "h:10|h", "h:50|h", "h:500|h")
    dp = one(agg, T1, "h").histogram.data_points[0]
    assert list(dp.explicit_bounds) == [10.0, 100.0]
    assert list(dp.bucket_counts) == [2, 1, 1]


def test_huge_integer_counters_fall_back_to_double() -> None:
    agg = StatsDAggregator(start_ns=T0)
    feed(agg, f"big:{2**63}|c")
    dp = one(agg, T1, "big").sum.data_points[0]
    assert dp.WhichOneof("value") == "as_double" and dp.as_double == float(2**63)
