"""The Service: owns the graph, the admin server, telemetry, readiness and shutdown.

`run()` builds the graph, starts it (exporters → processors → receivers), marks
itself ready and waits for a stop request. Shutdown runs under one
`service.shutdown_timeout` budget: `/readyz` turns 503, receivers stop,
processors flush, exporters drain; whatever is still running at the deadline
is logged by id and cancelled. A reload (SIGHUP) swaps in a new graph built
from re-read config, keeping the old one when the new config is invalid.
"""
from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.activity import ActivitySampler, RecentErrors
from pipeline.admin import AdminServer
from pipeline.component import Component, ComponentID, Factory, Kind
from pipeline.config.schema import Config
from pipeline.errors import ConfigError
from pipeline.exporterhelper import ExporterHelper
from pipeline.extensions import Extensions
from pipeline.graph import Graph
from pipeline.telemetry import Telemetry
from pipeline.version import VERSION

log = logging.getLogger("otelpipe.service")


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
        self._started_at = time.time()

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
                                 is_ready=lambda: self.ready and not self.draining, status=self.status)
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

    async def reload(self) -> bool:
        """Re-read the config; on success swap graphs, else keep running the old one."""
        if self._reload_config is None:
            return False
        try:
            new = self._reload_config()
        except ConfigError as e:
            self.telemetry.config_reloads.labels("invalid").inc()
            log.error("config reload rejected; keeping the running config",
                      extra={"problems": [str(i) for i in e.issues]})
            return False
        log.info("reloading config")
        self.ready = False
        if self.graph is not None:
            await self._stop_graph(self.graph, self.config.service.shutdown_timeout)
        try:
            await self._start_graph(new)
        except Exception as e:
            self.telemetry.config_reloads.labels("failed").inc()
            log.error("new config failed to start; restoring the previous one", extra={"error": str(e)})
            await self._start_graph(self.config)
            self.ready = True
            return False
        self.config = new
        self.ready = True
        self.telemetry.config_reloads.labels("ok").inc()
        return True

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
