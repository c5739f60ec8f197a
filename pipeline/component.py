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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

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
            raise ValueError(f"invalid component name {name!r} in {text!r}: "
                             "it must be non-empty, without spaces or '/'")
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


@runtime_checkable
class Consumer(Protocol):
    """Anything that takes payloads: processors, exporters, fan-outs."""

    mutates_data: bool

    async def consume(self, payload: Payload) -> None: ...


def acknowledges(consumer: object) -> bool:
    """Whether `consumer` answers only once its data is durable (end-to-end acknowledgement).

    A consumer says so with an `acknowledges` property: True when `consume()`
    returns only after every persistent sending queue (`sending_queue.storage`)
    it leads to has the payload on disk. An exporter with a persistent queue is
    the source of it; stages that hand data straight on (fan-outs, relays,
    pass-through processors) pass on their downstream's answer, and `batch`
    then makes each sender wait for the batch that holds its data. A consumer
    without the property counts as not acknowledging.
    """
    # Not a runtime-checkable Protocol: isinstance() evaluates the property to see that it exists, so a chain
    # of stages each asking downstream would cost 2^depth calls. Asked once per request.
    return getattr(consumer, "acknowledges", False) is True


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


@runtime_checkable
class HasEndpoints(Protocol):
    """A running component that listens: `endpoints` maps a transport name to the address actually bound."""

    endpoints: Mapping[str, str]


@runtime_checkable
class Flushable(Protocol):
    """A component that holds data and can hand it all on now (batch, tail sampling, connectors that buffer)."""

    async def force_flush(self) -> None: ...


@runtime_checkable
class Fuses(Protocol):
    """A processor that can do the work of the processor right after it in its pipeline in its own pass
    over each request (secret_mask and uuid_normalize: one scan and one walk for both). Once both are
    built the graph offers it the next one (a reload builds both anew: a fusing processor is never reused); `fuse` says
    whether it took the work over. The next one still counts what it did, and hands on untouched only
    the requests this one tells it were done; anything it gets otherwise it processes itself."""

    def fuse(self, next_processor: object) -> bool: ...


@runtime_checkable
class HasStatus(Protocol):
    """A running component with something to show on the admin server's `/status` (e.g. active alerts):
    the graph puts `status()` under the component's `status` key. Plain data only, no secrets."""

    def status(self) -> Mapping[str, Any]: ...


@runtime_checkable
class CarriesState(Protocol):
    """A component whose in-memory state should outlive a config reload (alert state, history).

    A component a reload keeps running keeps its state by itself. For one it replaces, the Service
    asks the old graph's components for `handover_state()` (which must have no effect by itself),
    and gives each new component of the same kind, id, signal and pipeline its predecessor's state
    with `takeover_state(state)` before starting it, while the predecessor still runs (it is stopped
    afterwards, in the background). The new component decides what of the state still applies to
    its config (and ignores a state it does not recognise); the predecessor must leave to it what it
    took over (e.g. send nothing more for it).
    """

    def handover_state(self) -> object: ...

    def takeover_state(self, state: object) -> None: ...


class Host(Protocol):
    """What a running component may ask of the Service (the Collector's component.Host).

    `extensions()` gives the running extensions by id, so a component can find
    the storage or authenticator its config names; `status()` is what the admin
    server's `/status` shows (`ready`, pipelines, components), so health and
    status extensions answer from the same source as the admin server.
    """

    def report_fatal(self, exc: BaseException) -> None: ...

    def extensions(self) -> Mapping[ComponentID, Component]: ...

    def status(self) -> Mapping[str, Any]: ...


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


class Exporter(Component, Protocol):
    """What an exporter module writes: `push` one payload, plus start/shutdown (no-ops if it needs none).

    The exporter helper wraps it with the queue, retry, timeout and
    observability, so `push` only sends (and raises what the backend said).
    """

    async def push(self, payload: Payload) -> None: ...


ConfigT = TypeVar("ConfigT")
ConfigT_contra = TypeVar("ConfigT_contra", contravariant=True)


class Processor(Component, Consumer, Protocol):
    """A processor (or connector) instance: a component that takes payloads."""


class ReceiverCreate(Protocol[ConfigT_contra]):
    def __call__(self, settings: Settings, cfg: ConfigT_contra, consumers: Mapping[Signal, Consumer], /) -> Component:
        ...


class ProcessorCreate(Protocol[ConfigT_contra]):
    def __call__(self, settings: Settings, cfg: ConfigT_contra, next_consumer: Consumer, /) -> Processor: ...


