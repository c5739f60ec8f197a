"""The component contract: ids, kinds, factories, settings and the runtime protocols.

Mirrors the Collector's `component` and `consumer` packages. A factory is a type
name, a config dataclass and one create function; components have
`start(host)`/`shutdown()` with the Collector's semantics (start returns quickly,
shutdown is safe without start and safe twice); consumers take payloads.
"""
from __future__ import annotations

import builtins
import enum
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable

from pipeline.clock import SYSTEM_CLOCK, Clock
from pipeline.model import Payload, Signal
from pipeline.net.endpoint import Endpoint

if TYPE_CHECKING:
    from pipeline.telemetry import Telemetry

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_RE = re.compile(r"^[^\s/]+$")


class Kind(enum.Enum):
    RECEIVER = "receiver"
    PROCESSOR = "processor"
    EXPORTER = "exporter"
    CONNECTOR = "connector"
    EXTENSION = "extension"

    @property
    def section(self) -> str:
        """The top-level config key that holds components of this kind."""
        return self.value + "s"


class Stability(enum.Enum):
    DEVELOPMENT = "development"
    ALPHA = "alpha"
    BETA = "beta"
    STABLE = "stable"


@dataclass(frozen=True, slots=True, order=True)
class ComponentID:
    """`type` or `type/name`, as in the Collector's config."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentID:
        """Parse `type[/name]`; raises ValueError with a readable reason."""
        if not isinstance(text, str) or not text:
            raise ValueError("a component id must be a non-empty string like 'otlp' or 'otlp/tempo'")
        type_, _, name = text.partition("/")
        if not _TYPE_RE.match(type_):
            raise ValueError(f"invalid component type {type_!r}: use lower_snake_case letters, digits and '_'")
        if "/" in text and not _NAME_RE.match(name):
            raise ValueError(f"invalid component name {name!r} in {text!r}: it must be non-empty, without spaces or '/'")
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


@runtime_checkable
class Consumer(Protocol):
    """Anything that takes payloads: processors, exporters, fan-outs."""

    mutates_data: bool

    async def consume(self, payload: Payload) -> None: ...


class Listener(NamedTuple):
    """A port a component's config claims: `("tcp", endpoint, "protocols.grpc.endpoint")`.

    `endpoint` is None when the decoder already reported it as invalid; `key`
    is the config key, relative to the component, that set it.
    """

    protocol: Literal["tcp", "udp"]
    endpoint: Endpoint | None
    key: str


@runtime_checkable
class HasListeners(Protocol):
    """A config that opens ports; the config loader refuses two claims on one port (Vector's resource check)."""

    def listeners(self) -> Sequence[Listener]: ...


class Host(Protocol):
    """What a running component may ask of the Service (the Collector's component.Host).

    `extensions()` gives the running extensions by id, so a component can find
    the storage or authenticator its config names.
    """

    def report_fatal(self, exc: BaseException) -> None: ...

    def extensions(self) -> Mapping[ComponentID, Component]: ...


class Component(Protocol):
    async def start(self, host: Host) -> None: ...

    async def shutdown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Settings:
    """What every component is created with: its id, kind, telemetry and a logger.

    `pipeline` is set for processors (one instance per pipeline); `signal` for
    processors and exporters (one instance per signal) and for connectors the
    signal they take, with `to_signal` the signal they emit (one instance per pair).
    """

    id: ComponentID
    kind: Kind
    telemetry: Telemetry
    logger: logging.LoggerAdapter[logging.Logger]
    signal: Signal | None = None
    pipeline: str = ""
    clock: Clock = SYSTEM_CLOCK
    to_signal: Signal | None = None


# create functions, by kind:
#   receiver:  create(settings, cfg, consumers: Mapping[Signal, Consumer]) -> Component
#   processor: create(settings, cfg, next: Consumer) -> Component & Consumer
#   exporter:  create(settings, cfg) -> Exporter (push + start/shutdown), wrapped by exporterhelper
#   connector: create(settings, cfg, next: Consumer) -> Component & Consumer, one per (signal, to_signal)
#   extension: create(settings, cfg) -> Component
ReceiverCreate = Callable[[Settings, Any, Mapping[Signal, Consumer]], Component]
ProcessorCreate = Callable[[Settings, Any, Consumer], Any]
ExporterCreate = Callable[[Settings, Any], Any]
ConnectorCreate = Callable[[Settings, Any, Consumer], Any]
ExtensionCreate = Callable[[Settings, Any], Component]


@dataclass(frozen=True, slots=True)
class Factory:
    """One component type: its YAML type name, kind, config dataclass, signals and create function.

    Receivers, processors and exporters list the `signals` they handle. A
    connector lists instead the signal pairs it `connects` (`(TRACES, METRICS)`:
    it is an exporter of traces pipelines and a receiver of metrics pipelines).
    An extension handles no signal.
    """

    type: str
    kind: Kind
    config_type: builtins.type  # `type` here would name the field above
    signals: Mapping[Signal, Stability]
    create: Callable[..., Any]
    description: str = ""
    connects: Mapping[tuple[Signal, Signal], Stability] = field(default_factory=dict)
    stability: Stability = Stability.DEVELOPMENT  # an extension's (it has no signals)

    def supports(self, signal: Signal) -> bool:
        return signal in self.signals

    def connects_pair(self, source: Signal, target: Signal) -> bool:
        return (source, target) in self.connects

    def stability_text(self) -> str:
        """`traces (stable), metrics (beta)`, or for connectors `traces->metrics (alpha)`."""
        if self.kind is Kind.CONNECTOR:
            return ", ".join(f"{a.value}->{b.value} ({st.value})" for (a, b), st in self.connects.items())
        if self.kind is Kind.EXTENSION:
            return f"({self.stability.value})"
        return ", ".join(f"{s.value} ({st.value})" for s, st in self.signals.items())


def make_factory_map(factories: Iterable[Factory]) -> dict[Kind, dict[str, Factory]]:
    """Group factories by kind and type name; a duplicate type is a programming error."""
    out: dict[Kind, dict[str, Factory]] = {k: {} for k in Kind}
    for f in factories:
        if f.type in out[f.kind]:
            raise ValueError(f"duplicate {f.kind.value} factory for type {f.type!r}")
        out[f.kind][f.type] = f
    return out



class Exporter(Protocol):
    """What an exporter module writes: `push` one payload; start/shutdown are optional."""

    async def push(self, payload: Payload) -> None: ...


class FuncProcessor:
    """Adapter that turns a stateless `process(payload) -> payload | None` into a processor.

    `None` (or a payload with no items left) means everything was dropped; the
    adapter counts the dropped items under `drop_reason` and hands nothing on.
    """

    def __init__(
        self,
        settings: Settings,
        process: Callable[[Payload], Payload | None | Awaitable[Payload | None]],
        next_consumer: Consumer,
        *,
        mutates_data: bool = True,
        drop_reason: str = "filtered",
    ) -> None:
        self.settings = settings
        self._process = process
        self._next = next_consumer
        self.mutates_data = mutates_data
        self._drop_reason = drop_reason
        self._obs = settings.telemetry.processor(settings)

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def consume(self, payload: Payload) -> None:
        before = payload.items
        result = self._process(payload)
        if isinstance(result, Awaitable):
            result = await result
        after = 0 if result is None else result.items
        if after < before:
            self._obs.dropped(before - after, self._drop_reason)
        if result is None or result.items == 0:
            return
        await self._next.consume(result)


def processor_from_func(
    settings: Settings,
    process: Callable[[Payload], Payload | None],
    next_consumer: Consumer,
    *,
    mutates_data: bool = True,
    drop_reason: str = "filtered",
) -> FuncProcessor:
    """Wrap a pure payload function as a processor (see FuncProcessor)."""
    return FuncProcessor(settings, process, next_consumer, mutates_data=mutates_data, drop_reason=drop_reason)
