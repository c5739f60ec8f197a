from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from pipeline.component import make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError
from pipeline.model import Payload, Signal
from pipeline.testing import MetricsSink, kv, nop_host, nop_settings
from processors.cardinality_limit.processor import (
    FACTORY,
    OVERFLOW_KEY,
    CardinalityLimitConfig,
    CardinalityLimitProcessor,
)

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
T0 = 1_700_000_000_000_000_000


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(sink: MetricsSink | None = None, clock: Clock | None = None, **cfg: object) -> CardinalityLimitProcessor:
    settings = nop_settings("cardinality_limit", signal=Signal.METRICS)
    if clock is not None:
        settings = dataclasses.replace(settings, clock=clock)
    return FACTORY.create(settings, CardinalityLimitConfig(**cfg), sink or MetricsSink())  # type: ignore[arg-type]


def request(metrics: list[Metric], service: str = "agent") -> Payload:
    req = Signal.METRICS.request_type()
    rm = req.resource_metrics.add()  # type: ignore[union-attr]
    rm.resource.attributes.append(kv("service.name", service))
    sm = rm.scope_metrics.add()
    sm.scope.name = "test"
    sm.metrics.extend(metrics)
    return Payload(Signal.METRICS, message=req)


def sum_metric(name: str, points: list[tuple[dict[str, object], float]], *, temporality: int = DELTA,
               as_double: bool = False, t: int = T0) -> Metric:
    m = Metric(name=name)
    m.sum.is_monotonic = True
    m.sum.aggregation_temporality = temporality
    for attrs, value in points:
        dp = m.sum.data_points.add()
        dp.start_time_unix_nano = t - 10
        dp.time_unix_nano = t
        if as_double:
            dp.as_double = float(value)
        else:
            dp.as_int = int(value)
        dp.attributes.extend(kv(k, v) for k, v in attrs.items())
    return m


def gauge_metric(name: str, points: list[tuple[dict[str, object], float, int]]) -> Metric:
    m = Metric(name=name)
    for attrs, value, t in points:
        dp = m.gauge.data_points.add()
        dp.time_unix_nano = t
        dp.as_double = value
        dp.attributes.extend(kv(k, v) for k, v in attrs.items())
    return m


def histogram_metric(name: str, points: list[tuple[dict[str, object], list[float], list[int], float, float, float]],
                     temporality: int = DELTA) -> Metric:
    m = Metric(name=name)
    m.histogram.aggregation_temporality = temporality
    for attrs, bounds, counts, total, lo, hi in points:
        dp = m.histogram.data_points.add()
        dp.time_unix_nano = T0
        dp.explicit_bounds.extend(bounds)
        dp.bucket_counts.extend(counts)
        dp.count = sum(counts)
        dp.sum = total
        dp.min = lo
        dp.max = hi
        dp.attributes.extend(kv(k, v) for k, v in attrs.items())
    return m


def attrs_of(dp: object) -> dict[str, object]:
    out = {}
    for a in dp.attributes:  # type: ignore[attr-defined]
        out[a.key] = getattr(a.value, a.value.WhichOneof("value"))
    return out


def points_of(payload: Payload, name: str) -> list:
    out = []
    for rm in payload.message.resource_metrics:  # type: ignore[union-attr]
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(getattr(m, m.WhichOneof("data")).data_points)
    return out


def overflow_points(points: list) -> list:
    return [p for p in points if attrs_of(p) == {OVERFLOW_KEY: "true"}]


def distinct(n: int, start: int = 0) -> list[tuple[dict[str, object], float]]:
    return [({"user": f"u{i}", "route": "/chat"}, 1) for i in range(start, start + n)]


# -- config ----------------------------------------------------------------------------------

def issues_of(raw: dict[str, object]) -> list[str]:
    issues: list = []
    decode_dataclass(CardinalityLimitConfig, raw, "processors.cardinality_limit", issues)
    return [str(i) for i in issues]


