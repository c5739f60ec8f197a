"""OTLP metrics → Datadog series: the mapping table of exporters/datadog/metrics.py, value by value."""
from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from exporters.datadog.config import DatadogExporterConfig
from exporters.datadog.metrics import COUNT, GAUGE, MappedMetrics, MetricsMapper
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.testing import FakeClock, kv
from pipeline.wire import VALUE, skeleton
from tests.e2e.datadog_intake import check_series

KEY = "0123456789abcdef0123456789abcdef"
NS = 1_000_000_000
T0 = 1_700_000_000  # seconds
STARTED = T0 - 100  # the exporter starts before the series below (unless a test says otherwise)
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


class JSONMapper(MetricsMapper):
    """The series as the intake reads them (tuples become JSON arrays)."""

    def map(self, raw: bytes) -> MappedMetrics:
        out = super().map(raw)
        out.series = orjson.loads(orjson.dumps(out.documents()))
        return out


def mapper(clock: FakeClock | None = None, started: float = STARTED, **raw: Any) -> MetricsMapper:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(DatadogExporterConfig, {"api": {"key": KEY}, **raw}, "x", issues)
    assert issues == []
    return JSONMapper(cfg, clock=clock or FakeClock(), wall_clock=lambda: started, hostname="fallback-host")


def request(*metrics: Metric, resource: dict[str, Any] | None = None, scope: str = "lib") -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for k, v in (resource if resource is not None else {"service.name": "agent", "host.name": "node-1"}).items():
        rm.resource.attributes.append(kv(k, v))
    sm = rm.scope_metrics.add()
    sm.scope.name, sm.scope.version = scope, "1.2"
    sm.metrics.extend(metrics)
    return req.SerializeToString()


def gauge(name: str, *values: float, attrs: dict[str, Any] | None = None, t: int = T0) -> Metric:
    m = Metric(name=name)
    for v in values:
        dp = m.gauge.data_points.add(time_unix_nano=t * NS)
        if isinstance(v, int):
            dp.as_int = v
        else:
            dp.as_double = v
        for k, a in (attrs or {}).items():
            dp.attributes.append(kv(k, a))
    return m


def total(name: str, value: float, *, t: int, start: int = T0 - 10, temporality: int = CUMULATIVE,
          monotonic: bool = True, attrs: dict[str, Any] | None = None) -> Metric:
    m = Metric(name=name)
    m.sum.aggregation_temporality = temporality  # type: ignore[assignment]
    m.sum.is_monotonic = monotonic
    dp = m.sum.data_points.add(time_unix_nano=t * NS, start_time_unix_nano=start * NS)
    if isinstance(value, int):
        dp.as_int = value
    else:
        dp.as_double = value
    for k, a in (attrs or {}).items():
        dp.attributes.append(kv(k, a))
    return m


def histogram(name: str, counts: list[int], bounds: list[float], total_sum: float, *, t: int = T0,
              start: int = T0 - 10, temporality: int = DELTA, low: float | None = None,
              high: float | None = None) -> Metric:
    m = Metric(name=name)
    m.histogram.aggregation_temporality = temporality  # type: ignore[assignment]
    dp = m.histogram.data_points.add(time_unix_nano=t * NS, start_time_unix_nano=start * NS, count=sum(counts),
                                     sum=total_sum)
    dp.bucket_counts.extend(counts)
    dp.explicit_bounds.extend(bounds)
    if low is not None:
        dp.min = low
    if high is not None:
        dp.max = high
    dp.attributes.append(kv("route", "/chat"))
    return m


def values(series: list[dict[str, Any]], metric: str) -> list[float]:
    return [p["value"] for s in series if s["metric"] == metric for p in s["points"]]


def test_a_gauge_with_its_tags_host_and_unified_service_tags() -> None:
    m = mapper(tags=["team:ml"])
    out = m.map(request(gauge("queue.depth", 7, attrs={"model": "gpt-4o", "ok": True, "n": 3, "ratio": 0.5,
                                                       "blob": b"\x01\x02", "list": ["a", 1], "empty": ""}),
                        resource={"service.name": "agent", "host.name": "node-1", "service.version": "1.4",
                                  "deployment.environment.name": "prod", "k8s.pod.name": "p-1"}))
    [s] = out.series
    assert s == {"metric": "queue.depth", "type": GAUGE, "points": [{"timestamp": T0, "value": 7}],
                 "tags": ["service:agent", "env:prod", "version:1.4", "team:ml", "model:gpt-4o", "ok:true", "n:3",
                          "ratio:0.5", "blob:AQI=", 'list:["a",1]', "empty:n/a"],
                 "resources": [{"name": "node-1", "type": "host"}]}
    assert out.cuts == [1] and out.skipped == {}


