"""OTLP/HTTP exporter against an aiohttp test server that records requests and scripts responses."""
from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import orjson
import pytest
from aiohttp import web
from google.protobuf import json_format
from google.rpc import status_pb2

from exporters.otlp import http as otlphttp
from exporters.otlp.http import OTLPHTTPExporter, OTLPHTTPExporterConfig
from pipeline import otlpjson
from pipeline.component import Kind, ReceiverFactory, Stability, make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import Duration, Secret, decode_dataclass
from pipeline.errors import (
    ConfigError,
    ConfigIssue,
    PartialSuccessError,
    PermanentError,
    RetryableError,
)
from pipeline.exporterhelper import ExporterHelper
from pipeline.exporterhelper.queue import QueueConfig
from pipeline.exporterhelper.retry import RetryConfig
from pipeline.logutil import JSONFormatter
from pipeline.model import Payload, Signal
from pipeline.net.http import parse_retry_after
from pipeline.net.tls import TLSClientConfig
from pipeline.telemetry import Telemetry
from pipeline.testing import (
    make_logs,
    make_metrics,
    make_traces,
    nop_host,
    nop_settings,
    payload,
)

Reply = Callable[[], web.Response]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes  # as the server sees it (aiohttp undoes Content-Encoding)
    message: object
    query: str = ""  # the raw query string the server got


@dataclass
class Backend:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        signal = {"/v1/traces": Signal.TRACES, "/v1/metrics": Signal.METRICS, "/v1/logs": Signal.LOGS,
                  "/custom/spans": Signal.TRACES, "/otlp/v1/traces": Signal.TRACES}[request.path]
        body = await request.read()
        if request.content_type == "application/json":
            message = otlpjson.decode(signal, body)
        else:
            message = signal.request_type.FromString(body)
        if self.script:
            return self.script.pop(0)()
        async with self.cond:
            self.requests.append(Recorded(request.path, dict(request.headers), body, message, request.query_string))
            self.cond.notify_all()
        return web.Response(body=signal.response_type().SerializeToString(), content_type="application/x-protobuf")

    def items(self) -> int:
        return sum(Payload(Signal.TRACES, message=r.message).items for r in self.requests)  # type: ignore[arg-type]

    async def wait_for_items(self, n: int) -> None:
        async with asyncio.timeout(5):
            async with self.cond:
                await self.cond.wait_for(lambda: self.items() >= n)