def test_default_config_validates_with_documented_defaults() -> None:
    assert issues_of({}) == []
    cfg = CardinalityLimitConfig()
    assert (cfg.max_series_per_metric, cfg.series_ttl, cfg.action) == (2000, 3600.0, "fold")
    assert FACTORY.type == "cardinality_limit" and set(FACTORY.signals) == {Signal.METRICS}


def test_yaml_config_loads_and_typos_are_rejected_with_path() -> None:
    issues: list = []
    cfg = decode_dataclass(CardinalityLimitConfig, {
        "max_series_per_metric": 100, "limits": {"http.requests": 10}, "series_ttl": "30m", "action": "drop",
        "drop_attributes": ["user.id"], "max_attribute_value_length": 64}, "p", issues)
    assert issues == []
    assert cfg.limits == {"http.requests": 10} and cfg.series_ttl == 1800.0 and cfg.drop_attributes == ("user.id",)
    assert any("processors.cardinality_limit.max_series: unknown key" in i and "max_series_per_metric" in i
               for i in issues_of({"max_series": 5}))


@pytest.mark.parametrize("raw, path", [
    ({"max_series_per_metric": 0}, "max_series_per_metric"),
    ({"limits": {"m": -1}}, "limits.m"),
    ({"series_ttl": "0s"}, "series_ttl"),
    ({"action": "sample"}, "action"),
    ({"max_attribute_value_length": -3}, "max_attribute_value_length"),
])
def test_bad_values_are_rejected_with_their_key_path(raw: dict[str, object], path: str) -> None:
    issues = issues_of(raw)
    assert any(f"processors.cardinality_limit.{path}:" in i for i in issues), issues


def test_loads_in_a_pipeline_config() -> None:
    text = """
receivers: {}
processors:
  cardinality_limit: {max_series_per_metric: -1}
exporters: {}
service: {pipelines: {}}
"""
    with pytest.raises(ConfigError) as ei:
        load_text(text, make_factory_map([FACTORY]))
    assert "processors.cardinality_limit.max_series_per_metric: must be at least 1" in str(ei.value)


# -- limiting ----------------------------------------------------------------------------------

def test_under_the_limit_nothing_changes_and_wire_bytes_are_kept() -> None:
    proc = make(max_series_per_metric=10)
    raw = request([sum_metric("reqs", distinct(10))]).serialize()
    payload = Payload(Signal.METRICS, raw=raw)
    out = proc.process(payload)
    assert out is payload and out.items == 10
    assert out.raw_cached == raw  # nothing changed, so nothing needs re-encoding
    assert proc.series_count("reqs") == 10


def test_thousand_distinct_values_under_limit_100_give_101_series_summing_to_1000() -> None:
    proc = make(max_series_per_metric=100)
    out = proc.process(request([sum_metric("tool.calls", distinct(1000))]))
    assert out is not None
    points = points_of(out, "tool.calls")
    assert len(points) == 101
    assert sum(p.as_int for p in points) == 1000
    over = overflow_points(points)
    assert len(over) == 1 and over[0].as_int == 900
    assert len({tuple(sorted(attrs_of(p).items())) for p in points}) == 101
    assert proc.series_count("tool.calls") == 100


def test_overflow_across_many_requests_keeps_series_bounded_and_totals_exact() -> None:
    sink = MetricsSink()
    proc = make(sink, max_series_per_metric=100)
    total = 0
    series: set = set()
    for batch in range(10):  # the same 1,000 values in 10 requests of 100, twice
        for _ in range(2):
            out = proc.process(request([sum_metric("tool.calls", distinct(100, batch * 100))]))
            assert out is not None
            for p in points_of(out, "tool.calls"):
                total += p.as_int
                series.add(tuple(sorted(attrs_of(p).items())))
    assert total == 2000
    assert len(series) == 101


