"""HTTPClient against real aiohttp servers (and a raw TCP one) on 127.0.0.1: headers, gzip, statuses, Retry-After,
redirects, bounded responses, connection and TLS failures, lifecycle, and secrets kept out of every message."""
from __future__ import annotations

import asyncio
import base64
import email.utils
import gzip
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from pipeline.config.types import Secret
from pipeline.errors import PermanentError, RetryableError, TooLargeError
from pipeline.net.http import (
    MAX_RESPONSE_BYTES,
    RETRYABLE_STATUSES,
    HTTPClient,
    parse_retry_after,
)
from pipeline.net.tls import TLSClientConfig
from pipeline.net.useragent import USER_AGENT

Reply = Callable[[], web.Response]
SECRETS = ("s3cr3tpw", "K123", "t0k3n")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


@dataclass
class Seen:
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes  # as the server sees it: aiohttp undoes Content-Encoding
    wire_length: int  # Content-Length as sent


@dataclass
class Backend:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.path, request.query_string, request.headers, body,
                              int(request.headers.get("Content-Length", "-1"))))
        if self.script:
            return self.script.pop(0)()
        return web.Response(status=200)


async def serve(b: Backend, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", b.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    b.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
    return runner


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    runner = await serve(b)
    yield b
    await runner.cleanup()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Awaitable[HTTPClient]]]:
    started: list[HTTPClient] = []

    async def make(**kw: object) -> HTTPClient:
        client = HTTPClient(**kw)  # type: ignore[arg-type]
        await client.start()
        started.append(client)
        return client

    yield make
    for client in started:
        await client.close()


def reply(status: int, body: bytes = b"", content_type: str = "application/octet-stream",
          headers: dict[str, str] | None = None) -> Reply:
    return lambda: web.Response(status=status, body=body, headers={"Content-Type": content_type, **(headers or {})})


def with_secrets(url: str, path: str = "/push") -> str:
    scheme, _, hostport = url.partition("://")
    return f"{scheme}://user:s3cr3tpw@{hostport}{path}?api_key=K123"


# ---------------------------------------------------------------- requests

async def test_post_sends_base_and_request_headers_and_returns_the_response(backend: Backend, make_client) -> None:
    client = await make_client(headers={"X-Scope-OrgID": Secret("tenant-1"), "X-Plain": "p"})
    backend.script = [reply(202, b'{"ok":true}', "application/json", {"X-Request-Id": "r1"})]
    resp = await client.post(backend.url + "/loki/api/v1/push", b"payload", "application/x-protobuf",
                             {"X-Extra": "e"})
    assert (resp.status, resp.body, resp.content_type) == (202, b'{"ok":true}', "application/json")
    assert resp.headers["X-Request-Id"] == "r1"
    [req] = backend.seen
    assert (req.path, req.body) == ("/loki/api/v1/push", b"payload")
    h = req.headers
    assert h.getall("User-Agent") == [USER_AGENT] and USER_AGENT.startswith("otelpipe/")
    assert (h["X-Scope-OrgID"], h["X-Plain"], h["X-Extra"]) == ("tenant-1", "p", "e")
    assert h["Content-Type"] == "application/x-protobuf"
    assert "Content-Encoding" not in h


@pytest.mark.parametrize("name", ["User-Agent", "user-agent"])
async def test_a_configured_user_agent_wins_and_is_sent_once(backend: Backend, make_client, name: str) -> None:
    """As the Collector's confighttp does: configured headers are set over the client's own."""
    client = await make_client(headers={name: Secret("custom/1")})
    await client.post(backend.url, b"x", "text/plain")
    assert backend.seen[0].headers.getall("User-Agent") == ["custom/1"]


@pytest.mark.parametrize("size", [100, 4096, 300_000])  # below and above the inline threshold
async def test_gzip_above_and_below_the_inline_threshold(backend: Backend, make_client, size: int) -> None:
    client = await make_client(compression="gzip", compress_inline_max=1024)
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    resp = await client.post(backend.url, body, "application/x-protobuf")
    assert resp.status == 200
    [req] = backend.seen
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.body == body
    if size > 1000:
        assert req.wire_length < size  # compressed on the wire