async def serve(b: Backend, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", b.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    b.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    return runner


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    runner = await serve(b)
    yield b
    await runner.cleanup()


@pytest.fixture
async def make_exporter() -> AsyncIterator[Callable[..., Awaitable[OTLPHTTPExporter]]]:
    started: list[OTLPHTTPExporter] = []

    async def make(cfg: OTLPHTTPExporterConfig, signal: Signal = Signal.TRACES) -> OTLPHTTPExporter:
        exp = otlphttp.create(nop_settings("otlphttp", Kind.EXPORTER, signal), cfg)
        await exp.start(nop_host())
        started.append(exp)
        return exp

    yield make
    for exp in started:
        await exp.shutdown()


def status_reply(code: int, *, message: str = "", json: bool = False,
                 headers: dict[str, str] | None = None) -> Reply:
    def reply() -> web.Response:
        st = status_pb2.Status(code=3, message=message)
        if json:
            return web.Response(status=code, body=orjson.dumps(json_format.MessageToDict(st)),
                                content_type="application/json", headers=headers)
        return web.Response(status=code, body=st.SerializeToString(), content_type="application/x-protobuf",
                            headers=headers)
    return reply


# ---------------------------------------------------------------- config

def decode(data: object) -> tuple[OTLPHTTPExporterConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    return decode_dataclass(OTLPHTTPExporterConfig, data, "exporters.otlphttp", issues), issues


def test_config_defaults() -> None:
    cfg, issues = decode({"endpoint": "https://otlp.example.com"})
    assert issues == []
    assert (cfg.encoding, cfg.compression, cfg.timeout) == ("proto", "gzip", 5.0)
    assert cfg.signal_url(Signal.TRACES) == "https://otlp.example.com/v1/traces"
    assert cfg.signal_url(Signal.METRICS) == "https://otlp.example.com/v1/metrics"
    assert cfg.signal_url(Signal.LOGS) == "https://otlp.example.com/v1/logs"


def test_signal_urls() -> None:
    cfg, issues = decode({"endpoint": "http://gw:4318/otlp/", "logs_endpoint": "http://loki:3100/otlp/v1/logs"})
    assert issues == []
    assert cfg.signal_url(Signal.TRACES) == "http://gw:4318/otlp/v1/traces"
    assert cfg.signal_url(Signal.LOGS) == "http://loki:3100/otlp/v1/logs"
    only, issues = decode({"traces_endpoint": "http://tempo:4318/v1/traces"})
    assert issues == []
    with pytest.raises(ValueError, match="set endpoint or metrics_endpoint"):
        otlphttp.create(nop_settings("otlphttp", Kind.EXPORTER, Signal.METRICS), only)


def test_config_endpoint_is_required() -> None:
    _, issues = decode({})
    assert [i.path for i in issues] == ["exporters.otlphttp.endpoint"]
    assert "is required" in issues[0].message


@pytest.mark.parametrize(("data", "path", "fragment"), [
    ({"endpoint": "otlp.example.com:4318"}, "endpoint", "http://host:port"),
    ({"endpoint": "http://x", "traces_endpoint": "ftp://x/v1/traces"}, "traces_endpoint", "http://host:port"),
    ({"endpoint": "http://x", "headers": {"Content-Type": "text/plain"}}, "headers.Content-Type",
     "set by the exporter"),
    ({"endpoint": "http://x", "encoding": "xml"}, "encoding", "must be one of 'proto', 'json'"),
    ({"endpoint": "http://x", "compression": "gz"}, "compression", "did you mean 'gzip'"),
    ({"endpoint": "http://x", "timeout": "0s"}, "timeout", "greater than 0"),
])
def test_config_rejects_bad_values(data: dict[str, object], path: str, fragment: str) -> None:
    _, issues = decode(data)
    assert [i.path for i in issues] == [f"exporters.otlphttp.{path}"]
    assert fragment in issues[0].message


@dataclass(frozen=True, slots=True, kw_only=True)
class NopReceiverConfig:
    pass


def test_config_typo_through_loader() -> None:
    nop = ReceiverFactory(type="nop", config_type=NopReceiverConfig,
                  signals={Signal.LOGS: Stability.STABLE}, create=lambda *a: None)
    yaml = """
receivers: {nop: {}}
exporters:
  otlphttp:
    endpoint: http://x:4318
    encodnig: json
service:
  pipelines:
    logs: {receivers: [nop], exporters: [otlphttp]}
"""
    with pytest.raises(ConfigError,
                       match=r"exporters\.otlphttp\.encodnig: unknown key 'encodnig'; did you mean 'encoding'\?"):
        load_text(yaml, make_factory_map([nop, otlphttp.FACTORY]))


# ---------------------------------------------------------------- sending

@pytest.mark.parametrize("signal", list(Signal))
async def test_proto_and_json_bodies_decode_to_the_same_message(backend: Backend, make_exporter,
                                                                signal: Signal) -> None:
    msg = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}[signal](4)
    for encoding in ("proto", "json"):
        exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url, encoding=encoding), signal)
        await exp.push(Payload(signal, message=msg))
    proto, js = backend.requests
    assert proto.path == js.path == f"/v1/{signal.value}"
    assert proto.message == js.message == msg
    assert proto.headers["Content-Type"] == "application/x-protobuf"
    assert js.headers["Content-Type"] == "application/json"
    assert orjson.loads(js.body) == orjson.loads(otlpjson.encode(msg))


async def test_proto_body_is_the_cached_wire_bytes(backend: Backend, make_exporter) -> None:
    wire = make_traces(6, service="wire").SerializeToString()
    p = Payload(Signal.TRACES, message=make_traces(2), raw=wire, items=6)  # cached bytes win over the message
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url, compression="none"))
    await exp.push(p)
    [req] = backend.requests
    assert req.body == wire
    assert "Content-Encoding" not in req.headers
    assert req.headers["Content-Length"] == str(len(wire))


@pytest.mark.parametrize("spans", [20, 3000])  # the second is compressed off the event loop
async def test_gzip_body(backend: Backend, make_exporter, spans: int) -> None:
    wire = make_traces(spans).SerializeToString()
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    await exp.push(Payload(Signal.TRACES, raw=wire))
    [req] = backend.requests
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.body == wire
    assert int(req.headers["Content-Length"]) < len(wire)


