"""The `loadbalancing` exporter: each routing key's data to one backend, each backend behind its own queue.

Every backend is the `otlp` exporter (`exporters/otlp/grpc.py`) inside its own exporter helper
(`pipeline.exporterhelper`: queue → retry → timeout), built from `protocol.otlp` with the
backend's endpoint. `push` cuts a request into one request per backend (`routing.py`, from
the wire bytes) and hands each share to its backend's queue, all or nothing: when any of
those queues is full, none of them takes anything and the caller is told to back off
(`QueueFullError`), so a retried request is never delivered twice.

A backend that is down keeps its share in its queue and retries it with backoff. When the
resolver drops it, it is retired: the ring no longer routes to it, its retry waits end at
once, and its queue drains through the load balancer again, so every payload it still held
is routed anew over the backends that remain (`otelpipe_loadbalancer_rerouted_*`) instead of
being lost with it. Ten minutes after it has handed everything on, its series leave
`/metrics` (pod IPs come and go; their series must not pile up). Until then its
`exporter_sent_*` series (`exporter="loadbalancing/<endpoint>"`) include the rerouted items,
which the backend that delivers them counts again.

A reload that changes the load balancer's settings (a static list without a gateway, say) starts
its successor before this one stops; this one then retires every backend it has, so what their
queues and retries hold is routed over the successor's backends, not left waiting for a backend
the new config dropped.

Self-telemetry (the Collector's `otelcol_loadbalancer_*`, plus items per backend):
`otelpipe_loadbalancer_num_resolutions_total{resolver,success}`,
`otelpipe_loadbalancer_num_backends{resolver}`, `otelpipe_loadbalancer_num_backend_updates_total`,
`otelpipe_loadbalancer_backend_{spans,metric_points,log_records}_total{endpoint}` and
`otelpipe_loadbalancer_rerouted_..._total`; each backend's queue, sends and failures are the
standard exporter series under `exporter="loadbalancing/<endpoint>"` (the Collector's
sub-exporter naming, `<name>_<endpoint>` for a named load balancer).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client.metrics import MetricWrapperBase

from exporters.loadbalancing.config import BackendOTLPConfig, LoadBalancingConfig
from exporters.loadbalancing.resolver import DNSResolver, Lookup, Resolver, StaticResolver
from exporters.loadbalancing.ring import Ring
from exporters.loadbalancing.routing import Splitter, splitter
from exporters.otlp.grpc import OTLPExporter
from pipeline.clock import Clock
from pipeline.component import ComponentID, Host, Settings
from pipeline.errors import PermanentError, QueueFullError, RetryableError
from pipeline.exporterhelper import ExporterHelper
from pipeline.exporterhelper.errors import describe
from pipeline.logutil import RateLimitedLog, component_logger
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.telemetry.catalog import spec

RESOLUTIONS = "loadbalancer_num_resolutions"
BACKENDS = "loadbalancer_num_backends"
UPDATES = "loadbalancer_num_backend_updates"
ROUTED = {s: f"loadbalancer_backend_{s.item_name}" for s in Signal}
REROUTED = {s: f"loadbalancer_rerouted_{s.item_name}" for s in Signal}
#: How long a removed backend's series stay after it has handed everything on (several scrape intervals).
FORGET_AFTER = 600.0
# The standard series an exporter helper records under its `exporter` label (forgotten with a backend);
# the load balancers of other signals have backends of the same id, told apart by data_type or item name.
_HELPER_METRICS = {s: ("exporter_queue_size", "exporter_queue_capacity", "exporter_send_duration_seconds",
                       *(f"exporter_{kind}_{s.item_name}" for kind in ("sent", "send_failed", "enqueue_failed")))
                   for s in Signal}


class _RetireClock:
    """A backend's clock: retry waits in progress end at once when the backend is retired.

    The wait then reports that its time is up (not a shutdown), so the retry wrapper tries
    again straight away, and that attempt routes the payload anew. Waits that start after
    the retirement are ordinary, so a payload that cannot be routed anywhere yet backs off.
    """

    __slots__ = ("_base", "_retired")

    def __init__(self, base: Clock, retired: asyncio.Event) -> None:
        self._base = base
        self._retired = retired

    def __call__(self) -> float:
        return self._base()

    async def wait(self, delay: float, event: asyncio.Event | None = None) -> bool:
        if self._retired.is_set():
            return await self._base.wait(delay, event)
        either = asyncio.Event()
        watchers = [asyncio.ensure_future(e.wait()) for e in (event, self._retired) if e is not None]
        for w in watchers:
            w.add_done_callback(lambda _: either.set())
        try:
            await self._base.wait(delay, either)
        finally:
            for w in watchers:
                w.cancel()
        return event is not None and event.is_set()


class _BackendPush:
    """The end of a backend's chain: send to the backend; once it is retired, route the payload anew."""

    def __init__(self, otlp: OTLPExporter, retired: asyncio.Event,
                 reroute: Callable[[Payload], Awaitable[None]]) -> None:
        self._otlp = otlp
        self._retired = retired
        self._reroute = reroute

    async def start(self, host: Host) -> None:
        await self._otlp.start(host)

    async def push(self, payload: Payload) -> None:
        if self._retired.is_set():
            await self._reroute(payload)
            return
        try:
            await self._otlp.push(payload)
        except PermanentError:
            raise
        except Exception:
            if not self._retired.is_set():
                raise
            await self._reroute(payload)  # retired while this attempt was in flight: no backoff first

    async def shutdown(self) -> None:
        await self._otlp.shutdown()


