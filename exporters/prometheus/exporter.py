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
SKIPPED_SERIES_METRIC = "exporter_prometheus_skipped_series"
RENDER_ERROR = "render_error"


class PrometheusExporter:
    """Keeps the latest state of every series and serves it at `/metrics`.

    Points the exporter cannot represent (a name already used with another
    type, exponential histograms, unspecified temporality, malformed points)
    are reported to the exporter helper as a partial success, so they show up
    as failed with a reason instead of disappearing. Out-of-order and duplicate
    points are normal stream hygiene: counted here, not failures.

    A series that is stored but cannot be written at scrape time is left out of
    that scrape (the others are served), counted once per scrape that leaves it
    out in `otelpipe_exporter_prometheus_skipped_series_total{reason="render_error"}`
    and logged at most once every 10 s.
    """

    def __init__(self, settings: Settings, cfg: PrometheusExporterConfig, *,
                 clock: Callable[[], float] | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cfg = cfg
        self.store = MetricStore(
            namespace=cfg.namespace, const_labels=cfg.const_labels, expiration=float(cfg.metric_expiration),
            delta_expiration=float(cfg.delta_metric_expiration), max_series=cfg.max_series,
            resource_to_labels=cfg.resource_to_telemetry_conversion.enabled, add_suffixes=cfg.add_metric_suffixes,
            clock=clock or settings.clock, wall_clock=wall_clock)
        self.endpoints: dict[str, str] = {}
        self._log = RateLimitedLog(settings.logger)
        tel = settings.telemetry
        self._exporter_id = str(settings.id)
        self._series_gauge = tel.gauge(SERIES_METRIC)
        self._skipped = tel.counter(SKIPPED_METRIC)
        self._skipped_series = tel.counter(SKIPPED_SERIES_METRIC).labels(self._exporter_id, RENDER_ERROR)
        self.server = MetricsServer(cfg.endpoint, self.store, open_metrics=cfg.enable_open_metrics,
                                    logger=settings.logger, on_skip=self._skip_on_scrape)

    async def start(self, host: Host) -> None:
        await self.server.start()
        self._series_gauge.labels(self._exporter_id).set_function(self.store.series_count)
        self.endpoints = dict(self.server.endpoints)
        self.settings.logger.info("prometheus exporter serving /metrics",
                                  extra={"endpoint": self.endpoints.get("http")})

    async def push(self, payload: Payload) -> None:
        result = self.store.update(payload.message)  # type: ignore[arg-type]
        if not result.skipped:
            return
        for reason, n in result.skipped.items():
            self._skipped.labels(self._exporter_id, reason).inc(n)
        if result.conflicts:
            self._log.warning("metric dropped: it has no usable Prometheus name or the name is taken by a metric "
                              "of another type", key="conflict", extra={"conflicts": result.conflicts[:5]})
        if "series_limit" in result.skipped:
            self._log.warning("points of new series refused: the exporter holds max_series series", key="series_limit",
                              extra={"max_series": self.cfg.max_series, "refused": result.skipped["series_limit"]})
        rejected = result.rejected
        if rejected:
            reasons = {r: n for r, n in result.skipped.items() if r in REJECT_REASONS}
            raise PartialSuccessError(rejected, f"prometheus exporter could not represent {rejected} points: {reasons}")

    def _skip_on_scrape(self, family: str, series: int, error: BaseException) -> None:
        """A family left out of a scrape (called from the render thread: counter and logging are thread-safe)."""
        self._skipped_series.inc(series)
        # The error's text may quote label values: only its type is logged.
        self._log.error("series left out of the scrape: they cannot be written", key="render_skip",
                        extra={"family": family, "series": series, "error": type(error).__name__})

    async def shutdown(self) -> None:
        await self.server.shutdown()
        try:
            self._series_gauge.remove(self._exporter_id)
        except KeyError:
            pass
