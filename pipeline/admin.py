"""The admin server (`service.telemetry.metrics.address`, default :8888).

`/metrics` serves otelpipe's own telemetry from the Service's registry,
`/healthz` says the process is alive, `/` is the status page (pipeline/statuspage.py), `/readyz`
is 503 until every pipeline has
started and again while draining (so Kubernetes stops routing to a pod that is
shutting down), and `/status` is JSON: pipelines, components and counters.

It runs on the same guarded low-level server as the OTLP/HTTP receiver
(`pipeline.net.server`): header and idle timeouts, and a small cap on
connections, so sockets left open against this port cannot use up the
process's file descriptors; its refusals are counted in
`otelpipe_admin_refused_connections_total{reason}`.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from pipeline.net.endpoint import Endpoint
from pipeline.net.server import GuardedServer, ServerTimeouts, auto_max_connections
from pipeline.statuspage import PAGE
from pipeline.telemetry import Telemetry

# Scrapers and probes need a handful of connections; the rest of the descriptors are the pipelines'.
ADMIN_MAX_CONNECTIONS = 64
_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class AdminServer:
    def __init__(self, address: Endpoint, telemetry: Telemetry, *, is_ready: Callable[[], bool],
                 status: Callable[[], dict[str, Any]], reload: Callable[[], Awaitable[Any]] | None = None) -> None:
        self._address = address
        self._telemetry = telemetry
        self._is_ready = is_ready
        self._status = status
        self._runner: web.ServerRunner | None = None
        self._started = time.time()
        self._routes: dict[str, _Handler] = {
            "/metrics": make_aiohttp_handler(telemetry.exposition),  # type: ignore[dict-item]
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/status": self._status_handler,
            "/": self._page,
        }
        self._reload = reload
        self._refused = telemetry.counter("admin_refused_connections")
        self.endpoints: dict[str, str] = {}

    async def start(self) -> None:
        ep = self._address
        server = GuardedServer(self._handle, max_connections=min(ADMIN_MAX_CONNECTIONS, auto_max_connections()),
                               timeouts=ServerTimeouts(), on_refused=lambda reason: self._refused.labels(reason).inc(),
                               access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, ep.host or None, ep.port, reuse_address=True)
        await site.start()
        bound = self._runner.addresses[0]
        self.endpoints = {"http": str(ep.with_port(bound[1]).local())}

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/-/reload":
            return await self._reload_handler(request)
        handler = self._routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="404: Not Found")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="405: Method Not Allowed", headers={"Allow": "GET, HEAD"})
        return await handler(request)

    async def _reload_handler(self, request: web.BaseRequest) -> web.Response:
        """`POST /-/reload` (Prometheus' spelling): re-read the config; 200 when running it, else 400/500 with why."""
        if request.method not in ("POST", "PUT"):
            return web.Response(status=405, text="405: Method Not Allowed: POST to reload",
                                headers={"Allow": "POST, PUT"})
        if self._reload is None:
            return web.json_response({"result": "failed", "problems": ["reload is not available"]}, status=501)
        outcome = await self._reload()
        status = 200 if outcome.ok else 400 if outcome.result == "invalid" else 500
        return web.json_response({"result": outcome.result, "config_hash": outcome.config_hash,
                                  "problems": outcome.problems}, status=status)

    async def _healthz(self, _req: web.BaseRequest) -> web.Response:
        return web.json_response({"status": "ok", "uptime_s": round(time.time() - self._started, 3)})

    async def _readyz(self, _req: web.BaseRequest) -> web.Response:
        if self._is_ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def _page(self, _req: web.BaseRequest) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _status_handler(self, _req: web.BaseRequest) -> web.Response:
        body = {**self._status(), "counters": self._telemetry.snapshot()}
        return web.Response(body=orjson.dumps(body, default=str), content_type="application/json")
