"""Configuration of the `prometheus` exporter (the Collector's prometheusexporter keys)."""
from __future__ import annotations

from dataclasses import dataclass, field

from exporters.prometheus.naming import VALID_LABEL_NAME
from pipeline.configtypes import Duration
from pipeline.exporterhelper import ExporterConfig
from pipeline.netaddr import parse_endpoint
from pipeline.queue import QueueConfig

_NAMESPACE_HINT = "use letters, digits and '_' (not starting with a digit), e.g. 'agents'"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceToTelemetryConfig:
    """`resource_to_telemetry_conversion`: copy every resource attribute onto every series as a label."""

    enabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PrometheusExporterConfig(ExporterConfig):
    """Serves the pipeline's metrics on `endpoint` at `/metrics` for Prometheus to scrape.

    The sending queue is off by default: an update is an in-memory state change,
    cheaper than queueing it, and without a queue the data is visible to the
    very next scrape.
    """

    endpoint: str = "0.0.0.0:8889"
    namespace: str = ""
    const_labels: dict[str, str] = field(default_factory=dict)
    metric_expiration: Duration = Duration(300.0)
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = field(default_factory=ResourceToTelemetryConfig)
    add_metric_suffixes: bool = True
    enable_open_metrics: bool = False
    sending_queue: QueueConfig = field(default_factory=lambda: QueueConfig(enabled=False))

    def validate(self) -> list[object]:
        out: list[object] = list(ExporterConfig.validate(self))
        try:
            parse_endpoint(self.endpoint)
        except ValueError as e:
            out.append(("endpoint", str(e)))
        if self.namespace and not VALID_LABEL_NAME.match(self.namespace):
            out.append(("namespace", f"invalid namespace {self.namespace!r}: {_NAMESPACE_HINT}"))
        if self.metric_expiration <= 0:
            out.append(("metric_expiration", "must be greater than 0 (e.g. '5m'); series not updated for that long are removed"))
        for name in self.const_labels:
            if not VALID_LABEL_NAME.match(name) or name.startswith("__"):
                out.append((f"const_labels.{name}", "invalid label name: use letters, digits and '_', not starting "
                                                    "with a digit or '__'"))
        return out

    def listeners(self) -> list[tuple[str, str, str]]:
        return [("tcp", self.endpoint, "endpoint")]
