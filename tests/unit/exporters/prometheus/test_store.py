"""Prometheus exporter state and exposition: temporality, resets, expiry, labels, resources, exemplars.

Every exposition is parsed back (prometheus_client's parsers) and checked with
promtool (tests/testdata/promtools.py) before any value is compared.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Exemplar,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)

from exporters.prometheus.server import MetricsServer
from exporters.prometheus.store import MetricStore
from pipeline.testing import kv
from tests.testdata.promtools import assert_openmetrics_ok, families, samples

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000
RESOURCE = {"service.name": "agent", "service.instance.id": "pod-1"}
CTX = {"job": "agent", "instance": "pod-1", "otel_scope_name": "test.scope", "otel_scope_version": "1.0"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ builders

def attrs(d: dict[str, object] | None) -> list:
    return [kv(k, v) for k, v in (d or {}).items()]


def num(value: float, labels: dict[str, object] | None = None, *, start: int = T0, t: int = T0 + SEC,
        exemplars: Sequence[Exemplar] = (), flags: int = 0) -> NumberDataPoint:
    dp = NumberDataPoint(start_time_unix_nano=start, time_unix_nano=t, flags=flags)
    if isinstance(value, int):
        dp.as_int = value
    else:
        dp.as_double = value
    dp.attributes.extend(attrs(labels))
    dp.exemplars.extend(exemplars)
    return dp


def hist(bounds: Sequence[float], counts: Sequence[int], total: float | None, labels: dict[str, object] | None = None,
         *, start: int = T0, t: int = T0 + SEC, exemplars: Sequence[Exemplar] = (),
         minimum: float | None = None) -> HistogramDataPoint:
    dp = HistogramDataPoint(start_time_unix_nano=start, time_unix_nano=t, count=sum(counts))
    dp.explicit_bounds.extend(bounds)
    dp.bucket_counts.extend(counts)
    if total is not None:
        dp.sum = total
    if minimum is not None:
        dp.min = minimum
    dp.attributes.extend(attrs(labels))
    dp.exemplars.extend(exemplars)
    return dp


def sum_metric(name: str, points: Iterable[NumberDataPoint], *, unit: str = "", monotonic: bool = True,
               temporality: int = CUMULATIVE, description: str = "") -> Metric:
    m = Metric(name=name, unit=unit, description=description)
    m.sum.is_monotonic = monotonic
    m.sum.aggregation_temporality = temporality  # type: ignore[assignment]
    m.sum.data_points.extend(points)
    return m


def gauge_metric(name: str, points: Iterable[NumberDataPoint], *, unit: str = "", description: str = "") -> Metric:
    m = Metric(name=name, unit=unit, description=description)
    m.gauge.data_points.extend(points)
    return m


def hist_metric(name: str, points: Iterable[HistogramDataPoint], *, unit: str = "", temporality: int = CUMULATIVE,
                description: str = "") -> Metric:
    m = Metric(name=name, unit=unit, description=description)
    m.histogram.aggregation_temporality = temporality  # type: ignore[assignment]
    m.histogram.data_points.extend(points)
    return m


def request(*metrics: Metric, resource: dict[str, object] | None = None, scope: tuple[str, str] = ("test.scope", "1.0"),
            scope_attrs: dict[str, object] | None = None) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(attrs(RESOURCE if resource is None else resource))
    sm = rm.scope_metrics.add()
    sm.scope.name, sm.scope.version = scope
    sm.scope.attributes.extend(attrs(scope_attrs))
    sm.metrics.extend(metrics)
    return req


def exemplar(value: float, trace: int = 1, span: int = 2, t: int = T0 + SEC // 2, **filtered: object) -> Exemplar:
    e = Exemplar(trace_id=trace.to_bytes(16, "big"), span_id=span.to_bytes(8, "big"), time_unix_nano=t, as_double=value)
    e.filtered_attributes.extend(attrs(filtered))
    return e


def render(store: MetricStore, openmetrics: bool = False) -> bytes:
    return MetricsServer("127.0.0.1:0", store, open_metrics=True).render(openmetrics)


def L(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({**CTX, **labels}.items())


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def store(clock: Clock) -> MetricStore:
    return MetricStore(expiration=300.0, clock=clock, wall_clock=lambda: 1_700_000_500.0)


# ------------------------------------------------------------------ sums

def test_cumulative_counter_exposition(store: MetricStore) -> None:
    store.update(request(sum_metric("http.server.requests",
                                    [num(7, {"http.method": "GET"}), num(3, {"http.method": "POST"})],
                                    description="Requests served.")))
    text = render(store)
    assert samples(text) == {
        ("http_server_requests_total", L(http_method="GET")): 7.0,
        ("http_server_requests_total", L(http_method="POST")): 3.0,
    }
    fam = families(text)["http_server_requests"]
    assert (fam.type, fam.documentation) == ("counter", "Requests served.")


def test_delta_counter_is_accumulated_and_gaps_are_not_resets(store: MetricStore) -> None:
    store.update(request(sum_metric("jobs", [num(1, start=T0, t=T0 + SEC)], temporality=DELTA)))
    store.update(request(sum_metric("jobs", [num(2, start=T0 + SEC, t=T0 + 2 * SEC)], temporality=DELTA)))
    # an interval with nothing to report was skipped: still just more to add
    result = store.update(request(sum_metric("jobs", [num(4.5, start=T0 + 5 * SEC, t=T0 + 6 * SEC)],
                                             temporality=DELTA)))
    assert result.applied == 1
    assert samples(render(store)) == {("jobs_total", L()): 7.5}


def test_delta_duplicate_point_is_applied_once(store: MetricStore) -> None:
    point = num(5, start=T0, t=T0 + SEC)
    store.update(request(sum_metric("jobs", [point], temporality=DELTA)))
    result = store.update(request(sum_metric("jobs", [point], temporality=DELTA)))
    assert result.skipped == {"duplicate": 1}
    assert samples(render(store)) == {("jobs_total", L()): 5.0}


def test_cumulative_counter_reset_on_start_time_change(store: MetricStore) -> None:
    store.update(request(sum_metric("jobs", [num(100, start=T0, t=T0 + SEC)])))
    store.update(request(sum_metric("jobs", [num(120, start=T0, t=T0 + 2 * SEC)])))
    assert samples(render(store)) == {("jobs_total", L()): 120.0}
    # the producer restarted: a new start time and a small value
    store.update(request(sum_metric("jobs", [num(5, start=T0 + 10 * SEC, t=T0 + 11 * SEC)])))
    assert samples(render(store)) == {("jobs_total", L()): 5.0}
    fams = assert_openmetrics_ok(render(store, openmetrics=True))
    created = {s.name: s.value for f in fams for s in f.samples}
    assert created["jobs_created"] == pytest.approx((T0 + 10 * SEC) / 1e9)
    # a late point from the old stream and an older point of the new one are ignored
    late = store.update(request(sum_metric("jobs", [num(130, start=T0, t=T0 + 3 * SEC)])))
    older = store.update(request(sum_metric("jobs", [num(4, start=T0 + 10 * SEC, t=T0 + 10 * SEC + 1)])))
    assert late.skipped == older.skipped == {"out_of_order": 1}
    assert samples(render(store)) == {("jobs_total", L()): 5.0}


def test_non_monotonic_sums_become_gauges(store: MetricStore) -> None:
    store.update(request(
        sum_metric("agent.runs.active", [num(4)], monotonic=False, unit="{run}"),
        sum_metric("queue.depth", [num(3, start=T0, t=T0 + SEC)], monotonic=False, temporality=DELTA),
    ))
    store.update(request(sum_metric("queue.depth", [num(-1, start=T0 + SEC, t=T0 + 2 * SEC)], monotonic=False,
                                    temporality=DELTA)))
    text = render(store)
    assert samples(text) == {("agent_runs_active", L()): 4.0, ("queue_depth", L()): 2.0}
    assert families(text)["agent_runs_active"].type == "gauge"


def test_unspecified_temporality_is_refused(store: MetricStore) -> None:
    result = store.update(request(sum_metric("jobs", [num(1)], temporality=0)))
    assert result.skipped == {"unspecified_temporality": 1}
    assert result.rejected == 1


# ------------------------------------------------------------------ gauges

def test_gauge_keeps_latest_and_ignores_older_points(store: MetricStore) -> None:
    store.update(request(gauge_metric("temperature", [num(20.5, t=T0 + 2 * SEC)], unit="Cel")))
    result = store.update(request(gauge_metric("temperature", [num(19.0, t=T0 + SEC)], unit="Cel")))
    assert result.skipped == {"out_of_order": 1}
    store.update(request(gauge_metric("temperature", [num(21, t=T0 + 3 * SEC)], unit="Cel")))
    assert samples(render(store)) == {("temperature_celsius", L()): 21.0}


def test_gauge_with_unit_one_is_a_ratio(store: MetricStore) -> None:
    store.update(request(gauge_metric("system.cpu.utilization", [num(0.25)], unit="1")))
    assert samples(render(store)) == {("system_cpu_utilization_ratio", L()): 0.25}
    fams = {f.name: f for f in assert_openmetrics_ok(render(store, openmetrics=True))}
    assert fams["system_cpu_utilization_ratio"].unit == "ratio"


# ------------------------------------------------------------------ histograms and summaries

def test_cumulative_histogram_exposition(store: MetricStore) -> None:
    store.update(request(hist_metric("http.server.request.duration",
                                     [hist([0.1, 0.5, 2.5], [3, 2, 1, 4], 31.5, {"route": "/a"})], unit="s")))
    text = render(store)
    name = "http_server_request_duration_seconds"
    assert samples(text) == {
        (f"{name}_bucket", L(route="/a", le="0.1")): 3.0,
        (f"{name}_bucket", L(route="/a", le="0.5")): 5.0,
        (f"{name}_bucket", L(route="/a", le="2.5")): 6.0,
        (f"{name}_bucket", L(route="/a", le="+Inf")): 10.0,
        (f"{name}_count", L(route="/a")): 10.0,
        (f"{name}_sum", L(route="/a")): 31.5,
    }
    assert families(text)[name].type == "histogram"
    fams = {f.name: f for f in assert_openmetrics_ok(render(store, openmetrics=True))}
    assert fams[name].unit == "seconds"


def test_delta_histogram_is_accumulated_and_new_bounds_restart_it(store: MetricStore) -> None:
    b = [1.0, 10.0]
    store.update(request(hist_metric("latency", [hist(b, [1, 0, 2], 30.0, start=T0, t=T0 + SEC)], temporality=DELTA)))
    store.update(request(hist_metric("latency", [hist(b, [2, 1, 0], 8.0, start=T0 + SEC, t=T0 + 2 * SEC)],
                                     temporality=DELTA)))
    assert samples(render(store)) == {
        ("latency_bucket", L(le="1.0")): 3.0, ("latency_bucket", L(le="10.0")): 4.0,
        ("latency_bucket", L(le="+Inf")): 6.0, ("latency_count", L()): 6.0, ("latency_sum", L()): 38.0,
    }
    store.update(request(hist_metric("latency", [hist([5.0], [1, 1], 9.0, start=T0 + 2 * SEC, t=T0 + 3 * SEC)],
                                     temporality=DELTA)))
    assert samples(render(store)) == {
        ("latency_bucket", L(le="5.0")): 1.0, ("latency_bucket", L(le="+Inf")): 2.0,
        ("latency_count", L()): 2.0, ("latency_sum", L()): 9.0,
    }


def test_histogram_sum_only_when_positive_and_monotonic(store: MetricStore) -> None:
    store.update(request(
        hist_metric("no_sum", [hist([1.0], [1, 1], None)]),
        hist_metric("negative_values", [hist([0.0], [2, 1], 3.0, minimum=-4.0)]),
    ))
    got = samples(render(store))
    assert ("no_sum_count", L()) in got and ("negative_values_count", L()) in got
    assert not any(name.endswith("_sum") for name, _ in got)


def test_histogram_without_buckets_has_only_inf(store: MetricStore) -> None:
    dp = HistogramDataPoint(start_time_unix_nano=T0, time_unix_nano=T0 + SEC, count=4, sum=2.0)
    store.update(request(hist_metric("plain", [dp])))
    assert samples(render(store)) == {("plain_bucket", L(le="+Inf")): 4.0, ("plain_count", L()): 4.0,
                                      ("plain_sum", L()): 2.0}


def test_malformed_histogram_is_refused(store: MetricStore) -> None:
    result = store.update(request(hist_metric("bad", [hist([1.0, 2.0], [1, 1], 1.0)])))  # 2 bounds need 3 counts
    assert result.skipped == {"invalid_point": 1}


def test_summary_exposition(store: MetricStore) -> None:
    dp = SummaryDataPoint(start_time_unix_nano=T0, time_unix_nano=T0 + SEC, count=10, sum=4.5)
    for q, v in ((0.99, 1.2), (0.5, 0.3)):
        dp.quantile_values.add(quantile=q, value=v)
    dp.attributes.append(kv("quantile", "overridden"))
    m = Metric(name="rpc.duration", unit="s")
    m.summary.data_points.append(dp)
    store.update(request(m))
    text = render(store)
    assert samples(text) == {
        ("rpc_duration_seconds", L(quantile="0.5")): 0.3,
        ("rpc_duration_seconds", L(quantile="0.99")): 1.2,
        ("rpc_duration_seconds_count", L()): 10.0,
        ("rpc_duration_seconds_sum", L()): 4.5,
    }
    assert families(text)["rpc_duration_seconds"].type == "summary"


def test_exponential_histograms_are_refused(store: MetricStore) -> None:
    m = Metric(name="exp")
    m.exponential_histogram.aggregation_temporality = CUMULATIVE
    m.exponential_histogram.data_points.add(count=1)
    result = store.update(request(m))
    assert result.skipped == {"exponential_histogram": 1} and result.rejected == 1
    assert samples(render(store)) == {}


# ------------------------------------------------------------------ expiry and stale markers

def test_series_expire_after_metric_expiration(store: MetricStore, clock: Clock) -> None:
    store.update(request(sum_metric("old", [num(1, {"k": "a"}), num(2, {"k": "b"})], temporality=DELTA),
                         resource={**RESOURCE, "host.name": "h1"}))
    clock.now += 200
    store.update(request(sum_metric("old", [num(3, {"k": "b"}, start=T0 + SEC, t=T0 + 2 * SEC)], temporality=DELTA)))
    clock.now += 150  # "a" and target_info last updated 350 s ago, "b" 150 s ago
    assert samples(render(store)) == {("old_total", L(k="b")): 5.0}
    clock.now += 151
    assert samples(render(store)) == {}
    assert store.families == {}
    # a delta stream that comes back starts again from its own delta
    store.update(request(sum_metric("old", [num(4, {"k": "b"}, start=T0 + 9 * SEC, t=T0 + 10 * SEC)],
                                    temporality=DELTA)))
    assert samples(render(store)) == {("old_total", L(k="b")): 4.0}


def test_updates_expire_old_series_even_without_scrapes(store: MetricStore, clock: Clock) -> None:
    store.update(request(gauge_metric("gone", [num(1)])))
    clock.now += 301
    store.update(request(gauge_metric("fresh", [num(1)])))
    assert set(store.families) == {"fresh"}
    assert store.series_count() == 1


def test_expired_family_frees_its_name_for_another_type(store: MetricStore, clock: Clock) -> None:
    store.update(request(gauge_metric("shared", [num(1)])))
    assert store.update(request(sum_metric("shared", [num(1)]))).skipped == {"name_conflict": 1}
    clock.now += 301
    render(store)
    assert store.update(request(sum_metric("shared", [num(2)]))).applied == 1
    assert samples(render(store)) == {("shared_total", L()): 2.0}


def test_no_recorded_value_removes_the_series(store: MetricStore) -> None:
    store.update(request(gauge_metric("up_flag", [num(1, {"k": "a"}), num(1, {"k": "b"})])))
    store.update(request(gauge_metric("up_flag", [num(0, {"k": "a"}, t=T0 + 2 * SEC, flags=1)])))
    assert samples(render(store)) == {("up_flag", L(k="b")): 1.0}


# ------------------------------------------------------------------ labels and resources

def test_attribute_labels_are_sanitized_joined_and_stringified(store: MetricStore) -> None:
    store.update(request(gauge_metric("calls", [num(1, {
        "http.method": "GET", "http_method": "POST", "1st": "x", "retry": 2, "cached": True, "ratio": 0.5,
        "tags": ["a", "b"], "job": "ignored", "otel_scope_name": "ignored"})])))
    assert samples(render(store)) == {
        ("calls", L(http_method="GET;POST", key_1st="x", retry="2", cached="true", ratio="0.5", tags='["a","b"]')): 1.0,
    }


def test_same_labels_in_another_order_are_one_series(store: MetricStore) -> None:
    store.update(request(gauge_metric("g", [num(1, {"a": "1", "b": "2"}, t=T0 + SEC)])))
    store.update(request(gauge_metric("g", [num(2, {"b": "2", "a": "1"}, t=T0 + 2 * SEC)])))
    assert samples(render(store)) == {("g", L(a="1", b="2")): 2.0}


def test_job_instance_and_target_info(store: MetricStore) -> None:
    store.update(request(gauge_metric("g", [num(1)]), resource={
        "service.name": "checkout", "service.namespace": "shop", "service.instance.id": "i-9",
        "deployment.environment": "prod", "k8s.pod.name": "checkout-7", "cloud.region": "eu-west-1"}))
    store.update(request(gauge_metric("g", [num(2)]), resource={"service.name": "bare"}))
    got = samples(render(store))
    ctx = {"otel_scope_name": "test.scope", "otel_scope_version": "1.0"}
    assert got == {
        ("g", frozenset({**ctx, "job": "shop/checkout", "instance": "i-9"}.items())): 1.0,
        ("g", frozenset({**ctx, "job": "bare", "instance": ""}.items())): 2.0,
        # only resources with attributes beyond job/instance get a target_info
        ("target_info", frozenset({"job": "shop/checkout", "instance": "i-9", "deployment_environment": "prod",
                                   "k8s_pod_name": "checkout-7", "cloud_region": "eu-west-1"}.items())): 1.0,
    }


def test_resource_without_service_has_no_job(store: MetricStore) -> None:
    store.update(request(gauge_metric("g", [num(1)]), resource={}))
    assert samples(render(store)) == {
        ("g", frozenset({"instance": "", "otel_scope_name": "test.scope", "otel_scope_version": "1.0"}.items())): 1.0}


def test_resource_to_telemetry_conversion() -> None:
    store = MetricStore(resource_to_labels=True)
    store.update(request(gauge_metric("g", [num(1, {"host.name": "from-point"})]),
                         resource={**RESOURCE, "host.name": "from-resource", "region": "eu"}))
    assert samples(render(store)) == {
        ("g", L(host_name="from-point", region="eu", service_name="agent", service_instance_id="pod-1")): 1.0,
        ("target_info", frozenset({"job": "agent", "instance": "pod-1", "host_name": "from-resource",
                                   "region": "eu"}.items())): 1.0,
    }


def test_namespace_const_labels_and_no_suffixes() -> None:
    store = MetricStore(namespace="agents", const_labels={"cluster": "c1", "instance": "forced"}, add_suffixes=False)
    store.update(request(sum_metric("token.usage", [num(5, {"cluster": "attr"})], unit="{token}"),
                         hist_metric("op.duration", [hist([1.0], [1, 0], 0.5)], unit="s")))
    text = render(store)
    ctx = {**CTX, "cluster": "c1", "instance": "forced"}
    assert samples(text) == {
        ("agents_token_usage_total", frozenset(ctx.items())): 5.0,
        ("agents_op_duration_bucket", frozenset({**ctx, "le": "1.0"}.items())): 1.0,
        ("agents_op_duration_bucket", frozenset({**ctx, "le": "+Inf"}.items())): 1.0,
        ("agents_op_duration_count", frozenset(ctx.items())): 1.0,
        ("agents_op_duration_sum", frozenset(ctx.items())): 0.5,
    }


def test_scope_attributes_make_otel_scope_info(store: MetricStore) -> None:
    store.update(request(gauge_metric("g", [num(1)]), scope=("lib.http", "2.1"),
                         scope_attrs={"library.mascot": "bear"}))
    got = samples(render(store))
    assert got[("otel_scope_info", frozenset({"otel_scope_name": "lib.http", "otel_scope_version": "2.1",
                                              "library_mascot": "bear"}.items()))] == 1.0
    assert got[("g", frozenset({"job": "agent", "instance": "pod-1", "otel_scope_name": "lib.http",
                                "otel_scope_version": "2.1"}.items()))] == 1.0


def test_empty_scope_adds_no_scope_labels(store: MetricStore) -> None:
    store.update(request(gauge_metric("g", [num(1)]), scope=("", "")))
    assert samples(render(store)) == {("g", frozenset({"job": "agent", "instance": "pod-1"}.items())): 1.0}


# ------------------------------------------------------------------ conflicts and metadata

def test_same_name_with_another_type_is_dropped(store: MetricStore) -> None:
    store.update(request(gauge_metric("requests", [num(1)])))
    result = store.update(request(sum_metric("requests", [num(5)]),               # requests_total: claims `requests`
                                  hist_metric("requests", [hist([1.0], [1, 0], 1.0)]),
                                  gauge_metric("requests", [num(2, t=T0 + 2 * SEC)])))
    assert result.skipped == {"name_conflict": 2} and result.applied == 1 and len(result.conflicts) == 2
    assert samples(render(store)) == {("requests", L()): 2.0}


def test_histogram_suffix_names_are_claimed(store: MetricStore) -> None:
    store.update(request(hist_metric("rpc", [hist([1.0], [1, 0], 1.0)])))
    result = store.update(request(gauge_metric("rpc_count", [num(1)]), gauge_metric("target_info", [num(1)])))
    assert result.skipped == {"name_conflict": 2}


def test_help_is_the_description_or_the_otlp_name(store: MetricStore) -> None:
    store.update(request(gauge_metric("queue.size", [num(1)])))
    fam = families(render(store))["queue_size"]
    assert fam.documentation == "queue.size"
    store.update(request(gauge_metric("queue.size", [num(2, t=T0 + 2 * SEC)], description="Items waiting.")))
    assert families(render(store))["queue_size"].documentation == "Items waiting."


def test_le_attribute_cannot_break_histogram_buckets(store: MetricStore) -> None:
    store.update(request(hist_metric("h", [hist([1.0], [1, 0], 0.5, {"le": "bogus"})])))
    assert samples(render(store))[("h_bucket", L(le="1.0"))] == 1.0


# ------------------------------------------------------------------ exemplars

def test_exemplars_in_openmetrics_only(store: MetricStore) -> None:
    store.update(request(
        sum_metric("tokens", [num(10, exemplars=[exemplar(4.0, trace=0xA, span=0xB, t=T0 + 1)])]),
        hist_metric("latency", [hist([0.1, 1.0, 10.0], [1, 2, 0, 1], 26.0, exemplars=[
            exemplar(0.05, trace=1, span=1), exemplar(0.5, trace=2, span=2), exemplar(0.7, trace=3, span=3),
            exemplar(20.0, trace=4, span=4)])], unit="s"),
    ))
    text = render(store)
    assert b"trace_id" not in text  # the 0.0.4 text format has no exemplars
    samples(text)
    fams = {f.name: f for f in assert_openmetrics_ok(render(store, openmetrics=True))}
    (total,) = [s for s in fams["tokens"].samples if s.name == "tokens_total"]
    assert total.exemplar is not None
    assert total.exemplar.labels == {"trace_id": f"{0xA:032x}", "span_id": f"{0xB:016x}"}
    assert total.exemplar.value == 4.0
    assert float(total.exemplar.timestamp) == pytest.approx((T0 + 1) / 1e9)
    buckets = {s.labels["le"]: s.exemplar for s in fams["latency_seconds"].samples if s.name.endswith("_bucket")}
    # the largest exemplar of each bucket; an empty bucket repeats the one below
    assert {le: (ex.value if ex else None) for le, ex in buckets.items()} == {
        "0.1": 0.05, "1.0": 0.7, "10.0": 0.7, "+Inf": 20.0}
    assert buckets["1.0"].labels == {"trace_id": f"{3:032x}", "span_id": f"{3:016x}"}


def test_exemplars_of_gauges_are_dropped(store: MetricStore) -> None:
    store.update(request(gauge_metric("g", [num(1, exemplars=[exemplar(1.0)])])))
    assert b"trace_id" not in render(store, openmetrics=True)


def test_exemplar_filtered_attributes_only_within_the_openmetrics_limit(store: MetricStore) -> None:
    store.update(request(
        sum_metric("small", [num(1, exemplars=[exemplar(1.0, **{"user.id": "u-1"})])]),
        sum_metric("large", [num(1, exemplars=[exemplar(1.0, note="x" * 100)])]),
    ))
    fams = {f.name: f for f in assert_openmetrics_ok(render(store, openmetrics=True))}
    small = next(s for s in fams["small"].samples if s.name == "small_total").exemplar
    large = next(s for s in fams["large"].samples if s.name == "large_total").exemplar
    assert small.labels["user_id"] == "u-1"
    assert set(large.labels) == {"trace_id", "span_id"}


def test_histogram_exemplars_survive_updates_without_exemplars(store: MetricStore) -> None:
    store.update(request(hist_metric("h", [hist([1.0], [1, 0], 0.5, t=T0 + SEC, exemplars=[exemplar(0.5)])])))
    store.update(request(hist_metric("h", [hist([1.0], [2, 0], 0.9, t=T0 + 2 * SEC)])))
    fams = {f.name: f for f in assert_openmetrics_ok(render(store, openmetrics=True))}
    bucket = next(s for s in fams["h"].samples if s.labels.get("le") == "1.0")
    assert bucket.value == 2.0 and bucket.exemplar is not None and bucket.exemplar.value == 0.5


def test_exemplar_ids_of_the_wrong_length_do_not_break_the_openmetrics_scrape(store: MetricStore) -> None:
    """Prometheus refuses a whole scrape over one exemplar past 128 characters of labels: ids must be OTLP-sized."""
    long_trace = exemplar(1.0)
    long_trace.trace_id = b"\x01" * 100
    long_span = exemplar(2.0, t=T0 + SEC)
    long_span.span_id = b"\x02" * 80
    store.update(request(sum_metric("tokens", [num(10, {"k": "a"}, exemplars=[long_trace]),
                                               num(20, {"k": "b"}, exemplars=[long_span])]),
                         hist_metric("latency", [hist([1.0], [1, 0], 0.5, exemplars=[long_trace])])))
    fams = {f.name: f for f in assert_openmetrics_ok(render(store, openmetrics=True))}
    ex = {s.labels["k"]: s.exemplar for s in fams["tokens"].samples if s.name == "tokens_total"}
    assert ex["a"].labels == {"span_id": f"{2:016x}"} and ex["a"].value == 1.0
    assert ex["b"].labels == {"trace_id": f"{1:032x}"} and ex["b"].value == 2.0
    bucket = next(s for s in fams["latency"].samples if s.labels.get("le") == "1.0")
    assert bucket.exemplar.labels == {"span_id": f"{2:016x}"}