def test_host_falls_back_to_datadog_host_name_then_the_exporter_hostname() -> None:
    out = mapper().map(request(gauge("g", 1.5), resource={"datadog.host.name": "dd", "host.name": "otel"}))
    assert out.series[0]["resources"] == [{"name": "dd", "type": "host"}]
    out = mapper().map(request(gauge("g", 1.5), resource={}))
    assert out.series[0]["resources"] == [{"name": "fallback-host", "type": "host"}] and out.series[0]["tags"] == []
    out = mapper(hostname="configured").map(request(gauge("g", 1.5), resource={}))
    assert out.series[0]["resources"] == [{"name": "configured", "type": "host"}]


def test_resource_attributes_and_scope_as_tags_when_asked() -> None:
    m = mapper(metrics={"resource_attributes_as_tags": True, "instrumentation_scope_metadata_as_tags": True})
    [s] = m.map(request(gauge("g", 1), resource={"service.name": "a", "k8s.pod.name": "p"}, scope="openai")).series
    assert s["tags"] == ["service:a", "k8s.pod.name:p", "instrumentation_scope:openai",
                         "instrumentation_scope_version:1.2"]


def test_delta_sums_are_counts_of_their_value_monotonic_or_not() -> None:
    out = mapper().map(request(total("requests", 5, t=T0, temporality=DELTA),
                               total("balance", -2.5, t=T0, temporality=DELTA, monotonic=False)))
    assert [(s["metric"], s["type"], s["points"][0]["value"]) for s in out.series] == [
        ("requests", COUNT, 5), ("balance", COUNT, -2.5)]


def test_cumulative_non_monotonic_sums_are_gauges_of_their_value() -> None:
    [s] = mapper().map(request(total("inflight", 3, t=T0, monotonic=False))).series
    assert (s["type"], s["points"][0]["value"]) == (GAUGE, 3)


def test_cumulative_monotonic_sums_become_deltas() -> None:
    m = mapper()
    points = []
    for t, v in ((T0, 10), (T0 + 10, 15), (T0 + 20, 15), (T0 + 30, 21)):
        out = m.map(request(total("tokens", v, t=t, attrs={"model": "m"})))
        points += [(s["type"], s["points"][0]["timestamp"], s["points"][0]["value"]) for s in out.series]
    # the series started (T0 - 10) after the exporter (T0 - 100): its first value is reported whole
    assert points == [(COUNT, T0, 10), (COUNT, T0 + 10, 5), (COUNT, T0 + 20, 0), (COUNT, T0 + 30, 6)]
    assert m.tracked_series == 1


def test_the_first_value_follows_initial_cumulative_monotonic_value() -> None:
    older = total("tokens", 10, t=T0, start=T0 - 1000)  # began before the exporter started
    assert mapper().map(request(older)).skipped == {"initial_value": 1}
    assert mapper(metrics={"sums": {"initial_cumulative_monotonic_value": "keep"}}).map(request(older)).series
    newer = total("tokens", 10, t=T0)
    assert mapper(metrics={"sums": {"initial_cumulative_monotonic_value": "drop"}}).map(request(newer)).series == []
    unknown_start = total("tokens", 10, t=T0, start=0)
    assert mapper().map(request(unknown_start)).series == []


def test_a_reset_is_seen_by_a_lower_value_or_a_new_start_time() -> None:
    m = mapper()
    seen = []
    for t, start, v in ((T0, T0 - 10, 100), (T0 + 10, T0 - 10, 130), (T0 + 20, T0 + 15, 4), (T0 + 30, T0 + 15, 9),
                        (T0 + 40, T0 + 15, 2)):
        seen += values(m.map(request(total("c", v, t=t, start=start))).series, "c")
    # 100 (new series), +30, restart at T0+15 → 4 since, +5, then a drop with the same start: a reset, 2 reported
    assert seen == [100, 30, 4, 5, 2]


def test_points_no_newer_than_the_last_are_dropped_and_counted() -> None:
    m = mapper()
    m.map(request(total("c", 1, t=T0 + 10)))
    out = m.map(request(total("c", 2, t=T0 + 10), total("c", 3, t=T0 + 5)))
    assert out.series == [] and out.skipped == {"out_of_order": 2} and out.rejected == 0


def test_raw_value_mode_sends_cumulative_monotonic_sums_as_gauges() -> None:
    m = mapper(metrics={"sums": {"cumulative_monotonic_mode": "raw_value"}})
    [s] = m.map(request(total("c", 42, t=T0))).series
    assert (s["type"], s["points"][0]["value"]) == (GAUGE, 42) and m.tracked_series == 0


