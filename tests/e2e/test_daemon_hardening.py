"""The real daemon process against hostile input: it keeps answering `/healthz` and well-behaved clients.

- a 2 MB body of 100,000 empty gzip members is refused at once (it used to cost
  time quadratic in the members, with the event loop blocked throughout);
- while a 20 MB OTLP/JSON body is decoded, `/healthz` and other exports are answered;
- with more idle sockets than the process has file descriptors, `/healthz` and an
  already-connected client keep working, and new connections work once the idle go;
- `validate` refuses a "billion laughs" YAML file with a clear error, quickly.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from pipeline.testing import make_traces

from .daemon import ROOT, Daemon

PB = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
# Generous: only there so that a regression fails instead of hanging the suite.
HANG_GUARD = 60
FD_LIMIT = 256

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:0"}
      http: {endpoint: "127.0.0.1:0", max_request_body_size: 32MiB}
exporters:
  debug: {verbosity: basic}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
  telemetry:
    metrics: {address: "127.0.0.1:0"}
"""


class LimitedDaemon(Daemon):
    """The daemon started with RLIMIT_NOFILE = (soft, hard); soft == hard leaves it nothing to raise."""

    def __init__(self, *args: str, soft: int, hard: int) -> None:
        super().__init__(*args)
        self.nofile = (soft, hard)

    async def start(self) -> dict[str, Any]:
        nofile = self.nofile

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "otelpipe", *self.args, cwd=str(ROOT), env=self.env, preexec_fn=limit,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(20):
            while True:
                line = await self._readline()
                if line is None:
                    raise RuntimeError("otelpipe exited before ready:\n" + "\n".join(self.raw))
                if line.get("msg") == "otelpipe is ready":
                    return line


@contextlib.asynccontextmanager
async def running_daemon(tmp_path: Path, daemon: Daemon | None = None) -> AsyncIterator[tuple[dict[str, Any], str]]:
    """The daemon from CONFIG: yields its ready line and the OTLP/HTTP base URL; SIGTERM at the end."""
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(CONFIG)
    d = daemon if daemon is not None else Daemon()
    d.args = ("run", "--config", str(cfg))
    try:
        ready = await d.start()
        yield ready, "http://" + ready["endpoints"]["receiver/otlp"]["http"]
        assert await d.stop(signal.SIGTERM) == 0, "\n".join(d.raw)
    finally:
        d.kill()


async def healthz(http: aiohttp.ClientSession, ready: dict[str, Any]) -> None:
    async with http.get(f"http://{ready['admin']}/healthz") as resp:
        assert resp.status == 200


async def export(http: aiohttp.ClientSession, base: str, spans: int = 2) -> None:
    async with http.post(base + "/v1/traces", data=make_traces(spans).SerializeToString(), headers=PB) as resp:
        assert resp.status == 200, await resp.read()


async def self_metric(http: aiohttp.ClientSession, ready: dict[str, Any], name: str, **labels: str) -> float:
    async with http.get(f"http://{ready['admin']}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def eventually(attempt: Callable[[], Awaitable[None]], what: str, timeout: float = 10.0) -> None:
    """Retry `attempt` until it stops raising, with a short backoff, bounded by `timeout`."""
    delay = 0.001
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await attempt()
                    return
                except (aiohttp.ClientConnectionError, AssertionError):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def test_gzip_member_flood_is_refused_at_once(tmp_path: Path) -> None:
    flood = gzip.compress(b"") * 100_000
    async with running_daemon(tmp_path) as (ready, base), aiohttp.ClientSession() as http:
        async with asyncio.timeout(HANG_GUARD):
            async with http.post(base + "/v1/traces", data=flood, headers={**PB, "Content-Encoding": "gzip"}) as resp:
                assert resp.status == 400
            await healthz(http, ready)
            await export(http, base)
        assert await self_metric(http, ready, "otelpipe_receiver_refused_spans_total", reason="too_many_members") == 1


def json_traces_body(target_bytes: int) -> bytes:
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "call-tool",
            "kind": 3, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000",
            "attributes": [{"key": "agent.tool", "value": {"stringValue": "search"}}]}
    spans = [span] * (target_bytes // (len(orjson.dumps(span)) + 1))
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})


