"""Credentials in exporter URLs never reach the daemon's logs, `otelpipe validate` or `/status` (issue 9).

Exporter endpoints often carry secrets (`http://user:password@host/otlp?api_key=...`). The real
daemon runs against backends that fail in every way an exporter reports (HTTP 500, 503 with
retries, connection refused, gRPC UNAVAILABLE) while its info-level log, its `/status` and
`otelpipe validate` on a broken config are searched for the password and the key.
"""
from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pipeline.testing import make_traces

from .daemon import ROOT, Daemon

PASSWORD = "s3cr3tpw"
API_KEY = "K123"
HEADER_TOKEN = "t0k3nvalue"
SECRETS = (PASSWORD, API_KEY, HEADER_TOKEN)


def secret_url(hostport: str, path: str) -> str:
    return f"http://user:{PASSWORD}@{hostport}{path}?api_key={API_KEY}"


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} printed in:\n{text}"


class FailingBackend:
    """OTLP/HTTP backend: `/bad/...` answers 500 (permanent), `/busy/...` 503 (retried); counts calls."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"bad": 0, "busy": 0}
        self.cond = asyncio.Condition()
        self.runner: web.AppRunner | None = None
        self.hostport = ""

    async def handle(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        async with self.cond:
            self.calls[kind] += 1
            self.cond.notify_all()
        return web.Response(status=500 if kind == "bad" else 503, text="backend failure")

    async def wait_for_calls(self, kind: str, n: int) -> None:
        async with asyncio.timeout(20):
            async with self.cond:
                await self.cond.wait_for(lambda: self.calls[kind] >= n)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{kind:bad|busy}{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.hostport = f"127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def backend() -> AsyncIterator[FailingBackend]:
    b = FailingBackend()
    await b.start()
    yield b
    await b.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_daemon_logs_and_status_never_carry_url_secrets(tmp_path: Path, backend: FailingBackend) -> None:
    down = f"127.0.0.1:{closed_port()}"
    fast_retry = "{initial_interval: 5ms, max_interval: 10ms, max_elapsed_time: 200ms}"
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}
exporters:
  otlphttp/bad: {{endpoint: "{secret_url(backend.hostport, '/bad')}"}}
  otlphttp/busy: {{endpoint: "{secret_url(backend.hostport, '/busy')}", retry_on_failure: {fast_retry}}}
  otlphttp/down:
    endpoint: "{secret_url(down, '/otlp')}"
    headers: {{X-Api-Token: "{HEADER_TOKEN}"}}
    retry_on_failure: {fast_retry}
  otlp/down:
    endpoint: "{down}"
    tls: {{insecure: true}}
    headers: {{authorization: "Bearer {HEADER_TOKEN}"}}
    retry_on_failure: {fast_retry}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlphttp/bad, otlphttp/busy, otlphttp/down, otlp/down]}}
  telemetry:
    logs: {{level: info}}
    metrics: {{address: "127.0.0.1:0"}}
""")
    d = Daemon("run", "--config", str(cfg))
    try:
        ready = await d.start()
        receiver = ready["endpoints"]["receiver/otlp"]["http"]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://{receiver}/v1/traces", data=make_traces(5).SerializeToString(),
                                 headers={"Content-Type": "application/x-protobuf"}) as resp:
                assert resp.status == 200
            await backend.wait_for_calls("bad", 1)
            await backend.wait_for_calls("busy", 2)  # retried at least once
            async with http.get(f"http://{ready['admin']}/status") as resp:
                assert resp.status == 200
                status = await resp.text()
        # SIGTERM drains the queues: every exporter finishes its retries and logs the outcome before exit.
        code = await d.stop(signal.SIGTERM)
    finally:
        d.kill()
    output = "\n".join(d.raw)
    assert code == 0, output
    assert "otlphttp/busy" in status
    assert_no_secret(status)
    msgs = [(line.get("component"), line.get("msg")) for line in d.lines]
    assert ("otlphttp/bad", "export failed permanently; dropping data") in msgs, output
    for cid in ("otlphttp/busy", "otlphttp/down", "otlp/down"):
        assert (cid, "export failed; will retry") in msgs, output
        assert (cid, "export failed after retrying for max_elapsed_time; dropping data") in msgs, output
    assert_no_secret(output)
    # The start-up line still tells endpoints apart: scheme, host, port and path are kept.
    assert f"http://[REDACTED]@{backend.hostport}/busy/v1/traces?api_key=[REDACTED]" in output


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otelpipe", *args], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_validate_never_prints_url_secrets(tmp_path: Path) -> None:
    url = secret_url("collector:4318", "/otlp")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:4318"}}}}}}
exporters:
  otlphttp/enc: {{endpoint: "{url}", encoding: xml}}
  otlphttp/auth: {{endpoint: "{url}", headers: {{Authorization: "Bearer {HEADER_TOKEN}"}}}}
  otlphttp/ipv6: {{endpoint: "http://user:{PASSWORD}@[::1/otlp?api_key={API_KEY}"}}
  otlphttp/tls: {{endpoint: "{url}", tls: "{url}"}}
  otlphttp/hdr: {{endpoint: "{url}", headers: "Authorization: Bearer {HEADER_TOKEN}"}}
  otlp/userinfo: {{endpoint: "http://user:{PASSWORD}@collector:4317"}}
  otlp/query: {{endpoint: "collector:4317?api_key={API_KEY}"}}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp/enc, otlphttp/auth, otlphttp/ipv6, otlphttp/tls, otlphttp/hdr, otlp/userinfo, otlp/query]
""")
    r = run_cli("validate", "--config", str(bad))
    assert r.returncode == 1, r.stderr
    for path in ("exporters.otlphttp/enc.encoding", "exporters.otlphttp/auth.endpoint",
                 "exporters.otlphttp/ipv6.endpoint", "exporters.otlphttp/tls.tls", "exporters.otlphttp/hdr.headers",
                 "exporters.otlp/userinfo.endpoint", "exporters.otlp/query.endpoint"):
        assert f"{bad}: error: {path}: " in r.stderr, (path, r.stderr)
    assert "invalid configuration: 7 problems" in r.stderr
    assert_no_secret(r.stdout + r.stderr)
