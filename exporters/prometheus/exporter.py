"""The exporter object the graph runs: pushes update the store, scrapes read it."""
from __future__ import annotations

import time
from collections.abc import Callable

from exporters.prometheus.config import PrometheusExporterConfig
from exporters.prometheus.server import MetricsServer
from exporters.prometheus.store import REJECT_REASONS, MetricStore
from pipeline.component import Host, Settings
from pipeline.errors import PartialSuccessError
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload

SERIES_METRIC = "exporter_prometheus_series"
SKIPPED_METRIC = "exporter_prometheus_skipped_metric_points"


class PrometheusExporter:
    """Keeps the latest state of every series and serves it at `/metrics`.

    Points the exporter cannot represent (a name already used with another
    type, exponential histograms, unspecified temporality, malformed points)
    are reported to the exporter helper as a partial success, so they show up
    as failed with a reason instead of disappearing. Out-of-order and duplicate
    points are normal stream hygiene: counted here, not failures.
    """

    def __init__(self, settings: Settings, cfg: PrometheusExporterConfig, *,
                 clock: Callable[[], float] | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cfg = cfg
        self.store = MetricStore(
            namespace=cfg.namespace, const_labels=cfg.const_labels, expiration=float(cfg.metric_expiration),
            resource_to_labels=cfg.resource_to_telemetry_conversion.enabled, add_suffixes=cfg.add_metric_suffixes,
            clock=clock or settings.clock, wall_clock=wall_clock)
        self.server = MetricsServer(cfg.endpoint, self.store, open_metrics=cfg.enable_open_metrics,
                                    logger=settings.logger)
        self.endpoints: dict[str, str] = {}
        self._log = RateLimitedLog(settings.logger)
        tel = settings.telemetry
        self._exporter_id = str(settings.id)
        self._series_gauge = tel.gauge(SERIES_METRIC, "Series held by the Prometheus exporter.", ("exporter",))
        self._skipped = tel.counter(SKIPPED_METRIC, "Metric points the Prometheus exporter did not apply, by reason.",
                                    ("exporter", "reason"))

    async def start(self, host: Host) -> None:
        await self.server.start()
        self._series_gauge.labels(self._exporter_id).set_function(self.store.series_count)
        self.endpoints = dict(self.server.endpoints)
        self.settings.logger.info("prometheus exporter serving /metrics", extra={"endpoint": self.endpoints.get("http")})

    async def push(self, payload: Payload) -> None:
        result = self.store.update(payload.message)  # type: ignore[arg-type]
        if not result.skipped:
            return
        for reason, n in result.skipped.items():
            self._skipped.labels(self._exporter_id, reason).inc(n)
        if result.conflicts:
            self._log.warning("metric dropped: its Prometheus name is empty or taken by a metric of another type",
                              key="conflict", extra={"conflicts": result.conflicts[:5]})
        rejected = result.rejected
        if rejected:
            reasons = {r: n for r, n in result.skipped.items() if r in REJECT_REASONS}
            raise PartialSuccessError(rejected, f"prometheus exporter could not represent {rejected} points: {reasons}")

    async def shutdown(self) -> None:
        await self.server.shutdown()
        try:
            self._series_gauge.remove(self._exporter_id)
        except KeyError:
            pass