class ExporterCreate(Protocol[ConfigT_contra]):
    def __call__(self, settings: Settings, cfg: ConfigT_contra, /) -> Exporter: ...


class ExtensionCreate(Protocol[ConfigT_contra]):
    def __call__(self, settings: Settings, cfg: ConfigT_contra, /) -> Component: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _FactoryBase(Generic[ConfigT]):
    """What every factory has: the YAML type name, the config dataclass and a line of description.

    A factory is one component type, as in the Collector: a type name, a
    default config (`config_type()`) and one create function whose signature
    depends on the kind; the kind is the factory's class, so a create function
    that does not fit its kind is a type error.
    """

    kind: ClassVar[Kind]
    type: str
    config_type: builtins.type[ConfigT]  # `type` here would name the field above
    description: str = ""

    def supports(self, signal: Signal) -> bool:
        """Whether a pipeline of `signal` may list it (receivers, processors, exporters)."""
        return False

    def connects_pair(self, source: Signal, target: Signal) -> bool:
        """Whether it takes `source` and emits `target` (connectors)."""
        return False

    def stability_text(self) -> str:
        return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class _SignalFactory(_FactoryBase[ConfigT]):
    signals: Mapping[Signal, Stability]

    def supports(self, signal: Signal) -> bool:
        return signal in self.signals

    def stability_text(self) -> str:
        """`traces (stable), metrics (beta)`."""
        return ", ".join(f"{s.value} ({st.value})" for s, st in self.signals.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverFactory(_SignalFactory[ConfigT]):
    kind: ClassVar[Kind] = Kind.RECEIVER
    create: ReceiverCreate[ConfigT]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorFactory(_SignalFactory[ConfigT]):
    kind: ClassVar[Kind] = Kind.PROCESSOR
    create: ProcessorCreate[ConfigT]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExporterFactory(_SignalFactory[ConfigT]):
    kind: ClassVar[Kind] = Kind.EXPORTER
    create: ExporterCreate[ConfigT]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorFactory(_FactoryBase[ConfigT]):
    """A connector lists the signal pairs it `connects`: `(TRACES, METRICS)` makes it an exporter of
    traces pipelines and a receiver of metrics pipelines."""

    kind: ClassVar[Kind] = Kind.CONNECTOR
    connects: Mapping[tuple[Signal, Signal], Stability]
    create: ProcessorCreate[ConfigT]

    def connects_pair(self, source: Signal, target: Signal) -> bool:
        return (source, target) in self.connects

    def stability_text(self) -> str:
        """`traces->metrics (alpha)`."""
        return ", ".join(f"{a.value}->{b.value} ({st.value})" for (a, b), st in self.connects.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtensionFactory(_FactoryBase[ConfigT]):
    """An extension handles no signal; it has one stability."""

    kind: ClassVar[Kind] = Kind.EXTENSION
    stability: Stability
    create: ExtensionCreate[ConfigT]

    def stability_text(self) -> str:
        return f"({self.stability.value})"


Factory = (ReceiverFactory[Any] | ProcessorFactory[Any] | ExporterFactory[Any] | ConnectorFactory[Any]
           | ExtensionFactory[Any])


FactoryT = TypeVar("FactoryT", ReceiverFactory[Any], ProcessorFactory[Any], ExporterFactory[Any],
                    ConnectorFactory[Any], ExtensionFactory[Any])
FactoryMap = Mapping[Kind, Mapping[str, Factory]]


def factory_of(factories: FactoryMap, cls: type[FactoryT], type_name: str) -> FactoryT:
    """The factory of `type_name` among those of `cls`'s kind, typed as `cls` (KeyError if absent)."""
    found = factories[cls.kind][type_name]
    if not isinstance(found, cls):
        raise TypeError(f"the {cls.kind.value} factory for {type_name!r} is a {type(found).__name__}")
    return found


def make_factory_map(factories: Iterable[Factory]) -> dict[Kind, dict[str, Factory]]:
    """Group factories by kind and type name; a duplicate type is a programming error."""
    out: dict[Kind, dict[str, Factory]] = {k: {} for k in Kind}
    for f in factories:
        if f.type in out[f.kind]:
            raise ValueError(f"duplicate {f.kind.value} factory for type {f.type!r}")
        out[f.kind][f.type] = f
    return out





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

    @property
    def acknowledges(self) -> bool:
        return acknowledges(self._next)

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
