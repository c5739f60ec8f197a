"""Prometheus exporter (`prometheus`): serves the pipeline's metrics for Prometheus to scrape.

Translation follows the OpenTelemetry "Prometheus and OpenMetrics
Compatibility" specification (see naming.py and store.py for the details and
the few deliberate deviations); rendering is prometheus_client's.
  config.py     the YAML keys
  naming.py     pure name / label / unit translation
  store.py      series state: delta → cumulative, resets, expiry
  exemplars.py  OTLP exemplars → one OpenMetrics exemplar per counter / bucket
  collector.py  store snapshot → prometheus_client metric families
  server.py     aiohttp `/metrics` with text / OpenMetrics negotiation
  exporter.py   the exporter object (push, start, shutdown)
"""
from __future__ import annotations

from exporters.prometheus.config import PrometheusExporterConfig
from exporters.prometheus.exporter import PrometheusExporter
from pipeline.component import ExporterFactory, Settings, Stability
from pipeline.model import Signal


def create(settings: Settings, cfg: PrometheusExporterConfig) -> PrometheusExporter:
    return PrometheusExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="prometheus",
    config_type=PrometheusExporterConfig,
    signals={Signal.METRICS: Stability.BETA},
    create=create,
    description="Serves metrics at /metrics for Prometheus to scrape (OTel→Prometheus naming, exemplars).",
)

__all__ = ["FACTORY", "PrometheusExporter", "PrometheusExporterConfig", "create"]
