"""Datadog exporter (`datadog`): metrics to `POST /api/v2/series`, logs to `POST /api/v2/logs`.

Traces are not sent here: they go to the Datadog Agent's OTLP ingest (`otlp` exporter) or to
Datadog LLM Observability's OTLP intake (`otlphttp`), see config/examples/.
  config.py      the YAML keys, the site → intake URLs
  attributes.py  attribute values as strings, tags, host and unified service tags
  metrics.py     OTLP metrics → v2 series (the mapping table; cumulative → delta state)
  logs.py        OTLP log records → log entries (the mapping table)
  intake.py      JSON bodies, compression, cutting under the API's size limits
  exporter.py    the exporter object (push with resumable retries, 403 / 413 handling)
"""
from __future__ import annotations

from exporters.datadog.config import DatadogExporterConfig
from exporters.datadog.exporter import DatadogExporter
from pipeline.component import ExporterFactory, Settings, Stability
from pipeline.model import Signal


def create(settings: Settings, cfg: DatadogExporterConfig) -> DatadogExporter:
    return DatadogExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="datadog",
    config_type=DatadogExporterConfig,
    signals={Signal.METRICS: Stability.BETA, Signal.LOGS: Stability.BETA},
    create=create,
    description="Sends metrics (v2 series) and logs to Datadog's intakes; traces go over OTLP (see the README).",
)

__all__ = ["FACTORY", "DatadogExporter", "DatadogExporterConfig", "create"]
