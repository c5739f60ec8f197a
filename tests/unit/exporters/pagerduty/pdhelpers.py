"""Builders for the PagerDuty exporter's tests: OTLP metric requests and compiled rules."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from exporters.pagerduty.config import RuleConfig
from exporters.pagerduty.evaluator import CompiledRule, compile_rule
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.testing import kv

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
T0_NS = 1_700_000_000_000_000_000


def request(*metrics: Metric, resource: Mapping[str, object] | None = None) -> bytes:
    """A serialized metrics request holding `metrics` under one resource."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for k, v in (resource or {"service.name": "agent"}).items():
        rm.resource.attributes.append(kv(k, v))
    sm = rm.scope_metrics.add()
    sm.scope.name = "test"
    sm.metrics.extend(metrics)
    return req.SerializeToString()


def gauge(name: str, points: Sequence[tuple[Mapping[str, object], float]]) -> Metric:
    m = Metric(name=name)
    for attrs, value in points:
        dp = m.gauge.data_points.add(time_unix_nano=T0_NS, as_double=value)
        dp.attributes.extend(kv(k, v) for k, v in attrs.items())
    return m


def counter(name: str, points: Sequence[tuple[Mapping[str, object], float]], *, delta: bool = False,
            start_ns: int = 1, time_ns: int = T0_NS, monotonic: bool = True) -> Metric:
    m = Metric(name=name)
    m.sum.is_monotonic = monotonic
    m.sum.aggregation_temporality = DELTA if delta else CUMULATIVE
    for attrs, value in points:
        dp = m.sum.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=time_ns)
        if float(value).is_integer():
            dp.as_int = int(value)
        else:
            dp.as_double = value
        dp.attributes.extend(kv(k, v) for k, v in attrs.items())
    return m


def histogram(name: str, points: Sequence[tuple[Mapping[str, object], Sequence[int], float]],
              bounds: Sequence[float], *, delta: bool = False, start_ns: int = 1, time_ns: int = T0_NS) -> Metric:
    m = Metric(name=name)
    m.histogram.aggregation_temporality = DELTA if delta else CUMULATIVE
    for attrs, counts, total in points:
        dp = m.histogram.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=time_ns,
                                         count=sum(counts), sum=total)
        dp.explicit_bounds.extend(bounds)
        dp.bucket_counts.extend(counts)
        dp.attributes.extend(kv(k, v) for k, v in attrs.items())
    return m


def rule_config(**fields: Any) -> RuleConfig:
    """A rule decoded as from YAML (validated); fails the test on any config issue."""
    raw = {"name": "r", "metric": "m", "aggregation": "last", "condition": ">", "threshold": 0, **fields}
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(RuleConfig, raw, "rule", issues)
    assert not issues, issues
    return cfg  # type: ignore[no-any-return]


def rule(**fields: Any) -> CompiledRule:
    return compile_rule(rule_config(**fields))