def test_a_delta_histogram_gives_count_sum_avg_min_max() -> None:
    out = mapper().map(request(histogram("latency", [1, 2, 1], [0.1, 1.0], 2.0, low=0.05, high=3.0)))
    got = {s["metric"]: (s["type"], s["points"][0]["value"]) for s in out.series}
    assert got == {"latency.count": (COUNT, 4), "latency.sum": (COUNT, 2.0), "latency.avg": (GAUGE, 0.5),
                   "latency.min": (GAUGE, 0.05), "latency.max": (GAUGE, 3.0)}
    assert all(s["tags"] == ["service:agent", "route:/chat"] for s in out.series)
    assert out.cuts == [5]  # one data point: its five series travel together


def test_a_histogram_without_min_max_or_observations() -> None:
    out = mapper().map(request(histogram("latency", [0, 0], [1.0], 0.0)))
    assert {s["metric"]: s["points"][0]["value"] for s in out.series} == {"latency.count": 0, "latency.sum": 0.0}


def test_a_cumulative_histogram_reports_interval_deltas_and_no_lifetime_min_max() -> None:
    m = mapper()
    first = m.map(request(histogram("h", [1, 1], [1.0], 3.0, temporality=CUMULATIVE, low=0.5, high=2.5)))
    second = m.map(request(histogram("h", [3, 2], [1.0], 10.0, t=T0 + 10, temporality=CUMULATIVE, low=0.5,
                                     high=9.0)))
    assert {s["metric"]: s["points"][0]["value"] for s in first.series} == {"h.count": 2, "h.sum": 3.0,
                                                                           "h.avg": 1.5}
    assert {s["metric"]: s["points"][0]["value"] for s in second.series} == {"h.count": 3, "h.sum": 7.0,
                                                                            "h.avg": 7.0 / 3}


def test_counters_mode_adds_one_count_per_bucket() -> None:
    m = mapper(metrics={"histograms": {"mode": "counters"}})
    out = m.map(request(histogram("h", [1, 2, 3], [0.0, 2.5], 4.0)))
    buckets = [(s["tags"][-2:], s["points"][0]["value"]) for s in out.series if s["metric"] == "h.bucket"]
    assert buckets == [(["lower_bound:-inf", "upper_bound:0"], 1), (["lower_bound:0", "upper_bound:2.5"], 2),
                       (["lower_bound:2.5", "upper_bound:inf"], 3)]
    assert {s["metric"] for s in out.series} == {"h.count", "h.sum", "h.avg", "h.bucket"}
    only = mapper(metrics={"histograms": {"mode": "counters", "send_aggregation_metrics": False}})
    assert {s["metric"] for s in only.map(request(histogram("h", [1, 2, 3], [0.0, 2.5], 4.0))).series} == {"h.bucket"}


def test_exponential_histograms_give_the_same_aggregations() -> None:
    metric = Metric(name="e")
    metric.exponential_histogram.aggregation_temporality = DELTA
    metric.exponential_histogram.data_points.add(time_unix_nano=T0 * NS, count=4, sum=10.0, min=1.0, max=4.0,
                                                 scale=1)
    out = mapper().map(request(metric))
    assert {s["metric"]: s["points"][0]["value"] for s in out.series} == {"e.count": 4, "e.sum": 10.0, "e.avg": 2.5,
                                                                         "e.min": 1.0, "e.max": 4.0}


def test_summaries_give_count_sum_deltas_and_quantile_gauges() -> None:
    def summary(t: int, count: int, s: float) -> Metric:
        metric = Metric(name="rt")
        dp = metric.summary.data_points.add(time_unix_nano=t * NS, start_time_unix_nano=(T0 - 10) * NS,
                                            count=count, sum=s)
        dp.quantile_values.add(quantile=0.5, value=1.0)
        dp.quantile_values.add(quantile=1.0, value=float("nan"))
        return metric

    m = mapper()
    m.map(request(summary(T0, 10, 20.0)))
    out = m.map(request(summary(T0 + 10, 14, 30.0)))
    assert [(s["metric"], s["type"], s["points"][0]["value"], s["tags"][-1]) for s in out.series] == [
        ("rt.count", COUNT, 4, "service:agent"), ("rt.sum", COUNT, 10.0, "service:agent"),
        ("rt.quantile", GAUGE, 1.0, "quantile:0.5")]
    plain = mapper(metrics={"summaries": {"mode": "noquantiles"}}).map(request(summary(T0, 10, 20.0)))
    assert {s["metric"] for s in plain.series} == {"rt.count", "rt.sum"}


