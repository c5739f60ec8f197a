"""Loki exporter (`loki`): logs to Loki's push API (`POST /loki/api/v1/push`, JSON, gzip).

  config.py    the YAML keys and their checks (labels sanitized, high-cardinality labels warned about)
  lines.py     the line per `format` (raw, json, logfmt) and attribute values as strings
  push.py      OTLP logs → streams and entries (labels, timestamps, structured metadata), the JSON body
  exporter.py  the exporter object (tenant header, 400 / 413 handling)

Loki 3 also ingests OTLP natively at `/otlp/v1/logs`: the `otlphttp` exporter sends there (see the README).
"""
from __future__ import annotations

from exporters.loki.config import LokiExporterConfig
from exporters.loki.exporter import LokiExporter
from pipeline.component import ExporterFactory, Settings, Stability
from pipeline.model import Signal


def create(settings: Settings, cfg: LokiExporterConfig) -> LokiExporter:
    return LokiExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="loki",
    config_type=LokiExporterConfig,
    signals={Signal.LOGS: Stability.BETA},
    create=create,
    description="Sends logs to Loki's push API: one stream per label set, structured metadata, gzip.",
)

__all__ = ["FACTORY", "LokiExporter", "LokiExporterConfig", "create"]