async def test_headers_are_sent(backend: Backend, make_exporter) -> None:
    cfg = OTLPHTTPExporterConfig(endpoint=backend.url, headers={"X-Scope-OrgID": Secret("t1"),
                                                                "Authorization": Secret("Bearer s3cret")})
    exp = await make_exporter(cfg)
    await exp.push(payload(Signal.TRACES))
    h = backend.requests[0].headers
    assert h["X-Scope-OrgID"] == "t1"
    assert h["Authorization"] == "Bearer s3cret"
    assert h["User-Agent"].startswith("otelpipe/")


async def test_explicit_signal_url_is_used_as_is(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(traces_endpoint=backend.url + "/custom/spans"))
    await exp.push(payload(Signal.TRACES))
    assert backend.requests[0].path == "/custom/spans"


# ---------------------------------------------------------------- errors

async def test_429_with_retry_after_seconds(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    backend.script = [status_reply(429, message="slow down", headers={"Retry-After": "7"})]
    with pytest.raises(RetryableError, match="HTTP 429: slow down") as err:
        await exp.push(payload(Signal.TRACES))
    assert err.value.retry_after == 7.0


async def test_429_with_retry_after_date(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    backend.script = [status_reply(429, headers={"Retry-After": when})]
    with pytest.raises(RetryableError) as err:
        await exp.push(payload(Signal.TRACES))
    assert err.value.retry_after == pytest.approx(120, abs=3)


@pytest.mark.parametrize("code", [502, 503, 504])
async def test_retryable_statuses(backend: Backend, make_exporter, code: int) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    backend.script = [status_reply(code, message="down for maintenance", json=True)]
    with pytest.raises(RetryableError, match=f"HTTP {code}: down for maintenance") as err:
        await exp.push(payload(Signal.TRACES))
    assert err.value.retry_after is None


@pytest.mark.parametrize(("code", "json"), [(400, False), (400, True), (401, False), (404, True), (413, False),
                                            (500, False)])
async def test_other_statuses_are_permanent(backend: Backend, make_exporter, code: int, json: bool) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    backend.script = [status_reply(code, message="span 3 has no trace id", json=json)]
    with pytest.raises(PermanentError, match=f"HTTP {code}: span 3 has no trace id"):
        await exp.push(payload(Signal.TRACES))


async def test_undecodable_error_body_still_gives_the_status(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    backend.script = [lambda: web.Response(status=400, body=b"\xff\x00garbage", content_type="application/x-protobuf")]
    with pytest.raises(PermanentError, match=r"returned HTTP 400$"):
        await exp.push(payload(Signal.TRACES))


async def test_redirect_is_not_followed(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    backend.script = [lambda: web.Response(status=307, headers={"Location": "http://elsewhere/v1/traces"})]
    with pytest.raises(PermanentError, match="HTTP 307.*elsewhere.*not followed"):
        await exp.push(payload(Signal.TRACES))


@pytest.mark.parametrize("json", [False, True])
async def test_partial_success(backend: Backend, make_exporter, json: bool) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url, encoding="json" if json else "proto"),
                              Signal.LOGS)
    resp = Signal.LOGS.response_type()
    resp.partial_success.rejected_log_records = 2
    resp.partial_success.error_message = "2 records too large"

    def reply() -> web.Response:
        if json:
            return web.Response(body=otlpjson.encode(resp), content_type="application/json")
        return web.Response(body=resp.SerializeToString(), content_type="application/x-protobuf")

    backend.script = [reply]
    with pytest.raises(PartialSuccessError, match="too large") as err:
        await exp.push(payload(Signal.LOGS))
    assert err.value.rejected == 2


async def test_empty_or_odd_2xx_body_is_success(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    backend.script = [lambda: web.Response(status=200), lambda: web.Response(status=202, text="accepted")]
    await exp.push(payload(Signal.TRACES))
    await exp.push(payload(Signal.TRACES))


async def test_connection_refused_is_retryable(make_exporter) -> None:
    b = Backend()
    runner = await serve(b)
    url = b.url
    await runner.cleanup()
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=url))
    with pytest.raises(RetryableError, match="failed"):
        await exp.push(payload(Signal.TRACES))


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 45, usegmt=True), now=now) == pytest.approx(45)
    assert parse_retry_after(email.utils.formatdate(now - 45, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") is None


async def test_push_before_start_and_shutdown_twice() -> None:
    exp = otlphttp.create(nop_settings("otlphttp", Kind.EXPORTER, Signal.TRACES),
                          OTLPHTTPExporterConfig(endpoint="http://127.0.0.1:9"))
    await exp.shutdown()
    with pytest.raises(RetryableError, match="not started"):
        await exp.push(payload(Signal.TRACES))
    await exp.start(nop_host())
    await exp.shutdown()
    await exp.shutdown()


# ---------------------------------------------------------------- TLS

async def test_https_with_ca_file(server_cert, make_exporter) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server_cert.cert, server_cert.key)
    b = Backend()
    runner = await serve(b, ctx)
    try:
        tls = TLSClientConfig(ca_file=str(server_cert.cert), server_name_override=server_cert.server_name)
        exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=b.url, tls=tls))
        await exp.push(payload(Signal.TRACES))
        assert len(b.requests) == 1
        untrusted = await make_exporter(OTLPHTTPExporterConfig(endpoint=b.url, tls=replace(tls, ca_file="")))
        with pytest.raises(RetryableError, match="certificate"):
            await untrusted.push(payload(Signal.TRACES))
        assert len(b.requests) == 1
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- with the exporter helper

