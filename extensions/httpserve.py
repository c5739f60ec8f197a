"""The small HTTP server an extension runs on its own `endpoint` (health_check, pprof, zpages).

It is the guarded low-level server the admin server uses (`pipeline.net.server`:
header and idle timeouts, a small connection cap), so an extension's port can
never be used to exhaust the process's file descriptors.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from pipeline.net.endpoint import Endpoint
from pipeline.net.server import GuardedServer, ServerTimeouts

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
MAX_CONNECTIONS = 32


class RouteServer:
    """GET/HEAD routes on one endpoint; `address` is the bound `host:port` after start."""

    def __init__(self, endpoint: Endpoint, routes: Mapping[str, Handler]) -> None:
        self._endpoint = endpoint
        self._routes = dict(routes)
        self._runner: web.ServerRunner | None = None
        self.address = ""

    async def start(self) -> None:
        server = GuardedServer(self._handle, max_connections=MAX_CONNECTIONS, timeouts=ServerTimeouts(),
                               on_refused=lambda _reason: None, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._endpoint.host or None, self._endpoint.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.address = str(self._endpoint.with_port(runner.addresses[0][1]).local())

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self._routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="404: Not Found")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="405: Method Not Allowed", headers={"Allow": "GET, HEAD"})
        return await handler(request)
