"""The explicit list of every component type otelpipe ships.

This is the only module in `pipeline/` that imports receivers, processors and
exporters (the Collector's `components.go`). No import side effects, no
decorator registries: add a factory to the list below.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipeline.component import Factory, Kind


def _factories() -> list[Factory]:
    from connectors import forward
    from exporters import debug, file, otlp, otlphttp, prometheus
    from processors import (
        batch,
        cardinality_limit,
        memory_limiter,
        probabilistic_sampler,
        secret_mask,
        tail_sampling,
        uuid_normalize,
    )
    from receivers import otlp as otlp_receiver
    from receivers import statsd as statsd_receiver

    return [
        otlp_receiver.FACTORY,
        statsd_receiver.FACTORY,
        batch.FACTORY,
        memory_limiter.FACTORY,
        cardinality_limit.FACTORY,
        probabilistic_sampler.FACTORY,
        tail_sampling.FACTORY,
        secret_mask.FACTORY,
        uuid_normalize.FACTORY,
        otlp.FACTORY,
        otlphttp.FACTORY,
        debug.FACTORY,
        file.FACTORY,
        prometheus.FACTORY,
        forward.FACTORY,
    ]


def make_factory_map(factories: Iterable[Factory]) -> dict[Kind, dict[str, Factory]]:
    """Group factories by kind and type name; a duplicate type is a programming error."""
    out: dict[Kind, dict[str, Factory]] = {k: {} for k in Kind}
    for f in factories:
        if f.type in out[f.kind]:
            raise ValueError(f"duplicate {f.kind.value} factory for type {f.type!r}")
        out[f.kind][f.type] = f
    return out


def factories() -> Mapping[Kind, Mapping[str, Factory]]:
    """A fresh factory map (cheap; nothing global is mutated)."""
    return make_factory_map(_factories())