async def test_compress_is_what_post_sends(make_client) -> None:
    gz = await make_client(compression="gzip", compress_inline_max=10)
    plain = await make_client(compression="none")
    data = b"abc" * 1000
    assert gzip.decompress(await gz.compress(data)) == data
    assert gzip.decompress(await gz.compress(data[:5])) == data[:5]
    assert await plain.compress(data) is data


# ---------------------------------------------------------------- statuses

@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUSES))
async def test_retryable_statuses(backend: Backend, make_client, status: int) -> None:
    client = await make_client()
    backend.script = [reply(status, b"try later", "text/plain")]
    with pytest.raises(RetryableError, match=f"returned HTTP {status}: try later") as err:
        await client.post(backend.url + "/v1/logs", b"x", "text/plain")
    assert err.value.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500, 501, 505, 507])
async def test_other_statuses_are_permanent(backend: Backend, make_client, status: int) -> None:
    client = await make_client()
    backend.script = [reply(status, orjson.dumps({"message": "bad labels"}), "application/json")]
    with pytest.raises(PermanentError, match=f"returned HTTP {status}: bad labels") as err:
        await client.post(backend.url, b"x", "text/plain")
    assert not isinstance(err.value, TooLargeError)


async def test_413_is_too_large(backend: Backend, make_client) -> None:
    client = await make_client()
    backend.script = [reply(413, b"body exceeds 5MB", "text/plain")]
    with pytest.raises(TooLargeError, match="HTTP 413: body exceeds 5MB") as err:
        await client.post(backend.url, b"x", "text/plain")
    assert isinstance(err.value, PermanentError)


async def test_retryable_statuses_are_the_callers_choice(backend: Backend, make_client) -> None:
    """OTLP/HTTP retries 429/502/503/504 only: a 408 is permanent there."""
    client = await make_client(retryable_statuses=frozenset({429, 502, 503, 504}))
    backend.script = [reply(408), reply(503)]
    with pytest.raises(PermanentError, match="HTTP 408"):
        await client.post(backend.url, b"x", "text/plain")
    with pytest.raises(RetryableError, match="HTTP 503"):
        await client.post(backend.url, b"x", "text/plain")


@pytest.mark.parametrize(("body", "content_type", "detail"), [
    (orjson.dumps({"message": "m1", "error": "e1"}), "application/json", ": m1"),
    (orjson.dumps({"error": "e1"}), "application/json; charset=utf-8", ": e1"),
    (orjson.dumps({"status": "invalid event", "errors": ["routing key missing", "bad severity"]}),
     "application/json", ": routing key missing; bad severity"),
    (orjson.dumps(["not", "an", "object"]), "application/json", ""),
    (b"{not json", "application/json", ""),
    (b"entry too far behind", "text/plain", ": entry too far behind"),
    (b"\x00\xff", "application/octet-stream", ""),
])
async def test_error_detail_from_the_body(backend: Backend, make_client, body: bytes, content_type: str,
                                          detail: str) -> None:
    client = await make_client()
    backend.script = [reply(400, body, content_type)]
    with pytest.raises(PermanentError) as err:
        await client.post(backend.url + "/p", b"x", "text/plain")
    assert str(err.value) == f"POST {backend.url}/p returned HTTP 400{detail}"


async def test_error_detail_can_be_the_callers(backend: Backend, make_client) -> None:
    client = await make_client(error_detail=lambda body, ct: f"{ct}|{body.decode()}")
    backend.script = [reply(400, b"raw", "text/x-mine")]
    with pytest.raises(PermanentError, match=r"HTTP 400: text/x-mine\|raw$"):
        await client.post(backend.url, b"x", "text/plain")


# ---------------------------------------------------------------- Retry-After

async def test_retry_after_seconds_and_http_date(backend: Backend, make_client) -> None:
    client = await make_client()
    backend.script = [reply(429, headers={"Retry-After": "7"}),
                      reply(503, headers={"Retry-After": email.utils.formatdate(time.time() + 120, usegmt=True)}),
                      reply(503, headers={"Retry-After": email.utils.formatdate(time.time() - 120, usegmt=True)})]
    delays = []
    for _ in range(3):
        with pytest.raises(RetryableError) as err:
            await client.post(backend.url, b"x", "text/plain")
        delays.append(err.value.retry_after)
    assert delays[0] == 7.0
    assert delays[1] == pytest.approx(120, abs=3)
    assert delays[2] == 0.0


