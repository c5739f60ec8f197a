"""The Service: owns the graph, the admin server, telemetry, readiness and shutdown.

`run()` builds the graph, starts it (exporters → processors → receivers), marks
itself ready and waits for a stop request. Shutdown runs under one
`service.shutdown_timeout` budget: `/readyz` turns 503, receivers stop,
processors flush, exporters drain; whatever is still running at the deadline
is logged by id and cancelled.

A reload (SIGHUP, `POST /-/reload`, `--watch-config`) re-reads and validates
the config; an invalid one is logged and counted and the running pipelines
carry on. A valid one is switched to make-before-break: components whose
settings did not change are taken over running (`pipeline.reload`), the new
ones start while the old graph still serves, reused components are re-pointed
in one synchronous step, replaced exporters hand their queues to their
successors, and only then does the old graph's remainder stop, in the
background. A new component that needs a port an old one holds (a receiver
whose settings changed) waits only for that one to stop.
"""
from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.activity import ActivitySampler, RecentErrors
from pipeline.admin import AdminServer
from pipeline.component import Component, ComponentID, Factory, Kind
from pipeline.config.schema import Config
from pipeline.errors import ConfigError
from pipeline.exporterhelper import ExporterHelper
from pipeline.extensions import Extensions
from pipeline.graph import Graph, Node
from pipeline.reload import ReloadPlan, config_digest, conflict
from pipeline.telemetry import Telemetry
from pipeline.version import VERSION

log = logging.getLogger("otelpipe.service")


