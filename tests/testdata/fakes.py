"""Test-only component factories for exercising config, graph and service without the network."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.component import (
    ComponentID,
    ConnectorFactory,
    Consumer,
    ExporterFactory,
    ExtensionFactory,
    Factory,
    Host,
    Kind,
    Listener,
    ProcessorFactory,
    ReceiverFactory,
    Settings,
    Stability,
    make_factory_map,
    processor_from_func,
)
from pipeline.config.types import ByteSize, Duration, Secret
from pipeline.exporterhelper import ExporterConfig
from pipeline.model import Payload, Signal
from pipeline.net.endpoint import Endpoint
from pipeline.testing import Sink

ALL = {s: Stability.STABLE for s in Signal}


@dataclass(frozen=True, slots=True, kw_only=True)
class Nested:
    size: ByteSize = ByteSize(1024)
    every: Duration = Duration(1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeReceiverConfig:
    endpoint: Endpoint = field(default_factory=lambda: Endpoint.listen("127.0.0.1:0"))
    nested: Nested = field(default_factory=Nested)
    mode: str = "a"
    fail_start: bool = False  # start() raises, as a receiver whose port is taken does

    def validate(self) -> list[object]:
        return [("mode", "must be 'a' or 'b'")] if self.mode not in ("a", "b") else []

    def listeners(self) -> list[Listener]:
        return [Listener("tcp", self.endpoint, "endpoint")]


class FakeReceiver:
    def __init__(self, settings: Settings, cfg: FakeReceiverConfig, consumers: Mapping[Signal, Consumer]) -> None:
        self.consumers = consumers
        self.started = False
        self._fail = cfg.fail_start

    async def start(self, host: object) -> None:
        if self._fail:
            raise OSError("address already in use")
        self.started = True

    async def shutdown(self) -> None:
        self.started = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TagConfig:
    value: str = "tagged"


def _tag(settings: Settings, cfg: TagConfig, nxt: Consumer) -> object:
    def process(p: Payload) -> Payload:
        msg = p.mutable()
        for rs in msg.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                for s in ss.spans:
                    s.name = f"{s.name}:{cfg.value}"
        return p
    return processor_from_func(settings, process, nxt, mutates_data=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkExporterConfig(ExporterConfig):
    api_key: Secret = Secret("")


class SinkExporter(Sink):
    """Records pushes; `instances` lets tests find the one the graph created."""

    def __init__(self, settings: Settings, cfg: SinkExporterConfig, registry: dict[str, SinkExporter]) -> None:
        super().__init__(settings.signal)
        registry[f"{settings.id}/{settings.signal.value if settings.signal else ''}"] = self
        self.seen_extensions: dict[ComponentID, object] = {}

    async def start(self, host: Host) -> None:
        """Note the extensions the host showed at start (a reload must show the new config's)."""
        self.seen_extensions = dict(host.extensions())


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsOnlyConfig:
    pass


def factories(registry: dict[str, SinkExporter] | None = None) -> dict[Kind, dict[str, Factory]]:
    reg = registry if registry is not None else {}
    return make_factory_map([
        ReceiverFactory(type="fake", config_type=FakeReceiverConfig, signals=ALL, create=FakeReceiver),
        ProcessorFactory(type="tag", config_type=TagConfig, signals={Signal.TRACES: Stability.ALPHA}, create=_tag),
        ProcessorFactory(type="metricsonly", config_type=MetricsOnlyConfig, signals={Signal.METRICS: Stability.ALPHA},
                         create=lambda s, c, n: n),
        ExporterFactory(type="sink", config_type=SinkExporterConfig, signals=ALL,
                        create=lambda s, c: SinkExporter(s, c, reg)),
    ])


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderExtensionConfig:
    label: str = ""


class RecorderExtension:
    """An extension that records its lifecycle (and what the host let it see) into a shared log."""

    def __init__(self, settings: Settings, cfg: RecorderExtensionConfig, log: list[str]) -> None:
        self.id = str(settings.id)
        self.log = log
        self.host: object | None = None

    async def start(self, host: object) -> None:
        self.host = host
        self.log.append(f"start extension {self.id}")

    async def shutdown(self) -> None:
        self.log.append(f"stop extension {self.id}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanCountConfig:
    metric: str = "spans"


class SpanCountConnector:
    """traces → metrics: one gauge point per request with its span count (a cross-signal connector)."""

    mutates_data = False

    def __init__(self, settings: Settings, cfg: SpanCountConfig, nxt: Consumer) -> None:
        self._next = nxt
        self._name = cfg.metric

    async def start(self, host: object) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def consume(self, payload: Payload) -> None:
        req = Signal.METRICS.request_type()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add()  # type: ignore[union-attr]
        m.name = self._name
        m.gauge.data_points.add().as_int = payload.items
        await self._next.consume(Payload(Signal.METRICS, message=req))


def connector_factories(registry: dict[str, SinkExporter] | None = None,
                        log: list[str] | None = None) -> dict[Kind, dict[str, Factory]]:
    """The fakes plus the real `forward` connector, a traces→metrics connector and a recording extension."""
    from connectors import forward

    reg = registry if registry is not None else {}
    events = log if log is not None else []
    base = factories(reg)
    return make_factory_map([
        *(f for kinds in base.values() for f in kinds.values()),
        forward.FACTORY,
        ConnectorFactory(type="spancount", config_type=SpanCountConfig, create=SpanCountConnector,
                         connects={(Signal.TRACES, Signal.METRICS): Stability.ALPHA}),
        ExtensionFactory(type="recorder", config_type=RecorderExtensionConfig, stability=Stability.DEVELOPMENT,
                         create=lambda s, c: RecorderExtension(s, c, events)),
    ])
