"""The admin server (`service.telemetry.metrics.address`, default :8888).

`/metrics` serves otelpipe's own telemetry from the Service's registry,
`/healthz` says the process is alive, `/readyz` is 503 until every pipeline has
started and again while draining (so Kubernetes stops routing to a pod that is
shutting down), and `/status` is JSON: pipelines, components and counters.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from pipeline.netaddr import format_endpoint, parse_endpoint
from pipeline.telemetry import Telemetry


class AdminServer:
    def __init__(self, address: str, telemetry: Telemetry, *, is_ready: Callable[[], bool],
                 status: Callable[[], dict[str, Any]]) -> None:
        self._address = address
        self._telemetry = telemetry
        self._is_ready = is_ready
        self._status = status
        self._runner: web.AppRunner | None = None
        self._started = time.time()
        self.endpoints: dict[str, str] = {}

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self._telemetry.registry))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_handler)
        return app

    async def start(self) -> None:
        host, port = parse_endpoint(self._address)
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or None, port, reuse_address=True)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        bound = sock.getsockname()
        self.endpoints = {"http": format_endpoint("127.0.0.1" if host in ("", "0.0.0.0") else host, bound[1])}

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _req: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime_s": round(time.time() - self._started, 3)})

    async def _readyz(self, _req: web.Request) -> web.Response:
        if self._is_ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def _status_handler(self, _req: web.Request) -> web.Response:
        body = {**self._status(), "counters": self._telemetry.snapshot()}
        return web.Response(body=orjson.dumps(body, default=str), content_type="application/json")