def test_what_cannot_be_sent_is_counted_and_rejected() -> None:
    no_temporality = Metric(name="s")
    no_temporality.sum.data_points.add(time_unix_nano=T0 * NS, as_int=1)
    flagged = gauge("g", 1)
    flagged.gauge.data_points[0].flags = 1  # no recorded value
    out = mapper().map(request(gauge("g", math.nan, math.inf, 2.0), no_temporality, flagged))
    assert values(out.series, "g") == [2.0]
    assert out.skipped == {"invalid_value": 2, "unsupported": 1, "no_recorded_value": 1}
    assert out.rejected == 3


def test_a_point_without_a_timestamp_gets_the_export_time() -> None:
    [s] = mapper(started=T0 + 5.7).map(request(gauge("g", 1, t=0))).series
    assert s["points"][0]["timestamp"] == T0 + 5


def test_cumulative_state_expires_after_delta_ttl_and_is_bounded() -> None:
    clock = FakeClock()
    m = mapper(clock, metrics={"delta_ttl": 60, "delta_max_series": 2})
    for i in range(3):
        m.map(request(total("c", 5, t=T0, attrs={"i": i})))
    assert m.tracked_series == 2 and m.evicted == 1
    clock.advance(30)
    m.map(request(total("c", 6, t=T0 + 10, attrs={"i": 2})))  # refreshes i=2
    clock.advance(45)
    m.map(request(gauge("other", 1)))
    assert m.tracked_series == 1  # i=1 idle for 75 s: forgotten; i=2 seen 45 s ago: kept


def test_tags_of_repeated_attributes_come_from_the_cache_and_the_cache_is_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from exporters.datadog import attributes
    monkeypatch.setattr(attributes, "TAG_CACHE_SIZE", 4)
    m = mapper()
    for i in range(10):
        out = m.map(request(gauge("g", 1, attrs={"i": i, "model": "m"})))
        assert out.series[0]["tags"][-2:] == [f"i:{i}", "model:m"]
    assert len(m._tags._tags) <= 4


def test_rendered_tags_are_reused_per_attribute_set_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporters.datadog import metrics
    monkeypatch.setattr(metrics, "SERIES_TAGS_CACHE_SIZE", 4)
    m = mapper()
    for i in list(range(10)) * 2:
        out = m.map(request(gauge("g", 1, attrs={"i": i}), histogram("h", [1], [], 1.0)))
        assert [s["tags"] for s in out.series] == [["service:agent", f"i:{i}"]] + [["service:agent", "route:/chat"]] * 3
        assert sum(len(sc.tails) for sc in m._scopes.values()) <= 4


def test_large_attributes_and_names_are_mapped_but_not_cached() -> None:
    # a client sending ever new 100 kB attribute values or names must not grow the caches by their size
    m = mapper()
    for i in range(3):
        big, name = f"{i}" * 100_000, f"m{i}" * 50_000
        out = m.map(request(gauge(name, 1, attrs={"prompt": big})))
        assert out.series[0]["tags"] == ["service:agent", f"prompt:{big}"] and out.series[0]["metric"] == name
    assert m._tags._tags == {} and m._heads == {}
    assert sum(len(t) for sc in m._scopes.values() for t in sc.tails.values()) < 10_000


def test_the_skeleton_keeps_enums_as_numbers() -> None:
    view = skeleton(Metric.DESCRIPTOR, {"sum": {"aggregation_temporality": VALUE, "is_monotonic": VALUE}})
    msg = view.FromString(total("c", 1, t=T0).SerializeToString())
    assert msg.sum.aggregation_temporality == CUMULATIVE and msg.sum.is_monotonic is True


def test_a_metric_without_a_name_is_rejected_alone() -> None:
    # The v2 API requires a non-empty `metric`: a nameless series would get the whole request refused (400).
    out = mapper().map(request(gauge("", 1, 2), gauge("g", 3), total("", 4, t=T0, temporality=DELTA)))
    assert [s["metric"] for s in out.series] == ["g"] and out.cuts == [1]
    assert out.skipped == {"invalid_name": 3} and out.rejected == 3


_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e308, -1e-308])
_INTS = st.integers(-(2**63), 2**63 - 1)
_U64 = st.integers(0, 2**64 - 1)
_ATTR_VALUES = st.one_of(st.text(max_size=20), st.booleans(), _INTS, _FLOATS, st.binary(max_size=8),
                         st.lists(st.text(max_size=5), max_size=3))