def test_cumulative_overflow_counts_a_repeated_series_once_at_its_latest_point() -> None:
    proc = make(max_series_per_metric=1)
    pts = sum_metric("c", [({"u": "a"}, 5), ({"u": "b"}, 7), ({"u": "c"}, 11)], temporality=CUMULATIVE)
    later = pts.sum.data_points.add()  # series b again, later and larger (two intervals in one batch)
    later.CopyFrom(pts.sum.data_points[1])
    later.time_unix_nano = T0 + 100
    later.as_int = 9
    out = proc.process(request([pts]))
    assert out is not None
    over = overflow_points(points_of(out, "c"))
    assert len(over) == 1
    assert over[0].as_int == 9 + 11
    assert over[0].time_unix_nano == T0 + 100 and over[0].start_time_unix_nano == T0 - 10


def test_double_values_fold_as_doubles() -> None:
    proc = make(max_series_per_metric=1)
    out = proc.process(request([sum_metric("d", [({"u": "a"}, 1.5), ({"u": "b"}, 2.25), ({"u": "c"}, 0.25)],
                                           as_double=True)]))
    over = overflow_points(points_of(out, "d"))  # type: ignore[arg-type]
    assert over[0].WhichOneof("value") == "as_double" and over[0].as_double == 2.5


def test_per_metric_limits_override_the_default() -> None:
    proc = make(max_series_per_metric=5, limits={"tight": 2, "none": 0})
    out = proc.process(request([sum_metric("tight", distinct(4)), sum_metric("loose", distinct(4)),
                                sum_metric("none", distinct(3))]))
    assert out is not None
    assert len(points_of(out, "tight")) == 3
    assert len(points_of(out, "loose")) == 4
    none = points_of(out, "none")
    assert len(none) == 1 and attrs_of(none[0]) == {OVERFLOW_KEY: "true"} and none[0].as_int == 3


def test_series_are_counted_per_resource() -> None:
    proc = make(max_series_per_metric=2)
    a = proc.process(request([sum_metric("m", distinct(2))], service="a"))
    b = proc.process(request([sum_metric("m", distinct(2))], service="b"))
    assert len(overflow_points(points_of(a, "m"))) == 0  # type: ignore[arg-type]
    assert len(overflow_points(points_of(b, "m"))) == 1  # type: ignore[arg-type]


def test_attribute_order_does_not_make_a_new_series() -> None:
    proc = make(max_series_per_metric=1)
    m = Metric(name="m")
    for order in (("a", "b"), ("b", "a")):
        dp = m.sum.data_points.add()
        dp.as_int = 1
        dp.attributes.extend(kv(k, k) for k in order)
    out = proc.process(request([m]))
    assert overflow_points(points_of(out, "m")) == []  # type: ignore[arg-type]


def test_an_upstream_overflow_point_joins_ours() -> None:
    proc = make(max_series_per_metric=1)
    out = proc.process(request([sum_metric("m", [({"u": "a"}, 1), ({OVERFLOW_KEY: "true"}, 40), ({"u": "b"}, 2)])]))
    pts = points_of(out, "m")  # type: ignore[arg-type]
    assert len(pts) == 2 and overflow_points(pts)[0].as_int == 42


def test_histograms_are_added_bucket_by_bucket() -> None:
    proc = make(max_series_per_metric=1)
    b = [1.0, 5.0, 10.0]
    out = proc.process(request([histogram_metric("lat", [
        ({"u": "a"}, b, [1, 0, 0, 0], 0.5, 0.5, 0.5),
        ({"u": "b"}, b, [0, 2, 1, 0], 14.0, 2.0, 8.0),
        ({"u": "c"}, b, [1, 0, 0, 3], 40.0, 0.1, 20.0),
        ({"u": "d"}, [2.0, 10.0], [1, 1, 0], 7.0, 1.5, 5.5),  # other bounds: re-bucketed by upper bound
    ])]))
    over = overflow_points(points_of(out, "lat"))  # type: ignore[arg-type]
    assert len(over) == 1
    h = over[0]
    assert list(h.explicit_bounds) == b
    # a is the admitted series; b, c and d overflow. d's buckets (≤2, ≤10, +inf) land in (1,5], (5,10], +inf.
    assert list(h.bucket_counts) == [0 + 1 + 0, 2 + 0 + 1, 1 + 0 + 1, 0 + 3 + 0]
    assert h.count == 9 and h.sum == 61.0 and h.min == 0.1 and h.max == 20.0


