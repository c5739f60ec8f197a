"""Helpers for testing components: recording sinks, nop settings and host, request builders.

Shipped with the package (like the Collector's consumertest/componenttest) so
component tests stay short and never need the network.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline.component import Component, ComponentID, Kind, Settings
from pipeline.errors import PermanentError, RetryableError
from pipeline.logutil import component_logger
from pipeline.model import ExportRequest, Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.wire import encode_varint

if TYPE_CHECKING:
    from pipeline.component import Factory
    from pipeline.service import Service


class Sink:
    """A consumer that records every payload; `wait_for_items` waits on a condition, never sleeps.

    `fail_with` makes the next `fail_times` calls raise (to test retry and back-pressure).
    """

    def __init__(self, signal: Signal | None = None, *, mutates_data: bool = False) -> None:
        self.signal = signal
        self.mutates_data = mutates_data
        self.payloads: list[Payload] = []
        self.items = 0
        self.fail_with: BaseException | None = None
        self.fail_times = 0
        self._cond = asyncio.Condition()

    async def consume(self, payload: Payload) -> None:
        if self.fail_with is not None and self.fail_times > 0:
            self.fail_times -= 1
            raise self.fail_with
        async with self._cond:
            self.payloads.append(payload)
            self.items += payload.items
            self._cond.notify_all()

    async def push(self, payload: Payload) -> None:
        """Lets a Sink stand in for an exporter's push function too."""
        await self.consume(payload)

    async def start(self, host: object) -> None:
        """An exporter's start: nothing to open."""

    async def shutdown(self) -> None:
        """An exporter's shutdown: nothing to close."""

    async def wait_for_items(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: self.items >= n)

    def messages(self) -> list[ExportRequest]:
        return [p.message for p in self.payloads]


class TracesSink(Sink):
    def __init__(self, **kw: bool) -> None:
        super().__init__(Signal.TRACES, **kw)


class MetricsSink(Sink):
    def __init__(self, **kw: bool) -> None:
        super().__init__(Signal.METRICS, **kw)


class LogsSink(Sink):
    def __init__(self, **kw: bool) -> None:
        super().__init__(Signal.LOGS, **kw)


class NopHost:
    """A host that records fatal errors instead of stopping anything."""

    def __init__(self) -> None:
        self.fatal: list[BaseException] = []

    def report_fatal(self, exc: BaseException) -> None:
        self.fatal.append(exc)

    def extensions(self) -> Mapping[ComponentID, Component]:
        return {}

    def status(self) -> Mapping[str, Any]:
        return {"ready": True, "pipelines": {}, "components": []}


def nop_host() -> NopHost:
    return NopHost()


def nop_settings(component_id: str = "nop", kind: Kind = Kind.PROCESSOR, signal: Signal | None = Signal.TRACES,
                 pipeline: str = "", telemetry: Telemetry | None = None) -> Settings:
    cid = ComponentID.parse(component_id)
    tel = telemetry or Telemetry(process_metrics=False)
    pipeline = pipeline or (signal.value if signal and kind is Kind.PROCESSOR else "")
    return Settings(id=cid, kind=kind, telemetry=tel, signal=signal, pipeline=pipeline,
                    logger=component_logger(kind.value, str(cid), pipeline, signal.value if signal else ""))