@st.composite
def hostile_metric(draw: st.DrawFn) -> Metric:
    m = Metric(name=draw(st.sampled_from(["", "m", "a.b", "ünï cödé", "x" * 300])))
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exponential_histogram", "summary", "none"]))
    for _ in range(draw(st.integers(0, 3))):
        attrs = draw(st.dictionaries(st.text(max_size=10), _ATTR_VALUES, max_size=3))
        common = {"time_unix_nano": draw(_U64), "start_time_unix_nano": draw(_U64), "flags": draw(st.integers(0, 3))}
        if kind in ("gauge", "sum"):
            data = getattr(m, kind)
            dp = data.data_points.add(**common)
            if draw(st.booleans()):
                dp.as_int = draw(_INTS)
            else:
                dp.as_double = draw(_FLOATS)
        elif kind in ("histogram", "exponential_histogram"):
            data = getattr(m, kind)
            dp = data.data_points.add(count=draw(_U64), **common)
            for f in ("sum", "min", "max"):
                if draw(st.booleans()):
                    setattr(dp, f, draw(_FLOATS))
            if kind == "histogram":
                dp.bucket_counts.extend(draw(st.lists(_U64, max_size=4)))
                dp.explicit_bounds.extend(draw(st.lists(_FLOATS, max_size=4)))
        elif kind == "summary":
            dp = m.summary.data_points.add(count=draw(_U64), sum=draw(_FLOATS), **common)
            dp.quantile_values.add(quantile=draw(_FLOATS), value=draw(_FLOATS))
        else:
            continue
        for k, v in attrs.items():
            dp.attributes.append(kv(k, v))
    if kind in ("sum", "histogram", "exponential_histogram"):
        getattr(m, kind).aggregation_temporality = draw(st.integers(0, 3))
    if kind == "sum":
        m.sum.is_monotonic = draw(st.booleans())
    return m


@settings(max_examples=150, deadline=None)
@given(metrics=st.lists(hostile_metric(), max_size=6), histograms=st.sampled_from(["nobuckets", "counters"]))
def test_hostile_requests_map_to_valid_series_and_every_point_is_accounted_for(metrics: list[Metric],
                                                                               histograms: str) -> None:
    m = mapper(metrics={"histograms": {"mode": histograms}, "sums": {"initial_cumulative_monotonic_value": "keep"}})
    raw = request(*metrics, resource={"service.name": "", "host.name": "h"})
    total_points = sum(len(getattr(x, x.WhichOneof("data")).data_points) for x in metrics if x.WhichOneof("data"))
    for _ in range(2):  # twice: the second time cumulative series have state
        out = m.map(raw)
        check_series({"series": out.series})  # what the fake intake accepts, as the API reference describes it
        assert out.cuts == sorted(out.cuts) and (not out.cuts or out.cuts[-1] == len(out.series))
        assert len(out.cuts) + sum(out.skipped.values()) == total_points


def test_a_delta_too_large_for_a_double_is_not_sent() -> None:
    # -1.7e308 then 1.7e308: finite values whose difference is infinite (JSON has no infinity)
    m = mapper(metrics={"sums": {"initial_cumulative_monotonic_value": "keep"}})

    def summary(t: int, count: int, s: float) -> Metric:
        metric = Metric(name="rt")
        metric.summary.data_points.add(time_unix_nano=t * NS, start_time_unix_nano=(T0 - 10) * NS, count=count, sum=s)
        return metric

    m.map(request(total("c", -1.7e308, t=T0), histogram("h", [1], [], -1.7e308, temporality=CUMULATIVE),
                  summary(T0, 1, -1.7e308)))
    out = m.map(request(total("c", 1.7e308, t=T0 + 10),
                        histogram("h", [2], [], 1.7e308, t=T0 + 10, temporality=CUMULATIVE),
                        summary(T0 + 10, 2, 1.7e308)))
    check_series({"series": out.series})
    assert sorted(s["metric"] for s in out.series) == ["h.count", "rt.count"]  # the sums' deltas are not numbers
    assert out.skipped == {"invalid_value": 1} and out.cuts == [1, 2]


def test_points_timed_outside_what_the_api_takes_are_rejected_alone() -> None:
    # 1 s after the epoch, or past 2286: POSIX seconds the API cannot take; one such point must not fail the request
    far = 10_000_000_000
    out = mapper().map(request(gauge("g", 1, t=1), gauge("g", 2, t=far), gauge("g", 3),
                               histogram("h", [1], [], 1.0, t=1), total("c", 5, t=far, temporality=DELTA)))
    assert values(out.series, "g") == [3] and out.skipped == {"invalid_timestamp": 4} and out.rejected == 4
