"""Load-balancing exporter (`loadbalancing`): trace-aware scale-out over a tier of OTLP backends.

The Collector's loadbalancingexporter: every span of a trace (or every item of a service, a
resource or a metric) goes to the same backend, so tail sampling and other trace-level work
stay correct across gateway replicas.
  config.py    the YAML keys (`routing_key`, `resolver.static` / `resolver.dns`, `protocol.otlp`)
  ring.py      consistent hashing: rendezvous hashing over a table of buckets
  routing.py   one request cut into one request per backend, from the wire bytes
  resolver.py  the static list and the DNS resolver
  exporter.py  the exporter: per-backend `otlp` exporters, each with its own queue and retry
"""
from __future__ import annotations

from exporters.loadbalancing.config import LoadBalancingConfig
from exporters.loadbalancing.exporter import LoadBalancingExporter
from pipeline.component import ExporterFactory, Settings, Stability
from pipeline.model import Signal


def create(settings: Settings, cfg: LoadBalancingConfig) -> LoadBalancingExporter:
    return LoadBalancingExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="loadbalancing",
    config_type=LoadBalancingConfig,
    signals={Signal.TRACES: Stability.BETA, Signal.METRICS: Stability.ALPHA, Signal.LOGS: Stability.BETA},
    create=create,
    description="Routes each trace (or service, resource, metric) to one backend of a tier over OTLP/gRPC, "
                "with consistent hashing over a static list or a DNS name.",
)

__all__ = ["FACTORY", "LoadBalancingConfig", "LoadBalancingExporter", "create"]
