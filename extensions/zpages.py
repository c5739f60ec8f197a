"""The `zpages` extension: the Collector's in-process debug pages (default localhost:55679).

Operators who bookmark `/debug/servicez` and `/debug/pipelinez` get the status
page (pipelines as a graph, per-component rates, refusals, drops and last
errors) and `/debug/extensionz` the same; `/debug/status` is its JSON, the same
document as the admin server's `/status` (the page reads it from the URL next to
itself). `/debug/featurez` lists feature gates: otelpipe has none. `/debug/tracez`
and `/debug/rpcz` answer 501 with the reason: otelpipe does not trace itself, so
there are no in-process spans to show.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from aiohttp import web

from extensions.httpserve import RouteServer
from pipeline.component import ExtensionFactory, Host, Listener, Settings, Stability
from pipeline.net.endpoint import Endpoint
from pipeline.statuspage import PAGE

UNAVAILABLE = ("otelpipe does not trace its own requests, so there are no in-process spans for {page}; "
               "the status page is at /debug/servicez\n")


@dataclass(frozen=True, slots=True, kw_only=True)
class ZPagesConfig:
    endpoint: Endpoint = field(default_factory=lambda: Endpoint.listen("localhost:55679"))

    def __post_init__(self) -> None:
        if isinstance(self.endpoint, str):  # built in code with text; the decoder passes an Endpoint
            object.__setattr__(self, "endpoint", Endpoint.listen(self.endpoint))

    def listeners(self) -> list[Listener]:
        return [Listener("tcp", self.endpoint, "endpoint")]


class ZPages:
    def __init__(self, settings: Settings, cfg: ZPagesConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._host: Host | None = None
        self._server = RouteServer(cfg.endpoint, {
            "/debug/servicez": self._page, "/debug/pipelinez": self._page, "/debug/extensionz": self._page,
            "/debug/status": self._status, "/debug/featurez": self._featurez,
            "/debug/tracez": self._unavailable, "/debug/rpcz": self._unavailable})
        self.endpoints: dict[str, str] = {}

    async def start(self, host: Host) -> None:
        self._host = host
        await self._server.start()
        self.endpoints = {"http": self._server.address}
        self.settings.logger.info("zpages listening", extra={"endpoint": self._server.address})

    async def shutdown(self) -> None:
        await self._server.stop()

    async def _page(self, _request: web.BaseRequest) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _status(self, _request: web.BaseRequest) -> web.Response:
        body = dict(self._host.status()) if self._host is not None else {}
        return web.Response(body=orjson.dumps(body, default=str), content_type="application/json")

    async def _featurez(self, _request: web.BaseRequest) -> web.Response:
        return web.Response(text="otelpipe has no feature gates\n")

    async def _unavailable(self, request: web.BaseRequest) -> web.Response:
        return web.Response(status=501, text=UNAVAILABLE.format(page=request.path))


def create(settings: Settings, cfg: ZPagesConfig) -> ZPages:
    return ZPages(settings, cfg)


FACTORY = ExtensionFactory(
    type="zpages",
    config_type=ZPagesConfig,
    stability=Stability.BETA,
    create=create,
    description="The Collector's /debug/servicez and /debug/pipelinez pages, served from otelpipe's status page.",
)