async def test_backend_outage_loses_nothing(backend: Backend) -> None:
    tel = Telemetry(process_metrics=False)
    settings = nop_settings("otlphttp", Kind.EXPORTER, Signal.TRACES, telemetry=tel)
    cfg = OTLPHTTPExporterConfig(endpoint=backend.url,
                                 retry_on_failure=RetryConfig(initial_interval=Duration(0.01),
                                                              max_interval=Duration(0.02)),
                                 sending_queue=QueueConfig(num_consumers=3))
    helper = ExporterHelper(settings, otlphttp.create(settings, cfg), cfg)
    await helper.start(nop_host())
    try:
        backend.script = [status_reply(503), status_reply(502), status_reply(429, headers={"Retry-After": "0"}),
                          status_reply(503)]
        for i in range(5):
            await helper.consume(Payload(Signal.TRACES, message=make_traces(4, name=f"b{i}")))
        await backend.wait_for_items(20)
    finally:
        await helper.shutdown()
    names = sorted(s.name for r in backend.requests for rs in r.message.resource_spans  # type: ignore[attr-defined]
                   for ss in rs.scope_spans for s in ss.spans)
    assert names == sorted(f"b{i}-{j}" for i in range(5) for j in range(4))
    assert tel.value("otelpipe_exporter_sent_spans_total", exporter="otlphttp") == 20
    assert tel.value("otelpipe_exporter_send_failed_spans_total", exporter="otlphttp") == 0


# ---------------------------------------------------------------- secrets in URLs (issue 9)

SECRETS = ("s3cr3tpw", "K123")


def with_secrets(url: str, path: str = "/otlp") -> str:
    """`http://127.0.0.1:PORT` → `http://user:s3cr3tpw@127.0.0.1:PORT/otlp?api_key=K123`."""
    scheme, _, hostport = url.partition("://")
    return f"{scheme}://user:s3cr3tpw@{hostport}{path}?api_key=K123"


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def test_signal_path_goes_before_the_query() -> None:
    cfg, issues = decode({"endpoint": "http://h/otlp?api_key=K"})
    assert issues == []
    assert cfg.signal_url(Signal.TRACES) == "http://h/otlp/v1/traces?api_key=K"
    cfg, _ = decode({"endpoint": "https://h:4318/?api_key=K&tenant=a%2Bb"})
    assert cfg.signal_url(Signal.LOGS) == "https://h:4318/v1/logs?api_key=K&tenant=a%2Bb"


async def test_backend_gets_the_signal_path_and_the_query_as_configured(backend: Backend, make_exporter) -> None:
    query = "api_key=K123&tenant=a%2Bb%26c&flag"
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=f"{backend.url}/otlp?{query}"))
    await exp.push(payload(Signal.TRACES))
    [req] = backend.requests
    assert (req.path, req.query) == ("/otlp/v1/traces", query)


async def test_userinfo_alone_is_sent_as_basic_auth(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=with_secrets(backend.url)))
    await exp.push(payload(Signal.TRACES))
    [req] = backend.requests
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"user:s3cr3tpw").decode()
    assert (req.path, req.query) == ("/otlp/v1/traces", "api_key=K123")


