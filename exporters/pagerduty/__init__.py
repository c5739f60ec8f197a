"""PagerDuty exporter (`pagerduty`): alert rules evaluated over the pipeline's metrics, Events API v2.

Prometheus alerting rules plus Alertmanager's PagerDuty integration, inside a metrics pipeline:
  config.py     the YAML keys and rule validation
  templates.py  summary / link templates ({value}, {threshold}, group attributes)
  store.py      the bounded history of the referenced series (reset-aware totals)
  evaluator.py  aggregations over windows, histogram quantiles, groups, ratios, offsets, guards
  alerts.py     the pending → firing → resolved state machine of one rule
  events.py     Events API v2 events and the sender that posts them
  exporter.py   the exporter object (push, evaluate, start, shutdown, status, reload hand-over)
"""
from __future__ import annotations

from exporters.pagerduty.config import PagerDutyExporterConfig
from exporters.pagerduty.exporter import PagerDutyExporter
from pipeline.component import ExporterFactory, Settings, Stability
from pipeline.model import Signal


def create(settings: Settings, cfg: PagerDutyExporterConfig) -> PagerDutyExporter:
    return PagerDutyExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="pagerduty",
    config_type=PagerDutyExporterConfig,
    signals={Signal.METRICS: Stability.ALPHA},
    create=create,
    description="Evaluates alert rules over metrics and opens / resolves PagerDuty incidents (Events API v2).",
)

__all__ = ["FACTORY", "PagerDutyExporter", "PagerDutyExporterConfig", "create"]
