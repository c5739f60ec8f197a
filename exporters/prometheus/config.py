"""Configuration of the `prometheus` exporter (the Collector's prometheusexporter keys)."""
from __future__ import annotations

from dataclasses import dataclass, field

from exporters.prometheus.naming import VALID_LABEL_NAME
from pipeline.component import Listener
from pipeline.config.types import Duration, Issue
from pipeline.exporterhelper import ExporterConfig
from pipeline.exporterhelper.queue import QueueConfig
from pipeline.net.endpoint import Endpoint

DEFAULT_METRIC_EXPIRATION = Duration(300.0)
DEFAULT_DELTA_METRIC_EXPIRATION = Duration(3600.0)
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

    `delta_metric_expiration` (not a Collector key: its exporter has only
    `metric_expiration`) is how long a series accumulated from delta points
    (StatsD counters and histograms, SDKs with delta temporality) survives
    without updates. Its total exists nowhere else, so expiring it turns the
    next burst into a counter reset for Prometheus; bursty producers (agents
    idle between conversations, batch jobs) are often quiet for more than 5
    minutes. The default of 1h covers such gaps while a series whose producer
    is really gone still leaves within the hour; it is bounded by `max_series`,
    at which idle delta series past `metric_expiration` make room for new ones.
    `max_series` caps the series held (label sets of all families); points of
    new series beyond it are refused (`series_limit`) and counted.
    """

    endpoint: Endpoint = field(default_factory=lambda: Endpoint.listen("localhost:8889"))
    namespace: str = ""
    const_labels: dict[str, str] = field(default_factory=dict)
    metric_expiration: Duration = DEFAULT_METRIC_EXPIRATION
    delta_metric_expiration: Duration = DEFAULT_DELTA_METRIC_EXPIRATION
    max_series: int = 100_000
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = field(default_factory=ResourceToTelemetryConfig)
    add_metric_suffixes: bool = True
    enable_open_metrics: bool = False
    sending_queue: QueueConfig = field(default_factory=lambda: QueueConfig(enabled=False))

    def __post_init__(self) -> None:
        if isinstance(self.endpoint, str):  # built in code with text; the decoder passes an Endpoint
            object.__setattr__(self, "endpoint", Endpoint.listen(self.endpoint))

    def validate(self) -> list[Issue]:
        out: list[Issue] = list(ExporterConfig.validate(self))
        if self.namespace and not VALID_LABEL_NAME.match(self.namespace):
            out.append(Issue("namespace", f"invalid namespace {self.namespace!r}: {_NAMESPACE_HINT}"))
        if self.metric_expiration <= 0:
            out.append(Issue("metric_expiration", "must be greater than 0 (e.g. '5m'); "
                                                  "series not updated for that long are removed"))
        if self.delta_metric_expiration < self.metric_expiration:
            out.append(Issue("delta_metric_expiration",
                        (f"must be at least metric_expiration ({float(self.metric_expiration):g}s), e.g. '1h'; "
                         "it is how long series summed from delta points may outlive other series")))
        if self.max_series < 1:
            out.append(Issue("max_series", "must be at least 1 (e.g. 100000); new series beyond it are refused"))
        for name in self.const_labels:
            if not VALID_LABEL_NAME.match(name) or name.startswith("__"):
                out.append(Issue(f"const_labels.{name}", ("invalid label name: use letters, digits and '_', not "
                                                     "starting with a digit or '__'")))
        return out

    def listeners(self) -> list[Listener]:
        return [Listener("tcp", self.endpoint, "endpoint")]