@pytest.mark.parametrize(("key", "header"), [("endpoint", "Authorization"), ("traces_endpoint", "authorization")])
def test_userinfo_with_an_authorization_header_is_a_config_error(key: str, header: str) -> None:
    _, issues = decode({key: "https://user:s3cr3tpw@otlp.example.com/otlp?api_key=K123",
                        "headers": {header: "Bearer t0k3n"}})
    assert [i.path for i in issues] == [f"exporters.otlphttp.{key}"]
    assert "Basic" in issues[0].message and "Authorization" in issues[0].message
    assert_no_secret(issues[0].message)
    assert "t0k3n" not in issues[0].message


async def test_userinfo_with_an_authorization_header_unvalidated_is_permanent(backend: Backend, make_exporter) -> None:
    """Built without validation, the clash aiohttp refuses is dropped once, not retried for ever."""
    cfg = OTLPHTTPExporterConfig(endpoint=with_secrets(backend.url), headers={"Authorization": Secret("Bearer t0k3n")})
    exp = await make_exporter(cfg)
    with pytest.raises(PermanentError, match="could not be sent") as err:
        await exp.push(payload(Signal.TRACES))
    assert_no_secret(str(err.value))
    assert backend.requests == []


@pytest.mark.parametrize("endpoint", [
    "http://user:s3cr3tpw@[127.0.0.1:1/otlp?api_key=K123",   # unbalanced IPv6 bracket
    "http://user:s3cr3tpw@127.0.0.1:99999/otlp?api_key=K123",  # port out of range
    "ftp://user:s3cr3tpw@127.0.0.1/otlp?api_key=K123",        # wrong scheme
    "http://user:s3cr/tpw@127.0.0.1/otlp?api_key=K123",       # '/' not percent-encoded in the password
])
def test_invalid_url_messages_are_redacted(endpoint: str) -> None:
    _, issues = decode({"endpoint": endpoint})
    assert [i.path for i in issues] == ["exporters.otlphttp.endpoint"]
    assert "invalid URL" in issues[0].message
    assert "[REDACTED]" in issues[0].message
    assert_no_secret(issues[0].message.replace("s3cr/tpw", "s3cr3tpw"))


@pytest.mark.parametrize(("key", "value"), [("headers", "Authorization: Bearer t0k3n"),
                                          ("tls", "https://user:s3cr3tpw@h/?api_key=K123")])
def test_a_string_where_a_mapping_belongs_is_not_repeated(key: str, value: str) -> None:
    _, issues = decode({"endpoint": "http://x", key: value})
    assert [(i.path, i.message) for i in issues] == [(f"exporters.otlphttp.{key}", "expected a mapping, got a string")]


def test_a_bad_choice_holding_a_url_is_redacted() -> None:
    _, issues = decode({"endpoint": "http://x", "encoding": "http://user:s3cr3tpw@h/?api_key=K123"})
    assert [i.path for i in issues] == ["exporters.otlphttp.encoding"]
    assert "invalid value 'http://[REDACTED]@h/?api_key=[REDACTED]'" in issues[0].message
    assert_no_secret(issues[0].message)


def records_text(caplog: pytest.LogCaptureFixture) -> str:
    fmt = JSONFormatter()
    return "\n".join(fmt.format(r) for r in caplog.records)


async def test_start_up_line_and_export_errors_never_carry_userinfo_or_query_values(
        backend: Backend, make_exporter, caplog: pytest.LogCaptureFixture) -> None:
    errors: list[str] = []
    with caplog.at_level(logging.INFO, logger="otelpipe"):
        exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=with_secrets(backend.url)))
        backend.script = [
            status_reply(500, message="internal"),
            status_reply(503),
            lambda: web.Response(status=307, headers={"Location": with_secrets("http://elsewhere", "/v1/traces")}),
            status_reply(400, message=f"bad credentials for {with_secrets(backend.url)}"),
            lambda: web.Response(status=200, body=b"\xff\x00", content_type="application/x-protobuf"),
        ]
        for _ in range(4):
            with pytest.raises((PermanentError, RetryableError)) as err:
                await exp.push(payload(Signal.TRACES))
            errors.append(str(err.value))
        await exp.push(payload(Signal.TRACES))  # undecodable 2xx body: logged with the URL
        await exp.shutdown()
    text = records_text(caplog)
    assert "OTLP/HTTP exporter started" in text and "could not decode" in text
    shown = f"http://[REDACTED]@{backend.url.partition('://')[2]}/otlp/v1/traces?api_key=[REDACTED]"
    assert shown in text
    assert all(shown in e for e in errors[:2]), errors
    assert "elsewhere" in errors[2] and "bad credentials" in errors[3]
    assert_no_secret(text)
    assert_no_secret("\n".join(errors))


