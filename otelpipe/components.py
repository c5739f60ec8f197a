"""The explicit list of every component type otelpipe ships (the Collector's `components.go`).

This is the only module that imports receivers, processors, exporters and
connectors; `pipeline/` (the library) never does, and whatever needs the
factory map receives it as an argument. No import side effects, no decorator
registries: add a factory to the list below.
"""
from __future__ import annotations

from collections.abc import Mapping

from connectors import forward
from connectors.genai_metrics import connector as genai_metrics
from exporters import datadog, debug, file, loadbalancing, loki, pagerduty, prometheus
from exporters.otlp import grpc as otlp
from exporters.otlp import http as otlphttp
from extensions import bearertokenauth, file_storage, health_check, pprof, zpages
from pipeline.component import Factory, Kind, make_factory_map
from processors import batch, filter, memory_limiter, resource, transform
from processors.attributes import processor as attributes
from processors.cardinality_limit import processor as cardinality_limit
from processors.privacy import secret_mask, uuid_normalize
from processors.sampling import probabilistic, tail
from receivers.otlp import receiver as otlp_receiver
from receivers.statsd import receiver as statsd_receiver

FACTORIES: tuple[Factory, ...] = (
    otlp_receiver.FACTORY,
    statsd_receiver.FACTORY,
    batch.FACTORY,
    memory_limiter.FACTORY,
    cardinality_limit.FACTORY,
    probabilistic.FACTORY,
    tail.FACTORY,
    secret_mask.FACTORY,
    uuid_normalize.FACTORY,
    attributes.FACTORY,
    resource.FACTORY,
    filter.FACTORY,
    transform.FACTORY,
    otlp.FACTORY,
    otlphttp.FACTORY,
    debug.FACTORY,
    file.FACTORY,
    prometheus.FACTORY,
    datadog.FACTORY,
    loki.FACTORY,
    pagerduty.FACTORY,
    loadbalancing.FACTORY,
    forward.FACTORY,
    genai_metrics.FACTORY,
    health_check.FACTORY,
    pprof.FACTORY,
    zpages.FACTORY,
    file_storage.FACTORY,
    bearertokenauth.FACTORY,
)


def factories() -> Mapping[Kind, Mapping[str, Factory]]:
    """A fresh factory map (cheap; nothing global is mutated)."""
    return make_factory_map(FACTORIES)
