"""HTTPClient with `auth`: the authenticator extension's headers go on every request (issue 14)."""
from __future__ import annotations

from collections.abc import Mapping

import pytest
from aiohttp import web

from extensions.bearertokenauth import BearerTokenAuthConfig
from extensions.bearertokenauth import create as create_bearer
from pipeline.auth import AuthConfig, client_authenticator, server_authenticator
from pipeline.component import Component, ComponentID, Kind
from pipeline.config.types import Secret
from pipeline.errors import StartError
from pipeline.net.http import HTTPClient
from pipeline.testing import NopHost, nop_settings


class Host(NopHost):
    def __init__(self, **extensions: Component) -> None:
        super().__init__()
        self._ext = {ComponentID.parse(k): v for k, v in extensions.items()}

    def extensions(self) -> Mapping[ComponentID, Component]:
        return self._ext


class NotAnAuthenticator:
    async def start(self, host: object) -> None:
        return None

    async def shutdown(self) -> None:
        return None


async def test_every_request_carries_the_extensions_header() -> None:
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/logs", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ext = create_bearer(nop_settings("bearertokenauth", Kind.EXTENSION, None),
                        BearerTokenAuthConfig(token=Secret("abc")))
    client = HTTPClient(auth=AuthConfig(authenticator="bearertokenauth"))
    try:
        await client.start(Host(bearertokenauth=ext))
        for _ in range(2):
            await client.post(f"http://127.0.0.1:{port}/v1/logs", b"{}", "application/json")
    finally:
        await client.close()
        await runner.cleanup()
    assert seen == ["Bearer abc", "Bearer abc"]


async def test_auth_needs_the_host_and_a_running_authenticator() -> None:
    with pytest.raises(StartError, match="needs the host"):
        await HTTPClient(auth=AuthConfig(authenticator="bearertokenauth")).start()
    with pytest.raises(StartError, match="is not running"):
        await HTTPClient(auth=AuthConfig(authenticator="bearertokenauth")).start(Host())
    host = Host(health_check=NotAnAuthenticator())
    with pytest.raises(StartError, match="cannot add credentials"):
        client_authenticator(host, AuthConfig(authenticator="health_check"))
    with pytest.raises(StartError, match="cannot authenticate incoming"):
        server_authenticator(host, AuthConfig(authenticator="health_check"))
    assert server_authenticator(host, None) is None