def test_exponential_histograms_merge_at_the_coarser_scale() -> None:
    proc = make(max_series_per_metric=1)
    m = Metric(name="eh")
    m.exponential_histogram.aggregation_temporality = DELTA
    for user, scale, offset, counts in (("a", 3, 0, [1]), ("b", 2, 4, [1, 2]), ("c", 3, 8, [5, 1])):
        dp = m.exponential_histogram.data_points.add()
        dp.attributes.append(kv("u", user))
        dp.scale = scale
        dp.positive.offset = offset
        dp.positive.bucket_counts.extend(counts)
        dp.count = sum(counts) + 1
        dp.zero_count = 1
        dp.sum = 1.0
    out = proc.process(request([m]))
    h = overflow_points(points_of(out, "eh"))[0]  # type: ignore[arg-type]
    # b (scale 2) and c (scale 3 → indices 8,9 → 4,4 at scale 2) share the coarser scale.
    assert h.scale == 2 and h.positive.offset == 4
    assert list(h.positive.bucket_counts) == [1 + 5 + 1, 2]
    assert h.count == 4 + 7 and h.zero_count == 2 and h.sum == 2.0


def test_gauges_keep_the_latest_overflowing_point() -> None:
    proc = make(max_series_per_metric=1)
    out = proc.process(request([gauge_metric("temp", [({"u": "a"}, 1.0, T0), ({"u": "b"}, 2.0, T0 + 5),
                                                      ({"u": "c"}, 3.0, T0 + 1)])]))
    over = overflow_points(points_of(out, "temp"))  # type: ignore[arg-type]
    assert len(over) == 1 and over[0].as_double == 2.0 and over[0].time_unix_nano == T0 + 5


def test_summaries_add_count_and_sum_and_drop_quantiles() -> None:
    proc = make(max_series_per_metric=1)
    m = Metric(name="s")
    for user, count, total in (("a", 1, 1.0), ("b", 2, 3.0), ("c", 4, 5.0)):
        dp = m.summary.data_points.add()
        dp.attributes.append(kv("u", user))
        dp.count, dp.sum = count, total
        q = dp.quantile_values.add()
        q.quantile, q.value = 0.5, total
    out = proc.process(request([m]))
    over = overflow_points(points_of(out, "s"))[0]  # type: ignore[arg-type]
    assert over.count == 6 and over.sum == 8.0 and len(over.quantile_values) == 0


# -- TTL ---------------------------------------------------------------------------------------

def test_series_age_out_after_ttl_of_silence_with_the_injected_clock() -> None:
    clock = Clock()
    proc = make(clock=clock, max_series_per_metric=100, series_ttl=3600.0)
    assert not overflow_points(points_of(proc.process(request([sum_metric("m", distinct(100))])), "m"))  # type: ignore[arg-type]
    clock.now += 1800
    # Still within the TTL: the slots are taken, a new series overflows; series 0-9 stay active.
    out = proc.process(request([sum_metric("m", distinct(10) + distinct(1, 500))]))
    assert overflow_points(points_of(out, "m"))[0].as_int == 1  # type: ignore[arg-type]
    clock.now += 1801  # series 10-99 silent for > 1h; 0-9 were seen 1801 s ago
    out = proc.process(request([sum_metric("m", distinct(50, 500))]))
    assert not overflow_points(points_of(out, "m"))  # type: ignore[arg-type]
    assert proc.series_count("m") == 60