async def test_healthz_and_other_clients_are_answered_while_a_20mb_json_body_is_decoded(tmp_path: Path) -> None:
    """Ten requests, one after another, complete before the 20 MB request does.

    Decoding 20 MB of OTLP/JSON takes seconds; each of the ten small requests
    needs its own round trip through the daemon's event loop, so they can only
    all finish first if the decoding does not hold the loop.
    """
    body = json_traces_body(20_000_000)
    uploaded = asyncio.Event()

    async def upload() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1 << 20):
            yield body[i:i + (1 << 20)]
        uploaded.set()

    async with running_daemon(tmp_path) as (ready, base), aiohttp.ClientSession() as http, \
            aiohttp.ClientSession() as hostile_http:

        async def post_hostile() -> int:
            async with hostile_http.post(base + "/v1/traces", data=upload(), headers=JSON) as resp:
                await resp.read()
                return resp.status

        async with asyncio.timeout(HANG_GUARD):
            hostile = asyncio.create_task(post_hostile())
            await uploaded.wait()
            for i in range(5):
                await healthz(http, ready)
                await export(http, base)
                assert not hostile.done(), f"the 20 MB request finished before round {i + 1} of 5"
            assert await hostile == 200


async def test_idle_sockets_beyond_the_fd_limit_starve_nothing(tmp_path: Path) -> None:
    """With soft == hard RLIMIT_NOFILE = 256, far more idle sockets than that are opened to OTLP/HTTP."""
    daemon = LimitedDaemon(soft=FD_LIMIT, hard=FD_LIMIT)
    async with running_daemon(tmp_path, daemon) as (ready, base):
        host, _, port = base.removeprefix("http://").rpartition(":")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as connected, \
                aiohttp.ClientSession() as http:
            await export(connected, base)  # opens the one keep-alive connection this client keeps using
            idle: list[asyncio.StreamWriter] = []
            try:
                async with asyncio.timeout(HANG_GUARD):
                    for _ in range(2 * FD_LIMIT):
                        _, writer = await asyncio.open_connection(host, int(port))
                        idle.append(writer)
                    await healthz(http, ready)
                    await export(connected, base)
                    assert await self_metric(http, ready, "otelpipe_receiver_refused_connections_total",
                                             reason="too_many_connections") > 0
            finally:
                for writer in idle:
                    writer.close()
            await eventually(lambda: export(http, base), "a new connection to be served once the idle ones went")
            await healthz(http, ready)


async def test_idle_sockets_against_the_admin_port_do_not_take_the_receivers_down(tmp_path: Path) -> None:
    daemon = LimitedDaemon(soft=FD_LIMIT, hard=FD_LIMIT)
    async with running_daemon(tmp_path, daemon) as (ready, base):
        host, _, port = ready["admin"].rpartition(":")
        async with aiohttp.ClientSession() as http:
            idle: list[asyncio.StreamWriter] = []
            try:
                async with asyncio.timeout(HANG_GUARD):
                    for _ in range(2 * FD_LIMIT):
                        _, writer = await asyncio.open_connection(host, int(port))
                        idle.append(writer)
                    await export(http, base)
            finally:
                for writer in idle:
                    writer.close()
            await eventually(lambda: healthz(http, ready), "/healthz to answer once the idle sockets went")
            assert await self_metric(http, ready, "otelpipe_admin_refused_connections_total",
                                     reason="too_many_connections") > 0


async def test_soft_open_file_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    daemon = LimitedDaemon(soft=FD_LIMIT, hard=2 * FD_LIMIT)
    async with running_daemon(tmp_path, daemon):
        raised = [line for line in daemon.lines if line.get("msg") == "raised the open-file limit"]
        assert [(line["from"], line["to"]) for line in raised] == [(FD_LIMIT, 2 * FD_LIMIT)]
        listening = next(line for line in daemon.lines if line.get("msg") == "OTLP/HTTP receiver listening")
        assert listening["max_connections"] == 2 * FD_LIMIT // 4


def test_validate_refuses_a_billion_laughs_file(tmp_path: Path) -> None:
    lines = ['l0: &l0 "lol"'] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text("\n".join(lines) + "\n")

    def memory_cap() -> None:  # an unbounded expansion fails with MemoryError instead of taking the machine
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    r = subprocess.run([sys.executable, "-m", "otelpipe", "validate", "--config", str(bomb)], check=False, cwd=ROOT,
                       capture_output=True, text=True, timeout=HANG_GUARD, env={"PATH": "/usr/bin:/bin"},
                       preexec_fn=memory_cap)
    assert r.returncode == 1
    assert f"{bomb}: error: invalid YAML: line " in r.stderr
    assert "aliases expand this document" in r.stderr