class Backend:
    """One backend: an `otlp` exporter to `endpoint` behind its own queue and retry."""

    def __init__(self, lb: Settings, endpoint: str, cfg: BackendOTLPConfig,
                 reroute: Callable[[Backend, Payload], Awaitable[None]]) -> None:
        assert lb.signal is not None
        self.endpoint = endpoint
        self.id = ComponentID(lb.id.type, f"{lb.id.name}_{endpoint}" if lb.id.name else endpoint)
        self.retired = asyncio.Event()
        self.rerouted = 0  # items routed again after it was removed (for the log line)
        settings = dataclasses.replace(
            lb, id=self.id, clock=_RetireClock(lb.clock, self.retired),
            logger=component_logger("exporter", str(self.id), signal=lb.signal.value))
        otlp_cfg = cfg.for_backend(endpoint)
        self._queue = otlp_cfg.sending_queue
        push = _BackendPush(OTLPExporter(settings, otlp_cfg), self.retired, lambda p: reroute(self, p))
        self.helper = ExporterHelper(settings, push, otlp_cfg)
        self.routed = lb.telemetry.counter(ROUTED[lb.signal]).labels(str(lb.id), endpoint)

    def has_room(self, payload: Payload) -> bool:
        """Whether the backend's queue takes `payload` now (an empty queue takes anything, as the queue does)."""
        used = self.helper.queue_size
        if used == 0:
            return True
        sizer = self._queue.sizer
        units = 1 if sizer == "requests" else payload.items if sizer == "items" else len(payload.serialize())
        return used + units <= self._queue.queue_size


@dataclasses.dataclass(frozen=True, slots=True)
class _Route:
    """The ring and its backends, swapped whole when the backends change (a push reads it once)."""

    ring: Ring
    backends: tuple[Backend, ...]


def _resolver(cfg: LoadBalancingConfig, lookup: Lookup | None) -> Resolver:
    if cfg.resolver.dns is not None:
        return DNSResolver(cfg.resolver.dns, lookup)
    assert cfg.resolver.static is not None  # validated: one of the two is set
    return StaticResolver(cfg.resolver.static)