@pytest.fixture
def local_time_is_not_utc(monkeypatch: pytest.MonkeyPatch) -> object:
    """The process's local time zone five hours behind UTC (a POSIX TZ rule: no zone database needed)."""
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_retry_after_asctime_date_is_gmt(backend: Backend, make_client, local_time_is_not_utc: object) -> None:
    """RFC 9110 makes recipients accept the asctime form, which has no zone: it is GMT, not local time."""
    client = await make_client()
    backend.script = [reply(503, headers={"Retry-After": time.asctime(time.gmtime(time.time() + 120))})]
    with pytest.raises(RetryableError) as err:
        await client.post(backend.url, b"x", "text/plain")
    assert err.value.retry_after == pytest.approx(120, abs=3)


@pytest.mark.parametrize("value", ["²", "9" * 400, "soon", "-5", "1.5", ""])
async def test_a_retry_after_that_is_no_delay_leaves_the_wait_to_the_backoff(backend: Backend, make_client,
                                                                            value: str) -> None:
    client = await make_client()
    backend.script = [reply(429, headers={"Retry-After": value})]
    with pytest.raises(RetryableError, match="HTTP 429") as err:
        await client.post(backend.url, b"x", "text/plain")
    assert err.value.retry_after is None


def test_parse_retry_after(local_time_is_not_utc: object) -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 45, usegmt=True), now=now) == pytest.approx(45)
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now=784111777.0 - 10) == pytest.approx(10)  # RFC 850
    assert parse_retry_after(time.asctime(time.gmtime(now + 45)), now=now) == pytest.approx(45)
    assert parse_retry_after(email.utils.formatdate(now - 45, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "-5", "²", "9" * 400, "1e3"):
        assert parse_retry_after(bad, now=now) is None, bad


# ---------------------------------------------------------------- redirects and responses

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(backend: Backend, make_client, status: int) -> None:
    client = await make_client()
    location = with_secrets(backend.url, "/elsewhere")
    backend.script = [reply(status, headers={"Location": location})]
    with pytest.raises(PermanentError, match=f"HTTP {status}.*elsewhere.*not followed") as err:
        await client.post(backend.url + "/push", b"x", "text/plain")
    assert [s.path for s in backend.seen] == ["/push"]
    assert_no_secret(str(err.value))


@pytest.mark.parametrize("size", [10, MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES + 1, 1024 * 1024])
async def test_responses_are_read_up_to_a_bound(backend: Backend, make_client, size: int) -> None:
    client = await make_client()
    body = b"r" * size
    backend.script = [reply(200, body), reply(200, b"next")]
    resp = await client.post(backend.url, b"x", "text/plain")
    assert resp.body == body[:MAX_RESPONSE_BYTES]
    assert (await client.post(backend.url, b"x", "text/plain")).body == b"next"  # the pool still works


async def test_an_error_body_is_read_up_to_the_bound_too(backend: Backend, make_client) -> None:
    client = await make_client(max_response_bytes=16, error_detail=lambda body, ct: body.decode())
    backend.script = [reply(400, b"0123456789abcdefTAIL", "text/plain")]
    with pytest.raises(PermanentError, match=r"HTTP 400: 0123456789abcdef$"):
        await client.post(backend.url, b"x", "text/plain")


# ---------------------------------------------------------------- connection failures

async def test_connection_refused_is_retryable_and_redacted(make_client) -> None:
    b = Backend()
    runner = await serve(b)
    url = b.url
    await runner.cleanup()
    client = await make_client()
    with pytest.raises(RetryableError, match="failed") as err:
        await client.post(with_secrets(url), b"x", "text/plain")
    assert "[REDACTED]" in str(err.value)
    assert_no_secret(str(err.value))


async def test_a_truncated_response_is_retryable(make_client) -> None:
    """A backend that promises 100 bytes and hangs up after 10 (a raw TCP server speaking just enough HTTP)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n0123456789")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_client()
        with pytest.raises(RetryableError, match="failed: ClientPayloadError"):
            await client.post(f"http://127.0.0.1:{port}/push", b"", "text/plain")
    finally:
        server.close()
        await server.wait_closed()


async def test_the_callers_deadline_surfaces_as_a_timeout(make_client) -> None:
    """The exporter helper's asyncio.timeout cuts a hanging request: TimeoutError, which it counts as `timeout`."""
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        client = await make_client()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        deadline = asyncio.timeout(None)

        async def push() -> None:
            async with deadline:
                await client.post(url, b"x", "text/plain")

        task = asyncio.create_task(push())
        async with asyncio.timeout(5):
            await arrived.wait()
        deadline.reschedule(asyncio.get_running_loop().time())  # the deadline passes while the server holds on
        with pytest.raises(TimeoutError):
            await task
    finally:
        release.set()
        await runner.cleanup()


async def test_invalid_url_and_basic_auth_clash_are_permanent_and_redacted(backend: Backend, make_client) -> None:
    client = await make_client(headers={"Authorization": Secret("Bearer t0k3n")})
    with pytest.raises(PermanentError, match="could not be sent") as err:
        await client.post(with_secrets(backend.url), b"x", "text/plain")
    assert_no_secret(str(err.value))
    with pytest.raises(PermanentError, match="invalid URL") as err:
        await client.post("http://user:s3cr3tpw@[::1/push?api_key=K123", b"x", "text/plain")
    assert_no_secret(str(err.value))
    assert backend.seen == []


async def test_userinfo_is_sent_as_basic_auth(backend: Backend, make_client) -> None:
    client = await make_client()
    await client.post(with_secrets(backend.url), b"x", "text/plain")
    [req] = backend.seen
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"user:s3cr3tpw").decode()
    assert (req.path, req.query) == ("/push", "api_key=K123")


