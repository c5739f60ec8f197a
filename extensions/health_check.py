"""The `health_check` extension: the Collector's health endpoint on its own port (default localhost:13133).

Load balancers and orchestrators configured for the Collector probe
`GET <endpoint><path>`: 200 with `{"status": "Server available", "upSince":
..., "uptime": ...}` while otelpipe is ready, 503 with `Server not available`
while it starts or drains. It answers from the Service's readiness, the same
as the admin server's `/readyz` (which Kubernetes manifests should prefer).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiohttp import web

from extensions.httpserve import RouteServer
from pipeline.component import ExtensionFactory, Host, Listener, Settings, Stability
from pipeline.config.types import Issue
from pipeline.net.endpoint import Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseBodyConfig:
    """`response_body`: replaces the JSON body with these texts (the Collector's keys)."""

    healthy: str = ""
    unhealthy: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckConfig:
    endpoint: Endpoint = field(default_factory=lambda: Endpoint.listen("localhost:13133"))
    path: str = "/"
    response_body: ResponseBodyConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.endpoint, str):  # built in code with text; the decoder passes an Endpoint
            object.__setattr__(self, "endpoint", Endpoint.listen(self.endpoint))

    def validate(self) -> list[Issue]:
        return [] if self.path.startswith("/") else [Issue("path", f"must start with '/', e.g. '/{self.path}'")]

    def listeners(self) -> list[Listener]:
        return [Listener("tcp", self.endpoint, "endpoint")]


class HealthCheck:
    def __init__(self, settings: Settings, cfg: HealthCheckConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._host: Host | None = None
        self._since = time.time()
        self._server = RouteServer(cfg.endpoint, {cfg.path: self._check})
        self.endpoints: dict[str, str] = {}

    async def start(self, host: Host) -> None:
        self._host = host
        self._since = time.time()
        await self._server.start()
        self.endpoints = {"http": self._server.address}
        self.settings.logger.info("health check listening", extra={"endpoint": self._server.address,
                                                                   "path": self.cfg.path})

    async def shutdown(self) -> None:
        await self._server.stop()

    async def _check(self, _request: web.BaseRequest) -> web.Response:
        ready = self._host is not None and bool(self._host.status().get("ready"))
        body = self.cfg.response_body
        if body is not None and (body.healthy if ready else body.unhealthy):
            return web.Response(status=200 if ready else 503, text=body.healthy if ready else body.unhealthy)
        since = datetime.fromtimestamp(self._since, UTC)
        payload = {"status": "Server available" if ready else "Server not available",
                   "upSince": since.isoformat().replace("+00:00", "Z"),
                   "uptime": f"{time.time() - self._since:.3f}s"}
        return web.Response(status=200 if ready else 503, body=orjson.dumps(payload), content_type="application/json")


def create(settings: Settings, cfg: HealthCheckConfig) -> HealthCheck:
    return HealthCheck(settings, cfg)


FACTORY = ExtensionFactory(
    type="health_check",
    config_type=HealthCheckConfig,
    stability=Stability.BETA,
    create=create,
    description="The Collector's health endpoint (200 while ready, 503 otherwise) on its own port.",
)