def test_expire_forgets_silent_metrics_entirely() -> None:
    clock = Clock()
    proc = make(clock=clock, max_series_per_metric=5, series_ttl=60.0)
    proc.process(request([sum_metric("m", distinct(3))]))
    assert proc.expire() == 0 and proc.series_count("m") == 3
    clock.now += 61
    assert proc.expire() == 3
    assert proc.series_count("m") == 0 and "m" not in proc._states


# -- drop action, attribute edits ------------------------------------------------------------------

def test_drop_action_drops_overflowing_points_and_counts_them() -> None:
    proc = make(max_series_per_metric=3, action="drop")
    tel = proc.settings.telemetry
    out = proc.process(request([sum_metric("m", distinct(10)), sum_metric("other", distinct(2))]))
    assert out is not None and out.items == 5
    assert len(points_of(out, "m")) == 3 and not overflow_points(points_of(out, "m"))
    assert tel.value("otelpipe_processor_cardinality_limit_dropped_points_total", metric="m") == 7
    assert tel.value("otelpipe_processor_dropped_metric_points_total", reason="cardinality_limit") == 7
    # A metric whose points are all dropped disappears; a request with nothing left is dropped whole.
    out = proc.process(request([sum_metric("m", distinct(4, 100)), sum_metric("other", distinct(1))]))
    assert out is not None and [m.name for m in out.message.resource_metrics[0].scope_metrics[0].metrics] == ["other"]
    assert proc.process(request([sum_metric("m", distinct(4, 200))])) is None


def test_drop_attributes_removes_keys_before_counting_and_merges_what_collapses() -> None:
    proc = make(max_series_per_metric=2, drop_attributes=("user", "session.id"))
    pts = [({"user": f"u{i}", "session.id": f"s{i}", "route": "/a"}, 1) for i in range(50)]
    pts += [({"user": "x", "route": "/b"}, 3)]
    out = proc.process(request([sum_metric("m", pts)]))
    got = sorted((tuple(sorted(attrs_of(p).items())), p.as_int) for p in points_of(out, "m"))  # type: ignore[arg-type]
    assert got == [((("route", "/a"),), 50), ((("route", "/b"),), 3)]
    assert proc.series_count("m") == 2


def test_long_values_are_truncated_before_counting() -> None:
    proc = make(max_series_per_metric=5, max_attribute_value_length=8)
    out = proc.process(request([sum_metric("m", [({"q": "select * from a", "n": 7}, 1),
                                                  ({"q": "select * from b"}, 2)])]))
    pts = points_of(out, "m")  # type: ignore[arg-type]
    assert [attrs_of(p) for p in pts] == [{"q": "select *", "n": 7}, {"q": "select *"}]
    assert proc.series_count("m") == 2


# -- self-metrics and lifecycle ------------------------------------------------------------------

def test_self_metrics_move() -> None:
    proc = make(max_series_per_metric=100, limits={"watched": 50})
    tel = proc.settings.telemetry
    proc.process(request([sum_metric("tool.calls", distinct(1000)), sum_metric("watched", distinct(10)),
                          sum_metric("quiet", distinct(3))]))
    assert tel.value("otelpipe_processor_cardinality_limit_folded_points_total", metric="tool.calls") == 900
    assert tel.value("otelpipe_processor_cardinality_limit_series", metric="tool.calls") == 100
    assert tel.value("otelpipe_processor_cardinality_limit_series", metric="watched") == 10
    # Metrics that never hit a limit and have no own limit get no per-metric series gauge.
    assert "quiet" not in {s["labels"]["metric"] for s in
                           tel.snapshot().get("otelpipe_processor_cardinality_limit_series", [])}


async def test_lifecycle_forwards_downstream_and_shutdown_is_idempotent() -> None:
    sink = MetricsSink()
    proc = make(sink, max_series_per_metric=100)
    await proc.shutdown()  # safe without start
    await proc.start(nop_host())
    await proc.consume(request([sum_metric("m", distinct(150))]))
    await sink.wait_for_items(101)
    assert sink.items == 101
    await proc.shutdown()
    await proc.shutdown()
