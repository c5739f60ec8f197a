"""The history store: what it keeps, what it refuses (counted), and that it stays bounded."""
from __future__ import annotations

import math

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from exporters.pagerduty.store import CounterSeries, GaugeSeries, HistogramSeries, SeriesStore
from pipeline import wire
from tests.unit.exporters.pagerduty.pdhelpers import T0_NS, counter, gauge, histogram, request


def store(metrics: dict[str, float] | None = None, *, max_series: int = 100, resolution: float = 1.0) -> SeriesStore:
    return SeriesStore(metrics or {"m": 60.0}, resolution=resolution, max_series=max_series, watch_start_ns=T0_NS)


def test_only_metrics_a_rule_names_are_kept() -> None:
    s = store({"m": 60.0})
    result = s.ingest(request(gauge("m", [({"a": 1}, 1.0)]), gauge("other", [({}, 2.0)]),
                              counter("m.total", [({}, 3)])), 1.0)
    assert result.kept == 1 and not result.skipped
    assert s.series_count == 1
    assert list(s.tables) == ["m"]


def test_a_metric_whose_name_is_not_its_first_field_is_still_found() -> None:
    body = Metric()
    body.gauge.data_points.add(as_double=4.0)
    # the data first, the name after it: unusual, but valid protobuf
    raw = body.SerializeToString() + wire.length_delimited(b"\n", b"m")
    s = store()
    result = s.ingest(_request_with_raw_metric(raw), 1.0)
    assert result.kept == 1


def _request_with_raw_metric(metric: bytes) -> bytes:
    """A request whose only metric is exactly these bytes."""
    scope = wire.length_delimited(b"\x12", metric)  # ScopeMetrics.metrics = field 2
    rm = wire.length_delimited(b"\x12", scope)  # ResourceMetrics.scope_metrics = field 2
    raw = wire.length_delimited(b"\n", rm)  # ExportMetricsServiceRequest.resource_metrics = field 1
    ExportMetricsServiceRequest.FromString(raw)  # it is a valid request
    return raw


def test_attributes_of_every_type_become_text() -> None:
    s = store()
    s.ingest(request(gauge("m", [({"b": True, "i": 7, "d": 1.5, "s": "x", "l": [1, "a"]}, 1.0)])), 1.0)
    (series,) = s.series("m")
    assert series.attrs == {"service.name": "agent", "b": "true", "i": "7", "d": "1.5", "s": "x", "l": "[1,a]"}


def test_new_series_beyond_max_series_are_refused_and_counted() -> None:
    s = store(max_series=2)
    s.ingest(request(gauge("m", [({"k": "1"}, 1.0), ({"k": "2"}, 1.0)])), 1.0)
    result = s.ingest(request(gauge("m", [({"k": "3"}, 1.0), ({"k": "1"}, 5.0)])), 2.0)
    assert result.skipped == {"series_limit": 1}
    assert result.kept == 1  # the known series still takes its point
    assert s.series_count == 2


def test_out_of_order_cumulative_points_are_refused_and_counted() -> None:
    s = store()
    s.ingest(request(counter("m", [({}, 10)], time_ns=T0_NS + 10)), 1.0)
    result = s.ingest(request(counter("m", [({}, 5)], time_ns=T0_NS + 5)), 2.0)
    assert result.skipped == {"out_of_order": 1}
    (series,) = s.series("m")
    assert isinstance(series, CounterSeries) and list(series.totals) == [10.0]  # not mistaken for a reset


def test_unusable_points_are_counted_with_a_reason() -> None:
    s = store({"g": 60.0, "c": 60.0, "h": 60.0, "e": 60.0})
    exp = Metric(name="e")
    exp.exponential_histogram.data_points.add(count=1)
    bad_buckets = histogram("h", [({"k": "1"}, [1, 2], 1.0)], [1.0, 2.0])  # 2 counts for 3 buckets
    bad_bounds = histogram("h", [({"k": "2"}, [1, 2, 3], 1.0)], [2.0, 1.0])  # bounds not increasing
    result = s.ingest(request(gauge("g", [({}, math.nan)]), counter("c", [({}, -3)], delta=True), bad_buckets,
                              bad_bounds, exp), 1.0)
    assert result.skipped == {"invalid": 4, "unsupported_type": 1}
    assert result.kept == 0


def test_points_flagged_without_a_recorded_value_are_ignored() -> None:
    m = gauge("m", [({}, 1.0)])
    m.gauge.data_points[0].flags = 1
    s = store()
    result = s.ingest(request(m), 1.0)
    assert result.kept == 0 and not result.skipped


def test_new_histogram_bounds_start_the_series_over() -> None:
    s = store()
    s.ingest(request(histogram("m", [({}, [1, 1, 1], 3.0)], [1.0, 2.0], time_ns=T0_NS)), 1.0)
    s.ingest(request(histogram("m", [({}, [1, 1], 3.0)], [5.0], time_ns=T0_NS + 1)), 2.0)
    (series,) = s.series("m")
    assert isinstance(series, HistogramSeries)
    assert series.bounds == (5.0,) and len(series.times) == 1
    assert s.series_count == 1


def test_a_metric_that_changes_type_replaces_its_series() -> None:
    s = store()
    s.ingest(request(gauge("m", [({}, 1.0)])), 1.0)
    s.ingest(request(counter("m", [({}, 5)])), 2.0)
    (series,) = s.series("m")
    assert isinstance(series, CounterSeries) and s.series_count == 1


def test_history_is_bounded_by_retention_and_resolution() -> None:
    s = store({"m": 60.0}, resolution=1.0)
    for t in range(0, 1000):
        for _ in range(3):  # three points per slot fold into one sample
            s.ingest(request(gauge("m", [({}, float(t))])), t + 0.1)
        if t % 10 == 0:
            s.prune(float(t))
    (series,) = s.series("m")
    assert isinstance(series, GaugeSeries)
    # retention 60 s + one slot, pruned in amortized steps: never more than a bounded number of samples
    assert len(series.times) <= 61 + 16 + 10
    cutoff = 990.0 - 61.0
    assert series.times[0] <= cutoff  # the baseline before the oldest window is kept


def test_series_without_samples_inside_retention_are_forgotten() -> None:
    s = store({"m": 60.0})
    s.ingest(request(gauge("m", [({"k": "old"}, 1.0)])), 0.0)
    s.ingest(request(gauge("m", [({"k": "new"}, 1.0)])), 100.0)
    version = s.tables["m"].version
    s.prune(100.0)
    assert [x.attrs["k"] for x in s.series("m")] == ["new"]
    assert s.series_count == 1 and s.tables["m"].version > version


def test_configure_forgets_metrics_no_rule_names_any_more() -> None:
    s = store({"a": 60.0, "b": 60.0})
    s.ingest(request(gauge("a", [({}, 1.0)]), gauge("b", [({}, 1.0)])), 1.0)
    s.configure({"b": 120.0}, resolution=1.0, max_series=10)
    assert list(s.tables) == ["b"] and s.series_count == 1
    assert s.tables["b"].retention == 121.0
    assert s.ingest(request(gauge("a", [({}, 1.0)])), 2.0).kept == 0


def test_malformed_bytes_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        store().ingest(b"\n\xff\xff\xff", 1.0)
