"""Every registered component honours the lifecycle contract (the Collector's componenttest)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otelpipe import components
from pipeline.component import Factory, Flushable, Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.exporterhelper import ExporterHelper
from pipeline.model import Payload, Signal
from pipeline.testing import NopHost, Sink, make_traces, nop_settings, payload

# The smallest config that makes each type usable on loopback (types not listed need none).
MINIMAL: dict[tuple[Kind, str], dict[str, Any]] = {
    (Kind.RECEIVER, "otlp"): {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}},
    (Kind.RECEIVER, "statsd"): {"endpoint": "127.0.0.1:0"},
    (Kind.EXPORTER, "otlp"): {"endpoint": "127.0.0.1:9", "tls": {"insecure": True}},
    (Kind.EXPORTER, "otlphttp"): {"endpoint": "http://127.0.0.1:9"},
    (Kind.EXPORTER, "prometheus"): {"endpoint": "127.0.0.1:0"},
    (Kind.EXPORTER, "file"): {"path": "{tmp}/out.jsonl"},
    (Kind.EXPORTER, "pagerduty"): {"routing_key": "k", "endpoint": "http://127.0.0.1:9/v2/enqueue",
                                   "rules": [{"name": "r", "metric": "requests", "aggregation": "rate",
                                              "condition": ">", "threshold": 1}]},
    (Kind.EXPORTER, "loadbalancing"): {"resolver": {"static": {"hostnames": ["127.0.0.1:9"]}}},
    (Kind.EXPORTER, "datadog"): {"api": {"key": "0123456789abcdef0123456789abcdef"},
                                 "metrics": {"endpoint": "http://127.0.0.1:9"}, "logs": {"endpoint": "http://127.0.0.1:9"}},
    (Kind.EXPORTER, "loki"): {"endpoint": "http://127.0.0.1:9/loki/api/v1/push"},
    (Kind.PROCESSOR, "memory_limiter"): {"limit_mib": 4096},
    (Kind.PROCESSOR, "attributes"): {"actions": [{"key": "env", "value": "test", "action": "upsert"}]},
    (Kind.PROCESSOR, "resource"): {"attributes": [{"key": "env", "value": "test", "action": "upsert"}]},
    (Kind.EXTENSION, "health_check"): {"endpoint": "127.0.0.1:0"},
    (Kind.EXTENSION, "pprof"): {"endpoint": "127.0.0.1:0"},
    (Kind.EXTENSION, "zpages"): {"endpoint": "127.0.0.1:0"},
    (Kind.EXTENSION, "file_storage"): {"directory": "{tmp}/storage", "create_directory": True},
    (Kind.EXTENSION, "bearertokenauth"): {"token": "t0ken"},
}

SAMPLERS = {"probabilistic_sampler", "tail_sampling"}  # may legitimately drop the test data
# Connectors that turn data into another signal: what they take, and how many items that makes (not 10).
DERIVING: dict[str, tuple[dict[str, object], int]] = {
    # ten model calls in one trace: one duration point, and the run (its duration, steps and tool calls)
    "genai_metrics": ({"gen_ai.operation.name": "chat"}, 4),
}

ALL = [f for kinds in components.factories().values() for f in kinds.values()]


def _cfg(f: Factory, tmp: Path) -> Any:
    raw = MINIMAL.get((f.kind, f.type), {})
    raw = {k: (v.replace("{tmp}", str(tmp)) if isinstance(v, str) else v) for k, v in raw.items()}
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(f.config_type, raw, f"{f.kind.section}.{f.type}", issues)
    assert not issues, issues
    return cfg


def _signal(f: Factory) -> Signal:
    if f.kind is Kind.EXTENSION:
        return Signal.TRACES  # extensions handle no signal; the value is not used
    return next(iter(f.connects))[0] if f.kind is Kind.CONNECTOR else next(iter(f.signals))


def _input(f: Factory, signal: Signal) -> Payload:
    if f.kind is Kind.CONNECTOR and f.type in DERIVING:
        return Payload(signal, message=make_traces(10, attrs=DERIVING[f.type][0]))
    return payload(signal)


def _create(f: Factory, cfg: Any, signal: Signal, sink: Sink) -> Any:
    settings = nop_settings(f.type, f.kind, None if f.kind in (Kind.RECEIVER, Kind.EXTENSION) else signal)
    if f.kind is Kind.EXTENSION:
        return f.create(settings, cfg)
    if f.kind is Kind.RECEIVER:
        return f.create(settings, cfg, {signal: sink})
    if f.kind in (Kind.PROCESSOR, Kind.CONNECTOR):
        return f.create(settings, cfg, sink)
    return ExporterHelper(settings, f.create(settings, cfg), cfg)


@pytest.mark.parametrize("factory", ALL, ids=lambda f: f"{f.kind.value}/{f.type}")
def test_factory_shape(factory: Factory) -> None:
    assert factory.type.islower()
    if factory.kind is not Kind.EXTENSION:
        assert factory.connects if factory.kind is Kind.CONNECTOR else factory.signals
    issues: list[ConfigIssue] = []
    decode_dataclass(factory.config_type, {}, "x", issues)
    # the default config is valid, or says exactly which key must be given
    assert all("is required" in i.message or "required" in i.message for i in issues), issues
    issues = []
    decode_dataclass(factory.config_type, {"no_such_key_xyz": 1}, "x", issues)
    assert any(i.path == "x.no_such_key_xyz" and "unknown key" in i.message for i in issues)


@pytest.mark.parametrize("factory", ALL, ids=lambda f: f"{f.kind.value}/{f.type}")
async def test_lifecycle(factory: Factory, tmp_path: Path) -> None:
    signal = _signal(factory)
    cfg = _cfg(factory, tmp_path)
    # shutdown without start
    await _create(factory, cfg, signal, Sink()).shutdown()
    # start, use, shutdown twice
    sink = Sink()
    comp = _create(factory, cfg, signal, sink)
    await comp.start(NopHost())
    if factory.kind in (Kind.PROCESSOR, Kind.CONNECTOR):
        await comp.consume(_input(factory, signal))
    await comp.shutdown()
    await comp.shutdown()
    if factory.kind in (Kind.PROCESSOR, Kind.CONNECTOR) and factory.type not in SAMPLERS:
        # a processor flushes everything it holds on shutdown
        assert sink.items == DERIVING.get(factory.type, ({}, 10))[1]


@pytest.mark.parametrize("factory", [f for f in ALL if f.kind in (Kind.PROCESSOR, Kind.CONNECTOR)
                                     and f.type not in SAMPLERS], ids=lambda f: f"{f.kind.value}/{f.type}")
async def test_a_component_that_holds_data_hands_it_all_on_at_force_flush(factory: Factory, tmp_path: Path) -> None:
    """`Flushable` is the contract for holding data: after `force_flush` nothing is held any more."""
    signal = _signal(factory)
    sink = Sink()
    comp = _create(factory, _cfg(factory, tmp_path), signal, sink)
    await comp.start(NopHost())
    await comp.consume(_input(factory, signal))
    if isinstance(comp, Flushable):
        await comp.force_flush()
    assert sink.items == DERIVING.get(factory.type, ({}, 10))[1]  # holds data and is not Flushable: fails here
    await comp.shutdown()