async def test_connection_errors_never_carry_userinfo_or_query_values(make_exporter) -> None:
    b = Backend()
    runner = await serve(b)
    url = b.url
    await runner.cleanup()
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=with_secrets(url)))
    with pytest.raises(RetryableError, match="failed") as err:
        await exp.push(payload(Signal.TRACES))
    assert "[REDACTED]" in str(err.value)
    assert_no_secret(str(err.value))


async def test_helper_logs_of_a_failing_backend_never_carry_secrets(backend: Backend,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    tel = Telemetry(process_metrics=False)
    settings = nop_settings("otlphttp", Kind.EXPORTER, Signal.TRACES, telemetry=tel)
    cfg = OTLPHTTPExporterConfig(endpoint=with_secrets(backend.url),
                                 retry_on_failure=RetryConfig(initial_interval=Duration(0.001),
                                                              max_interval=Duration(0.001)))
    helper = ExporterHelper(settings, otlphttp.create(settings, cfg), cfg)
    with caplog.at_level(logging.INFO, logger="otelpipe"):
        await helper.start(nop_host())
        try:
            backend.script = [status_reply(503), status_reply(500)]
            await helper.consume(payload(Signal.TRACES, n=3))
            await helper.consume(payload(Signal.TRACES, n=3))
            await backend.wait_for_items(3)  # one retried to success, the other dropped as permanent
        finally:
            await helper.shutdown()
    text = records_text(caplog)
    assert "will retry" in text and "failed permanently" in text
    assert_no_secret(text)


# ---------------------------------------------------------------- issue 10: the shared HTTP client

@pytest.fixture
def local_time_is_not_utc(monkeypatch: pytest.MonkeyPatch) -> object:
    """The process's local time zone five hours behind UTC (a POSIX TZ rule: no zone database needed)."""
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("value", ["²", "9" * 400])
async def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(backend: Backend, make_exporter,
                                                                    value: str) -> None:
    """A non-ASCII digit used to escape as a ValueError, and a huge number became an infinite wait."""
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    backend.script = [status_reply(503, headers={"Retry-After": value})]
    with pytest.raises(RetryableError, match="HTTP 503") as err:
        await exp.push(payload(Signal.TRACES))
    assert err.value.retry_after is None


async def test_retry_after_asctime_date_is_gmt(backend: Backend, make_exporter, local_time_is_not_utc: object) -> None:
    """The asctime HTTP-date form carries no zone and is GMT; it used to be read as local time."""
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url))
    backend.script = [status_reply(429, headers={"Retry-After": time.asctime(time.gmtime(time.time() + 120))})]
    with pytest.raises(RetryableError) as err:
        await exp.push(payload(Signal.TRACES))
    assert err.value.retry_after == pytest.approx(120, abs=3)


@pytest.mark.parametrize("name", ["User-Agent", "user-agent"])
async def test_a_configured_user_agent_is_sent(backend: Backend, make_exporter, name: str) -> None:
    """Configured headers win over the exporter's own, as in the Collector; the configured one used to be dropped."""
    exp = await make_exporter(OTLPHTTPExporterConfig(endpoint=backend.url, headers={name: Secret("custom/1")}))
    await exp.push(payload(Signal.TRACES))
    assert backend.requests[0].headers["User-Agent"] == "custom/1"


async def test_a_push_slower_than_timeout_fails_as_a_retryable_timeout() -> None:
    """The exporter sets no deadline of its own: the exporter helper's `timeout` cuts the request."""
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/traces", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    tel = Telemetry(process_metrics=False)
    settings = nop_settings("otlphttp", Kind.EXPORTER, Signal.TRACES, telemetry=tel)
    cfg = OTLPHTTPExporterConfig(endpoint=f"http://127.0.0.1:{runner.addresses[0][1]}", timeout=Duration(0.05),
                                 retry_on_failure=RetryConfig(enabled=False), sending_queue=QueueConfig(enabled=False))
    helper = ExporterHelper(settings, otlphttp.create(settings, cfg), cfg)
    await helper.start(nop_host())
    try:
        with pytest.raises(RetryableError):
            await helper.consume(payload(Signal.TRACES, n=3))
        assert arrived.is_set()
    finally:
        release.set()
        await helper.shutdown()
        await runner.cleanup()
    assert tel.value("otelpipe_exporter_send_failed_spans_total", exporter="otlphttp", reason="timeout") == 3