ReloadResult = Literal["ok", "unchanged", "invalid", "failed"]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one reload did: `result` is the `otelpipe_config_reloads_total` label."""

    result: ReloadResult
    config_hash: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "unchanged")


class _Switching:
    """The Service as a reload's new components see it while they start: the new config's extensions
    (a changed storage or authenticator is the successor's to use), then, once switched, the Service's."""

    def __init__(self, service: Service, extensions: Extensions) -> None:
        self._service = service
        self._extensions = extensions
        self.switched = False

    def report_fatal(self, exc: BaseException) -> None:
        self._service.report_fatal(exc)

    def extensions(self) -> Mapping[ComponentID, Component]:
        return self._service.extensions() if self.switched else self._extensions.by_id()

    def status(self) -> Mapping[str, Any]:
        return self._service.status()


class Service:
    def __init__(self, config: Config, factories: Mapping[Kind, Mapping[str, Factory]],
                 *, reload_config: Callable[[], Config] | None = None, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.factories = factories
        self.telemetry = telemetry or Telemetry(level=config.service.telemetry.metrics.level)
        self.telemetry.gauge("build_info").labels(VERSION, platform.python_version()).set(1)
        self._reload_config = reload_config
        self.graph: Graph | None = None
        self._extensions: Extensions | None = None
        self.admin: AdminServer | None = None
        self.ready = False
        self.draining = False
        self.fatal: BaseException | None = None
        self._stop = asyncio.Event()
        self._activity = ActivitySampler(self.telemetry)
        self._recent_errors = RecentErrors()
        self._reload = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._teardowns: set[asyncio.Task[None]] = set()
        self._started_at = time.time()
        self.config_hash = config_digest(config)

    # --- Host -----------------------------------------------------------------
    def report_fatal(self, exc: BaseException) -> None:
        log.error("component reported a fatal error; shutting down", extra={"error": str(exc)})
        self.fatal = exc
        self._stop.set()

    def extensions(self) -> Mapping[ComponentID, Component]:
        return self._extensions.by_id() if self._extensions is not None else {}

    # --- control --------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def start(self) -> None:
        """Admin first (so probes see 503 while starting), then the graph, then ready."""
        logging.getLogger("otelpipe").addHandler(self._recent_errors)
        self.admin = AdminServer(self.config.service.telemetry.metrics.address, self.telemetry,
                                 is_ready=lambda: self.ready and not self.draining, status=self.status,
                                 reload=self.reload if self._reload_config is not None else None)
        await self.admin.start()
        self._activity.start()
        try:
            await self._start_graph(self.config)
        except BaseException:
            await self.admin.shutdown()
            raise
        self.ready = True
        log.info("otelpipe is ready", extra={"pipelines": [str(p) for p in self.config.pipelines],
                                              "admin": self.admin.endpoints.get("http"),
                                              "endpoints": self.graph.endpoints() if self.graph else {}})

    async def _start_graph(self, config: Config) -> None:
        """Extensions first (in `service.extensions` order), then the pipelines."""
        extensions = Extensions(config, self.factories, self.telemetry)
        graph = Graph(config, self.factories, self.telemetry)
        graph.build()
        self._extensions, self.graph = extensions, graph
        try:
            await extensions.start(self)
            await graph.start(self)
        except BaseException:
            await self._stop_graph(graph, config.service.shutdown_timeout)
            raise

    async def run(self) -> None:
        """Start, serve until asked to stop (reloading on request), then shut down."""
        await self.start()
        try:
            while not self._stop.is_set():
                stop_wait = asyncio.ensure_future(self._stop.wait())
                reload_wait = asyncio.ensure_future(self._reload.wait())
                try:
                    await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop_wait.cancel()
                    reload_wait.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self.reload()
        finally:
            await self.shutdown()

    async def reload(self) -> ReloadOutcome:
        """Re-read the config and switch to it; an invalid or failing one leaves the running pipelines as they are."""
        async with self._reload_lock:
            outcome = await self._reload_once()
        self.telemetry.config_reloads.labels(outcome.result).inc()
        return outcome

    async def _reload_once(self) -> ReloadOutcome:
        if self._reload_config is None or self.draining:
            return ReloadOutcome("failed", self.config_hash, ["this otelpipe was not started from config files"
                                                              if self._reload_config is None else "shutting down"])
        try:
            new = await asyncio.to_thread(self._reload_config)
        except ConfigError as e:
            problems = [str(i) for i in e.issues if not i.warning]
            log.error("config reload rejected; keeping the running config", extra={"problems": problems})
            return ReloadOutcome("invalid", self.config_hash, problems)
        plan = ReloadPlan(self.config, new)
        if plan.unchanged():
            log.info("config reload: nothing changed", extra={"config_hash": self.config_hash})
            return ReloadOutcome("unchanged", self.config_hash)
        began = time.monotonic()
        try:
            await self._switch(plan)
        except Exception as e:
            log.error("new config failed to start; keeping the running config", extra={"error": str(e)})
            try:
                await self._switch(ReloadPlan(self.config, self.config), restoring=True)
            except Exception as again:
                self.report_fatal(again)
            return ReloadOutcome("failed", self.config_hash, [str(e)])
        self.config, self.config_hash = new, config_digest(new)
        log.info("config reloaded", extra={"config_hash": self.config_hash,
                                           "switch_ms": round((time.monotonic() - began) * 1000, 1),
                                           "kept": sum(n.reused for n in self.graph.start_order()) if self.graph
                                           else 0})
        return ReloadOutcome("ok", self.config_hash)

    async def _switch(self, plan: ReloadPlan, *, restoring: bool = False) -> None:
        """Make before break: start what is new, re-point what is kept, hand queues over, then stop the rest.

        `restoring` re-applies the running config after a failed switch: every component of
        the old graph still running is kept, and the ones the failed attempt stopped are built again.
        """
        old_graph, old_ext = self.graph, self._extensions
        assert old_graph is not None and old_ext is not None
        new = plan.new
        ext = Extensions(new, self.factories, self.telemetry, previous=old_ext,
                         reusable=lambda cid: restoring or cid not in plan.changed_extensions)
        graph = Graph(new, self.factories, self.telemetry)
        graph.build(previous=old_graph, reusable=(lambda _k, _c: True) if restoring else plan.same_settings)
        graph.takeover_states(old_graph.handover_states())  # alert state and the like (see CarriesState)
        keep = graph.component_set()
        leaving = [n for n in reversed(old_graph.start_order()) if id(n.component) not in keep]
        by_key = {n.key: n for n in leaving}
        started: list[Node] = []
        budget = new.service.shutdown_timeout
        try:
            # Extensions a new one needs the port of stop first; then the new extensions start.
            clash = {cid for cid in old_ext.by_id() if old_ext.state(cid) == "running"
                     and id(old_ext.by_id()[cid]) not in ext.component_set()
                     and any(conflict(plan.old.extensions.get(cid), new.extensions.get(n)) for n in ext.by_id())}
            await old_ext.shutdown(only=clash)
            host = _Switching(self, ext)
            await ext.start(host)
            for node in graph.exporters:
                predecessor = by_key.get(node.key)
                if node.reused:
                    continue
                if predecessor is not None and (conflict(plan.old.exporters.get(predecessor.id),
                                                         new.exporters.get(node.id))
                                                or predecessor.component.shares_storage(node.component)):
                    predecessor.component.hand_over(node.component)
                    await self._bounded(old_graph.stop_nodes([predecessor]), budget)
                started.append(node)
                await graph.start(host, [node])
            for node in graph.middle:
                if not node.reused:
                    started.append(node)
                    await graph.start(host, [node])
            clashing = [n for n in leaving if n.kind is Kind.RECEIVER and any(
                conflict(plan.old.receivers.get(n.id), new.receivers.get(r.id)) for r in graph.receivers)]
            await self._bounded(old_graph.stop_nodes(clashing), budget)
            for node in graph.receivers:
                if not node.reused:
                    started.append(node)
                    await graph.start(host, [node])
        except BaseException:
            await self._bounded(graph.stop_nodes(list(reversed(started))), budget)
            await ext.shutdown(keep=old_ext.component_set())
            raise
        # The switch: synchronous, so no payload sees half of it.
        graph.switch()
        host.switched = True
        for node in leaving:
            successor = next((n for n in graph.exporters if n.key == node.key and not n.reused), None)
            if successor is not None and node.state == "running":
                node.component.hand_over(successor.component)
        self.graph, self._extensions = graph, ext
        keep_ext = ext.component_set()
        self._in_background(self._bounded(old_graph.stop_nodes(leaving), budget),
                            lambda: old_ext.shutdown(keep=keep_ext))

    def _in_background(self, teardown: Awaitable[None], then: Callable[[], Awaitable[None]]) -> None:
        """Stop the old graph's leftovers without holding up the switch; `shutdown()` waits for them."""
        async def run() -> None:
            await teardown
            await then()

        task = asyncio.create_task(run(), name="otelpipe-reload-teardown")
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)

    async def settled(self) -> None:
        """Wait until what earlier reloads replaced has stopped."""
        while self._teardowns:
            await asyncio.gather(*self._teardowns, return_exceptions=True)

    @staticmethod
    async def _bounded(work: Awaitable[None], budget: float) -> None:
        """`work` within `budget` seconds; past it, what is still stopping is cancelled (and counts its losses)."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            log.error("reload: old components did not stop within shutdown_timeout; cancelling them",
                      extra={"shutdown_timeout_s": budget})
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        elif task.exception() is not None:
            log.error("error while stopping replaced components", exc_info=task.exception())

    async def _stop_graph(self, graph: Graph, budget: float) -> None:
        """The pipelines, then the extensions they may use, within one deadline."""
        extensions = self._extensions

        async def stop() -> None:
            await graph.shutdown()
            if extensions is not None:
                await extensions.shutdown()

        task = asyncio.ensure_future(stop())
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            still = graph.still_running() + (extensions.still_running() if extensions is not None else [])
            log.error("shutdown deadline reached; cancelling components still running",
                      extra={"still_running": still, "shutdown_timeout_s": budget})
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        elif task.exception() is not None:
            log.error("shutdown error", exc_info=task.exception())

    async def shutdown(self) -> None:
        self.draining = True
        self.ready = False
        log.info("shutting down: draining pipelines",
                 extra={"shutdown_timeout_s": self.config.service.shutdown_timeout})
        await self.settled()
        if self.graph is not None:
            await self._stop_graph(self.graph, self.config.service.shutdown_timeout)
        await self._activity.stop()
        if self.admin is not None:
            await self.admin.shutdown()
        log.info("otelpipe stopped")
        logging.getLogger("otelpipe").removeHandler(self._recent_errors)

    # --- introspection --------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Pipelines, components (state, endpoints, what each did: totals, rate, last errors), extensions."""
        graph = self.graph.describe() if self.graph else {"pipelines": {}, "components": []}
        activity = self._activity.activity()
        for comp in graph["components"]:
            key = (comp["kind"], comp["id"], comp["pipeline"] or "")
            comp["activity"] = activity.get(key) or activity.get((comp["kind"], comp["id"], "")) or {"rate": 0.0}
            comp["last_errors"] = self._recent_errors.last(comp["kind"], comp["id"])
        if self._extensions is not None:
            graph["extensions"] = self._extensions.describe()
        return {"version": VERSION, "ready": self.ready and not self.draining, "draining": self.draining,
                "config_hash": self.config_hash,
                "uptime_s": round(time.time() - self._started_at, 3),
                "config_sources": list(self.config.sources), **graph}

    def component(self, kind: str, component_id: str) -> Any:
        """The running component (for exporters: the exporter inside its helper)."""
        assert self.graph is not None
        k = Kind(kind)
        if k is Kind.EXTENSION:
            found = self.extensions().get(ComponentID.parse(component_id))
            if found is None:
                raise KeyError(f"no running extension {component_id!r}")
            return found
        nodes = {Kind.RECEIVER: self.graph.receivers, Kind.PROCESSOR: self.graph.processors,
                 Kind.EXPORTER: self.graph.exporters, Kind.CONNECTOR: self.graph.connectors}[k]
        for n in nodes:
            if str(n.id) == component_id:
                return n.component.exporter if isinstance(n.component, ExporterHelper) else n.component
        raise KeyError(f"no running {kind} {component_id!r}")

    def endpoint(self, kind: str, component_id: str, name: str) -> str:
        """The actual bound address ("127.0.0.1:PORT") of a listening component."""
        if kind == "admin":
            assert self.admin is not None
            return self.admin.endpoints[name]
        comp = self.component(kind, component_id)
        return comp.endpoints[name]  # type: ignore[no-any-return]