class LoadBalancingExporter:
    """Routes each request's items by `routing_key` over the backends the resolver names.

    A reload that changes its settings (a new static list, say) starts a successor with the same
    id before this one stops. This one then retires every backend it has, so what their queues and
    retries still hold is routed over the successor's backends instead of waiting for a backend
    the new config may have dropped (`_RUNNING` is how it finds the successor).
    """

    def __init__(self, settings: Settings, cfg: LoadBalancingConfig, *, lookup: Lookup | None = None) -> None:
        assert settings.signal is not None
        self.settings = settings
        self.cfg = cfg
        self.signal: Signal = settings.signal
        self._split: Splitter | None = None
        self._key_error = ""
        try:
            self._split = splitter(self.signal, cfg.key_for(self.signal))
        except ValueError as e:
            self._key_error = str(e)  # raised by start(): the pipeline's signal is not known at validation
        self.resolver = _resolver(cfg, lookup)
        self._backends: dict[str, Backend] = {}
        self._route: _Route | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._host: Host | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._started = self._shut = False
        self._key = (id(settings.telemetry), str(settings.id), self.signal)
        self._successor: LoadBalancingExporter | None = None
        self._log = RateLimitedLog(settings.logger)
        self._last_error = "not resolved yet"
        tel = settings.telemetry
        labels = (str(settings.id), self.resolver.name)
        self._resolved_ok = tel.counter(RESOLUTIONS).labels(*labels, "true")
        self._resolved_failed = tel.counter(RESOLUTIONS).labels(*labels, "false")
        self._updates = tel.counter(UPDATES).labels(*labels)
        self._rerouted = tel.counter(REROUTED[self.signal]).labels(str(settings.id))
        tel.gauge(BACKENDS).labels(*labels).set_function(lambda: len(self._backends))

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends routed to now, sorted."""
        route = self._route
        return route.ring.endpoints if route is not None else ()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        if self._key_error:
            raise ValueError(self._key_error)
        if self._started or self._shut:
            return
        self._started = True
        self._host = host
        _RUNNING[self._key] = self
        await self.refresh()
        if self.resolver.interval is not None:
            self._task = asyncio.create_task(self._refresh_every(self.resolver.interval),
                                             name=f"{self.settings.id} resolver")

    async def _refresh_every(self, interval: float) -> None:
        while not await self.settings.clock.wait(interval, self._stop):
            await self.refresh()

    async def refresh(self) -> None:
        """Resolve the backends once and apply the difference (the resolver's loop calls it every interval)."""
        try:
            endpoints = await self.resolver.resolve()
        except Exception as e:  # DNS failure or timeout: keep routing over the backends we have
            self._resolved_failed.inc()
            self._last_error = describe(e)
            self._log.warning("could not resolve the backends; keeping the current ones", key="resolve",
                              extra={"resolver": self.resolver.name, "error": self._last_error,
                                     "backends": len(self._backends)})
            return
        self._resolved_ok.inc()
        if self._route is None or tuple(endpoints) != self._route.ring.endpoints:
            await self._apply(endpoints)

    async def _apply(self, endpoints: Sequence[str]) -> None:
        assert self._host is not None
        added: list[str] = []
        for ep in endpoints:
            if ep in self._backends:
                continue
            backend = Backend(self.settings, ep, self.cfg.protocol.otlp, self._reroute)
            try:
                await backend.helper.start(self._host)
            except Exception as e:  # e.g. an unreadable TLS file: the others still get their share
                self.settings.logger.error("could not start the exporter of a backend; leaving it out",
                                           extra={"endpoint": ep, "error": describe(e)})
                continue
            self._backends[ep] = backend
            added.append(ep)
        live = [ep for ep in endpoints if ep in self._backends]
        removed = [ep for ep in self._backends if ep not in live]
        if live:
            # ~10 ms at 3 backends, ~100 ms at 50, seconds past a few hundred: built off the event loop.
            ring = await asyncio.to_thread(Ring, live)
            if self._shut:
                return  # stopped meanwhile: shutdown() drains every backend in self._backends
            self._route = _Route(ring, tuple(self._backends[ep] for ep in ring.endpoints))
        for ep in removed:
            self._retire(self._backends.pop(ep))
        if added or removed:
            self._updates.inc()
            self.settings.logger.info("backends changed", extra={
                "resolver": self.resolver.name, "backends": list(self.backends), "added": added, "removed": removed})

    def _retire(self, backend: Backend) -> None:
        backend.retired.set()
        task = asyncio.create_task(self._drain(backend), name=f"{self.settings.id} retire {backend.endpoint}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain(self, backend: Backend) -> None:
        """Stop a removed backend; its queue drains through `_reroute`, so nothing it held is lost.

        Its series stay `FORGET_AFTER` longer, so scrapes see their final values (a failure included).
        """
        await backend.helper.shutdown()
        self.settings.logger.info("removed backend handed on everything it held",
                                  extra={"endpoint": backend.endpoint, "rerouted": backend.rerouted})
        if await self.settings.clock.wait(FORGET_AFTER, self._stop):
            return  # shutting down: the series go with the process
        if backend.endpoint not in self._backends:  # not back in the meantime under the same labels
            _forget(self.settings.telemetry, str(backend.id), (str(self.settings.id), backend.endpoint), self.signal)

    async def shutdown(self) -> None:
        """Stop resolving, let removed backends hand their data on, then drain every backend's queue."""
        if self._shut:
            return
        self._shut = True
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        successor = _RUNNING.get(self._key)
        if successor is self:
            del _RUNNING[self._key]
        elif successor is not None and successor._started and not successor._shut:
            self._hand_over(successor)
        live = list(self._backends.values())
        try:
            if self._retiring:
                await asyncio.gather(*self._retiring)
        except asyncio.CancelledError:
            # The shutdown deadline: every live backend still counts what it holds (reason "shutdown").
            stops = [asyncio.ensure_future(b.helper.shutdown()) for b in live]
            await asyncio.sleep(0)  # each reaches its queue's drain, where cancelling it counts the rest
            for t in stops:
                t.cancel()
            await asyncio.gather(*stops, return_exceptions=True)
            raise
        await asyncio.gather(*(b.helper.shutdown() for b in live))

    def _hand_over(self, successor: LoadBalancingExporter) -> None:
        """Replaced by a reload: every backend retires, so its data is routed over the successor's backends."""
        self._successor = successor
        self.settings.logger.info("replaced by a reload; handing what every backend holds to the new backends",
                                  extra={"backends": list(self._backends), "new_backends": list(successor.backends)})
        for ep in list(self._backends):
            self._retire(self._backends.pop(ep))
        self._route = None

    # -- data path --------------------------------------------------------------------------------

    async def push(self, payload: Payload) -> None:
        route = self._route
        if route is None:
            raise RetryableError(f"exporter {self.settings.id} has no backend to send to ({self.resolver.name} "
                                 f"resolver: {self._last_error})", retry_after=1.0)
        await self._deliver(payload, route)

    async def _reroute(self, origin: Backend, payload: Payload) -> None:
        """A retired backend's payload, routed again over the current backends (the successor's, after a reload)."""
        target = self._successor or self
        route = target._route
        if route is None:
            raise RetryableError(f"no backend to route the data of removed backend {origin.endpoint} to",
                                 retry_after=1.0)
        await target._deliver(payload, route)
        self._rerouted.inc(payload.items)
        origin.rerouted += payload.items

    async def _deliver(self, payload: Payload, route: _Route) -> None:
        """Each backend's share into its queue, all or nothing."""
        assert self._split is not None
        if not payload.items:
            return
        raw = payload.serialize()
        parts = self._split(raw, route.ring.table, len(route.backends))
        shares: list[tuple[Backend, Payload]] = []
        for i, (data, items) in parts.items():
            share = payload if data is raw else Payload(
                self.signal, raw=data, items=items, receiver=payload.receiver, arrival=payload.arrival,
                headers=payload.headers)
            shares.append((route.backends[i], share))
        for backend, share in shares:
            if not backend.has_room(share):
                raise QueueFullError(f"the sending queue of backend {backend.endpoint} is full", retry_after=1.0)
        # The first share goes through the queue's own bounds: if its byte bound (`sending_queue.max_size`,
        # not checked above) refuses it, nothing was taken and the request is refused. The others are then
        # queued without another look at the byte bound: refusing one of them would have the sender retry
        # the whole request and the backends that took theirs get them twice. Their queues are still
        # bounded by `queue_size` (checked above); queues with room take a payload without suspending, so
        # no other task runs in between.
        for n, (backend, share) in enumerate(shares):
            if n == 0:
                await backend.helper.consume(share)
            else:
                backend.helper.adopt([share])
            backend.routed.inc(share.items)


def _forget(tel: Telemetry, exporter_id: str, lb_labels: tuple[str, str], signal: Signal) -> None:
    """Remove a retired backend's series: the standard ones of its exporter id, and its items routed."""
    for name in _HELPER_METRICS[signal]:
        _remove(tel, name, lambda labels: labels.get("exporter") == exporter_id
                and labels.get("data_type", signal.value) == signal.value)
    exporter, endpoint = lb_labels
    _remove(tel, ROUTED[signal],
            lambda labels: labels.get("exporter") == exporter and labels.get("endpoint") == endpoint)


def _remove(tel: Telemetry, name: str, match: Callable[[dict[str, str]], bool]) -> None:
    declared = spec(name)
    metric = {"counter": tel.counter, "gauge": tel.gauge, "histogram": tel.histogram}[declared.kind](name)
    if not isinstance(metric, MetricWrapperBase):  # a level that does not record it
        return
    doomed = {tuple(s.labels[k] for k in declared.labels) for family in metric.collect() for s in family.samples
              if match(s.labels)}
    for values in doomed:
        with contextlib.suppress(KeyError):
            metric.remove(*values)


#: The started load balancer of each (telemetry, id, signal); a reload's successor registers over the one it replaces.
_RUNNING: weakref.WeakValueDictionary[tuple[int, str, Signal], LoadBalancingExporter] = weakref.WeakValueDictionary()