class FakeClock:
    """A `pipeline.clock.Clock` whose time moves only when the test calls `advance()`.

    Components under test wait on it as on the system clock; the test sees every
    delay they asked for (`waits`, in order), learns without polling that
    something is blocked on it (`await clock.wait_for_waiters(n)`), and ends those
    waits by moving time (`advance`). So a retry schedule or an expiry of minutes
    is checked exactly, in microseconds, with no sleep.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.waits: list[float] = []
        self._timers: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def wait(self, delay: float, event: asyncio.Event | None = None) -> bool:
        """Like `SystemClock.wait`: True at once when `event` is or becomes set, False when `delay` has passed."""
        self.waits.append(delay)
        if event is not None and event.is_set():
            return True
        loop = asyncio.get_running_loop()
        timer: asyncio.Future[None] = loop.create_future()
        entry = (self.now + max(delay, 0.0), timer)
        if delay <= 0:
            timer.set_result(None)
        self._timers.append(entry)
        self._changed.set()
        watcher = loop.create_task(event.wait()) if event is not None else None
        try:
            if watcher is None:
                await timer
                return False
            await asyncio.wait((timer, watcher), return_when=asyncio.FIRST_COMPLETED)
            return watcher.done() and not watcher.cancelled()
        finally:
            self._timers.remove(entry)
            timer.cancel()
            if watcher is not None:
                watcher.cancel()
            self._changed.set()

    def advance(self, seconds: float) -> None:
        """Move time forward; every wait whose delay has now passed returns (when the loop next runs it)."""
        self.now += seconds
        for deadline, timer in self._timers:
            if deadline <= self.now and not timer.done():
                timer.set_result(None)

    @property
    def waiting(self) -> int:
        """How many waits are blocked on this clock right now."""
        return sum(not timer.done() for _, timer in self._timers)

    async def wait_for_waiters(self, n: int = 1, timeout: float = 5.0) -> None:
        """Return once at least `n` waits are blocked on this clock (woken by each change, never polling)."""
        async with asyncio.timeout(timeout):
            while self.waiting < n:
                self._changed.clear()
                await self._changed.wait()


def kv(key: str, value: object) -> KeyValue:
    """A KeyValue attribute from a Python value."""
    return KeyValue(key=key, value=any_value(value))


def any_value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, dict):
        av = AnyValue()
        av.kvlist_value.values.extend(kv(k, v) for k, v in value.items())
        return av
    if isinstance(value, (list, tuple)):
        av = AnyValue()
        av.array_value.values.extend(any_value(v) for v in value)
        return av
    return AnyValue(string_value=str(value))


def make_traces(spans: int = 10, *, service: str = "agent", traces: int = 1,
                attrs: dict[str, object] | None = None, name: str = "span") -> ExportRequest:
    """A traces request with `spans` spans spread over `traces` trace ids (deterministic ids)."""
    req = Signal.TRACES.request_type()
    rs = req.resource_spans.add()  # type: ignore[union-attr]
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    for i in range(spans):
        t = i % max(traces, 1)
        s = ss.spans.add()
        s.trace_id = (t + 1).to_bytes(16, "big")
        s.span_id = (i + 1).to_bytes(8, "big")
        s.name = f"{name}-{i}"
        s.kind = Span.SPAN_KIND_INTERNAL
        s.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        s.end_time_unix_nano = s.start_time_unix_nano + 1000
        for k, v in (attrs or {}).items():
            s.attributes.append(kv(k, v))
    return req


def make_metrics(points: int = 10, *, name: str = "requests", service: str = "agent") -> ExportRequest:
    """A metrics request with one monotonic cumulative sum holding `points` data points."""
    req = Signal.METRICS.request_type()
    rm = req.resource_metrics.add()  # type: ignore[union-attr]
    rm.resource.attributes.append(kv("service.name", service))
    sm = rm.scope_metrics.add()
    sm.scope.name = "test"
    m = sm.metrics.add()
    m.name = name
    m.sum.is_monotonic = True
    m.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    for i in range(points):
        dp = m.sum.data_points.add()
        dp.as_int = i + 1
        dp.time_unix_nano = 1_700_000_000_000_000_000
        dp.attributes.append(kv("series", str(i)))
    return req


def make_logs(records: int = 10, *, service: str = "agent", body: str = "hello") -> ExportRequest:
    req = Signal.LOGS.request_type()
    rl = req.resource_logs.add()  # type: ignore[union-attr]
    rl.resource.attributes.append(kv("service.name", service))
    sl = rl.scope_logs.add()
    sl.scope.name = "test"
    for i in range(records):
        r = sl.log_records.add()
        r.time_unix_nano = 1_700_000_000_000_000_000 + i
        r.severity_number = LogRecord().severity_number or 9
        r.severity_text = "INFO"
        r.body.string_value = f"{body} {i}"
    return req


def payload(signal: Signal, msg: ExportRequest | None = None, n: int = 10) -> Payload:
    if msg is None:
        makers: dict[Signal, Callable[[int], ExportRequest]] = {
            Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}
        msg = makers[signal](n)
    return Payload(signal, message=msg)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait for a condition that has no event to wait on (e.g. a counter in another component).

    Polls with zero-length yields plus a short backoff, bounded by `timeout`.
    """
    delay = 0.0
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(delay)
                delay = min(delay * 2 or 0.001, 0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


@contextlib.asynccontextmanager
async def running_service(yaml_text: str, factories: Mapping[Kind, Mapping[str, Factory]],
                          env: Mapping[str, str] | None = None, *,
                          admin_address: str = "127.0.0.1:0") -> AsyncIterator[Service]:
    """Run the whole daemon from a YAML string with `factories`; the admin server binds `admin_address`."""
    from pipeline.config.confmap import load_texts
    from pipeline.config.loader import build
    from pipeline.service import Service

    fmap = factories
    # `readers: []` so that a config in the Collector's current `readers` form takes the test's address too
    overlay = f"service: {{telemetry: {{metrics: {{address: '{admin_address}', readers: []}}}}}}"
    raw, issues = load_texts([("<test config>", yaml_text), ("<test overlay>", overlay)])
    cfg = build(raw, issues, fmap, env if env is not None else os.environ)
    svc = Service(cfg, fmap, telemetry=Telemetry(process_metrics=False))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.shutdown()


__all__ = [
    "FakeClock",
    "LogsSink",
    "MetricsSink",
    "NopHost",
    "PermanentError",
    "RetryableError",
    "Sink",
    "TracesSink",
    "any_value",
    "kv",
    "logging",
    "make_logs",
    "make_metrics",
    "make_traces",
    "nop_host",
    "nop_settings",
    "os",
    "payload",
    "running_service",
    "wait_until",
]


# -- protobuf fields written by hand: the odd encodings a client may send, for tests of the wire readers --

def varint(n: int) -> bytes:
    """The varint of `n`; a negative int64 as its 64-bit two's complement (ten bytes)."""
    return encode_varint(n & (2**64 - 1))


def ld(field: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(field << 3 | 2) + varint(len(data)) + data


def vi(field: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return varint(field << 3) + varint(value)


def fixed64(field: int, value: int) -> bytes:
    """A fixed64 field (wire type 1), little-endian."""
    return varint(field << 3 | 1) + (value & (2**64 - 1)).to_bytes(8, "little")


def fixed32(field: int, value: int) -> bytes:
    """A fixed32 field (wire type 5), little-endian."""
    return varint(field << 3 | 5) + (value & (2**32 - 1)).to_bytes(4, "little")