# ---------------------------------------------------------------- TLS

@pytest.fixture
async def tls_backend(server_cert) -> AsyncIterator[Backend]:  # type: ignore[no-untyped-def]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server_cert.cert, server_cert.key)
    b = Backend()
    runner = await serve(b, ctx)
    yield b
    await runner.cleanup()


async def test_tls_with_ca_file_and_server_name_override(tls_backend: Backend, server_cert, make_client) -> None:
    tls = TLSClientConfig(ca_file=str(server_cert.cert), server_name_override=server_cert.server_name)
    client = await make_client(tls=tls)
    assert (await client.post(tls_backend.url, b"x", "text/plain")).status == 200
    skip = await make_client(tls=TLSClientConfig(insecure_skip_verify=True))
    assert (await skip.post(tls_backend.url, b"x", "text/plain")).status == 200
    assert len(tls_backend.seen) == 2


@pytest.mark.parametrize("tls", [None, TLSClientConfig(), TLSClientConfig(insecure=True)])
async def test_an_untrusted_certificate_is_a_retryable_handshake_failure(tls_backend: Backend, make_client,
                                                                       tls: TLSClientConfig | None) -> None:
    """`insecure: true` means plain text, which an https URL cannot be: it still verifies."""
    client = await make_client(tls=tls)
    with pytest.raises(RetryableError, match="certificate"):
        await client.post(tls_backend.url, b"x", "text/plain")
    assert tls_backend.seen == []


# ---------------------------------------------------------------- lifecycle

async def test_lifecycle_is_safe_in_any_order(backend: Backend) -> None:
    client = HTTPClient()
    await client.close()
    assert not client.started
    with pytest.raises(RetryableError, match="not started"):
        await client.post(backend.url, b"x", "text/plain")
    await client.start()
    await client.start()
    assert client.started
    await client.post(backend.url, b"x", "text/plain")
    await client.close()
    await client.close()
    with pytest.raises(RetryableError, match="not started"):
        await client.post(with_secrets(backend.url), b"x", "text/plain")
    await client.start()  # a restart opens a new pool
    await client.post(backend.url, b"x", "text/plain")
    await client.close()
    assert len(backend.seen) == 2
