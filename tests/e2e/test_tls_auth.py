"""TLS, mutual TLS, certificate rotation and bearer-token authentication on the OTLP receiver (issue 14).

The whole daemon runs in-process from YAML, with certificates made by the openssl CLI
(tests/testdata/pki.py). Clients are the OpenTelemetry SDK's OTLP exporters (gRPC and
HTTP/protobuf, which take certificates and headers), plus raw TLS sockets and grpc channels
where a test needs to see the handshake itself.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from otelpipe.testing import running_service
from pipeline.service import Service
from pipeline.testing import make_traces, wait_until
from tests.testdata.pki import Leaf, Pki

from .sdk import make_spans

TOKEN = "s3cr3t-t0ken-4242"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server: Leaf
    client: Leaf
    rogue_client: Leaf  # signed by a CA the server does not trust


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("pki")
    pki, rogue = Pki(d / "ca"), Pki(d / "rogue", "rogue")
    return Certs(pki.ca, pki.issue("server"), pki.issue("client", "agent-1"), rogue.issue("client", "intruder"))


def mtls_config(c: Certs) -> str:
    tls = f"{{cert_file: {c.server.cert}, key_file: {c.server.key}, client_ca_file: {c.ca}}}"
    return f"""
extensions:
  bearertokenauth: {{token: "${{env:OTLP_TOKEN}}"}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0", tls: {tls}, auth: {{authenticator: bearertokenauth}}}}
      http: {{endpoint: "127.0.0.1:0", tls: {tls}, auth: {{authenticator: bearertokenauth}}}}
exporters:
  debug: {{}}
service:
  extensions: [bearertokenauth]
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""


@pytest.fixture
async def mtls_service(certs: Certs) -> AsyncIterator[Service]:
    async with running_service(mtls_config(certs), env={"OTLP_TOKEN": TOKEN}) as svc:
        yield svc


def port_of(svc: Service, transport: str) -> int:
    return int(svc.endpoint("receiver", "otlp", transport).rpartition(":")[2])


def accepted(svc: Service, transport: str) -> float:
    return svc.telemetry.value("otelpipe_receiver_accepted_spans_total", receiver="otlp", transport=transport)


def refused(svc: Service, transport: str, reason: str) -> float:
    return svc.telemetry.value("otelpipe_receiver_refused_spans_total", receiver="otlp", transport=transport,
                               reason=reason)


def grpc_exporter(svc: Service, c: Certs, headers: dict[str, str] | None) -> GrpcSpanExporter:
    creds = grpc.ssl_channel_credentials(root_certificates=c.ca.read_bytes(), private_key=c.client.key.read_bytes(),
                                         certificate_chain=c.client.cert.read_bytes())
    return GrpcSpanExporter(endpoint=f"localhost:{port_of(svc, 'grpc')}", credentials=creds, headers=headers,
                            timeout=5)


def http_exporter(svc: Service, c: Certs, headers: dict[str, str] | None) -> HttpSpanExporter:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, if set, wins over the SDK's certificate_file
    return HttpSpanExporter(session=session, endpoint=f"https://localhost:{port_of(svc, 'http')}/v1/traces",
                            certificate_file=str(c.ca), client_certificate_file=str(c.client.cert),
                            client_key_file=str(c.client.key), headers=headers, timeout=5)


async def export(exporter: GrpcSpanExporter | HttpSpanExporter) -> SpanExportResult:
    spans = make_spans(1)
    try:
        return await asyncio.to_thread(exporter.export, spans)  # type: ignore[arg-type]
    finally:
        await asyncio.to_thread(exporter.shutdown)


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_the_sdk_with_a_client_certificate_and_the_token_is_accepted(mtls_service: Service, certs: Certs,
                                                                           transport: str) -> None:
    make = grpc_exporter if transport == "grpc" else http_exporter
    result = await export(make(mtls_service, certs, {"authorization": f"Bearer {TOKEN}"}))
    assert result is SpanExportResult.SUCCESS
    assert accepted(mtls_service, transport) == len(make_spans(1))


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("headers", [None, {"authorization": "Bearer wrong-token"}, {"authorization": TOKEN},
                                     {"authorization": f"Basic {TOKEN}"}, {"x-token": f"Bearer {TOKEN}"}],
                         ids=["missing", "wrong", "no-scheme", "other-scheme", "other-header"])
async def test_a_missing_or_wrong_token_is_refused_and_counted(mtls_service: Service, certs: Certs, transport: str,
                                                               headers: dict[str, str] | None) -> None:
    make = grpc_exporter if transport == "grpc" else http_exporter
    result = await export(make(mtls_service, certs, headers))
    assert result is SpanExportResult.FAILURE
    assert accepted(mtls_service, transport) == 0
    assert refused(mtls_service, transport, "unauthenticated") == 1  # one request, its items not read


async def test_http_answers_401_with_www_authenticate(mtls_service: Service, certs: Certs) -> None:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.load_cert_chain(certs.client.cert, certs.client.key)
    url = f"https://localhost:{port_of(mtls_service, 'http')}/v1/traces"
    body = make_traces(3).SerializeToString()
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, ssl=ctx, headers={"Content-Type": "application/x-protobuf",
                                                                "Authorization": "Bearer nope"}) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            text = await r.text()
        assert TOKEN not in text
        async with http.post(url, data=body, ssl=ctx, headers={"Content-Type": "application/x-protobuf",
                                                                "Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
    assert accepted(mtls_service, "http") == 3


async def test_grpc_answers_unauthenticated(mtls_service: Service, certs: Certs) -> None:
    creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), certs.client.key.read_bytes(),
                                         certs.client.cert.read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{port_of(mtls_service, 'grpc')}", creds) as channel:
        call = channel.unary_unary(TRACES)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(make_traces(2).SerializeToString(), metadata=(("authorization", "Bearer nope"),), timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        await call(make_traces(2).SerializeToString(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=5)
    assert accepted(mtls_service, "grpc") == 2
    assert refused(mtls_service, "grpc", "unauthenticated") == 1


def client_context(c: Certs, leaf: Leaf | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(c.ca))
    if leaf is not None:
        ctx.load_cert_chain(leaf.cert, leaf.key)
    return ctx


@pytest.mark.parametrize("client", ["none", "rogue"])
async def test_mtls_refuses_a_client_without_a_certificate_from_the_ca_over_http(mtls_service: Service, certs: Certs,
                                                                                client: str) -> None:
    ctx = client_context(certs, None if client == "none" else certs.rogue_client)
    url = f"https://localhost:{port_of(mtls_service, 'http')}/v1/traces"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.post(url, data=make_traces(1).SerializeToString(), ssl=ctx,
                                 headers={"Content-Type": "application/x-protobuf",
                                          "Authorization": f"Bearer {TOKEN}"}) as r:
                await r.read()
    assert accepted(mtls_service, "http") == 0


@pytest.mark.parametrize("client", ["none", "rogue"])
async def test_mtls_refuses_a_client_without_a_certificate_from_the_ca_over_grpc(mtls_service: Service, certs: Certs,
                                                                                client: str) -> None:
    leaf = None if client == "none" else certs.rogue_client
    creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), leaf.key.read_bytes() if leaf else None,
                                         leaf.cert.read_bytes() if leaf else None)
    async with grpc.aio.secure_channel(f"localhost:{port_of(mtls_service, 'grpc')}", creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(TRACES)(make_traces(1).SerializeToString(), timeout=3,
                                              metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert accepted(mtls_service, "grpc") == 0


# --- rotation --------------------------------------------------------------------------------------------------


async def peer_common_name(port: int, ca: Path) -> str:
    """The CN of the certificate the server presents to a new connection that trusts only `ca`."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context(cafile=str(ca)),
                                                    server_hostname="localhost")
    try:
        cert = writer.get_extra_info("peercert")
        return str(dict(x[0] for x in cert["subject"])["commonName"])
    finally:
        writer.close()


def install(leaf: Leaf, live: Path) -> None:
    """Rotate as cert-manager and kubelet do: write new files, then rename them into place."""
    for src, name in ((leaf.cert, "tls.crt"), (leaf.key, "tls.key")):
        shutil.copy(src, live / f".{name}.new")
        os.replace(live / f".{name}.new", live / name)


async def test_a_rotated_certificate_is_served_without_a_restart_or_a_dropped_connection(tmp_path: Path) -> None:
    old_ca, new_ca = Pki(tmp_path / "old", "old-ca"), Pki(tmp_path / "new", "new-ca")
    live = tmp_path / "live"
    live.mkdir()
    install(old_ca.issue("server", "before"), live)
    tls = f"{{cert_file: {live / 'tls.crt'}, key_file: {live / 'tls.key'}}}"
    cfg = f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0", tls: {tls}}}
      http: {{endpoint: "127.0.0.1:0", tls: {tls}}}
exporters:
  debug: {{}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""
    async with running_service(cfg) as svc:
        http_port, grpc_port = port_of(svc, "http"), port_of(svc, "grpc")
        assert await peer_common_name(http_port, old_ca.ca) == "before"
        url = f"https://localhost:{http_port}/v1/traces"
        body = make_traces(1).SerializeToString()
        headers = {"Content-Type": "application/x-protobuf"}
        old_channel = grpc.aio.secure_channel(f"localhost:{grpc_port}", grpc.ssl_channel_credentials(
            old_ca.ca.read_bytes()))
        # One keep-alive connection per transport, opened before the rotation and used after it.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http, old_channel:
            ctx = ssl.create_default_context(cafile=str(old_ca.ca))
            async with http.post(url, data=body, ssl=ctx, headers=headers) as r:
                assert r.status == 200
            await old_channel.unary_unary(TRACES)(body, timeout=5)

            install(new_ca.issue("server", "after"), live)

            assert await peer_common_name(http_port, new_ca.ca) == "after"
            async with grpc.aio.secure_channel(f"localhost:{grpc_port}",
                                               grpc.ssl_channel_credentials(new_ca.ca.read_bytes())) as new_channel:
                await new_channel.unary_unary(TRACES)(body, timeout=5)
            # the connections opened before still work (the old certificate was checked at their handshake)
            async with http.post(url, data=body, ssl=ctx, headers=headers) as r:
                assert r.status == 200
            await old_channel.unary_unary(TRACES)(body, timeout=5)
        assert accepted(svc, "http") == 2 and accepted(svc, "grpc") == 3
        assert svc.telemetry.value("otelpipe_receiver_tls_reloads_total", result="ok") == 2

        # A half-written rotation (a certificate without its key) keeps the last good one.
        shutil.copy(old_ca.issue("server2", "broken").cert, live / "tls.crt")
        assert await peer_common_name(http_port, new_ca.ca) == "after"
        await wait_until(lambda: svc.telemetry.value("otelpipe_receiver_tls_reloads_total", transport="http",
                                                     result="failed") == 1)


async def test_reload_interval_reloads_even_when_the_files_look_unchanged(tmp_path: Path) -> None:
    from pipeline.net.tls import CertificateReloader, TLSServerConfig
    from pipeline.testing import FakeClock, nop_settings

    pki = Pki(tmp_path / "ca")
    leaf = pki.issue("server")
    clock = FakeClock()
    loads: list[int] = []
    results: list[str] = []
    cfg = TLSServerConfig(cert_file=str(leaf.cert), key_file=str(leaf.key), reload_interval=60.0)  # type: ignore[arg-type]
    reloader = CertificateReloader(cfg, lambda: loads.append(1) or len(loads), nop_settings().logger, results.append,
                                   clock)
    assert reloader.value == 1 and not reloader.refresh()
    clock.advance(59)
    assert not reloader.refresh()
    clock.advance(1)
    assert reloader.refresh() and reloader.value == 2 and results == ["ok"]


# --- client side: exporters with client certificates and the token --------------------------------------------


def forwarder_config(svc: Service, c: Certs, token_source: str) -> str:
    tls = f"{{ca_file: {c.ca}, cert_file: {c.client.cert}, key_file: {c.client.key}}}"
    return f"""
extensions:
  bearertokenauth/out: {token_source}
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}
exporters:
  otlp:
    endpoint: "localhost:{port_of(svc, 'grpc')}"
    tls: {tls}
    auth: {{authenticator: bearertokenauth/out}}
    retry_on_failure: {{enabled: false}}
  otlphttp:
    endpoint: "https://localhost:{port_of(svc, 'http')}"
    tls: {tls}
    auth: {{authenticator: bearertokenauth/out}}
    retry_on_failure: {{enabled: false}}
service:
  extensions: [bearertokenauth/out]
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp, otlphttp]}}
"""


async def post_traces(svc: Service, n: int) -> int:
    url = f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/traces"
    async with aiohttp.ClientSession() as http, http.post(
            url, data=make_traces(n).SerializeToString(), headers={"Content-Type": "application/x-protobuf"}) as r:
        return r.status


async def test_otlp_and_otlphttp_exporters_send_a_client_certificate_and_the_token(mtls_service: Service,
                                                                                  certs: Certs) -> None:
    async with running_service(forwarder_config(mtls_service, certs, '{token: "${env:OUT_TOKEN}"}'),
                               env={"OUT_TOKEN": TOKEN}) as fwd:
        assert await post_traces(fwd, 4) == 200
        await wait_until(lambda: accepted(mtls_service, "grpc") == 4 and accepted(mtls_service, "http") == 4)
    assert refused(mtls_service, "grpc", "unauthenticated") == refused(mtls_service, "http", "unauthenticated") == 0


async def test_a_token_file_is_read_again_when_it_changes(mtls_service: Service, certs: Certs, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("stale-token\n")
    async with running_service(forwarder_config(mtls_service, certs, f"{{filename: {token_file}}}")) as fwd:
        assert await post_traces(fwd, 2) == 200
        await wait_until(lambda: refused(mtls_service, "grpc", "unauthenticated") == 1
                         and refused(mtls_service, "http", "unauthenticated") == 1)
        # the exporters were refused: counted as failed sends, not lost silently
        await wait_until(lambda: fwd.telemetry.value("otelpipe_exporter_send_failed_spans_total") == 4)
        token_file.write_text(f"{TOKEN}\n")
        assert await post_traces(fwd, 3) == 200
        await wait_until(lambda: accepted(mtls_service, "grpc") == 3 and accepted(mtls_service, "http") == 3)


async def test_status_and_logs_never_show_the_token(certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="otelpipe")
    cfg = mtls_config(certs).replace("  debug: {}", """  debug: {}
  otlphttp:
    endpoint: "http://127.0.0.1:9/otlp?api_key=${env:OTLP_TOKEN}"
    headers: {Authorization: "Bearer ${env:OTLP_TOKEN}", X-Api-Key: "${env:OTLP_TOKEN}"}
    retry_on_failure: {enabled: false}""").replace("exporters: [debug]", "exporters: [debug, otlphttp]")
    async with running_service(cfg, env={"OTLP_TOKEN": TOKEN}) as svc:
        assert await export(grpc_exporter(svc, certs, {"authorization": f"Bearer {TOKEN}"})) is SpanExportResult.SUCCESS
        assert await export(grpc_exporter(svc, certs, {"authorization": "Bearer wrong"})) is SpanExportResult.FAILURE
        await wait_until(lambda: svc.telemetry.value("otelpipe_exporter_send_failed_spans_total") > 0)
        assert svc.admin is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{svc.admin.endpoints['http']}/status") as r:
                status = await r.text()
    assert "bearertokenauth" in status
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "failed" in logged or "refused" in logged
    assert TOKEN not in status and TOKEN not in logged


@pytest.mark.parametrize("reload_ca", [False, True])
async def test_a_changed_client_ca_file_reloads_only_with_reload_client_ca_file(tmp_path: Path,
                                                                               reload_ca: bool) -> None:
    from pipeline.net.tls import CertificateReloader, TLSServerConfig
    from pipeline.testing import nop_settings

    pki = Pki(tmp_path / "ca")
    leaf = pki.issue("server")
    ca = tmp_path / "clients.pem"
    shutil.copy(pki.ca, ca)
    cfg = TLSServerConfig(cert_file=str(leaf.cert), key_file=str(leaf.key), client_ca_file=str(ca),
                          reload_client_ca_file=reload_ca)
    reloader = CertificateReloader(cfg, cfg.ssl_context, nop_settings().logger, lambda _r: None)
    ca.write_bytes(ca.read_bytes() + Pki(tmp_path / "other", "other").ca.read_bytes())
    assert reloader.refresh() is reload_ca
