"""Trace-aware scale-out: one agent otelpipe (`loadbalancing`) in front of three gateway otelpipes
(`tail_sampling`), all real daemons in this process, over real OTLP/gRPC on loopback.

The gateways are the pods of a headless Service: each listens on its own loopback address
(127.0.0.2, .3, .4) on one shared port, and the agent's DNS resolver asks a test lookup for the
Service's name (the addresses it answers are the pods that are ready right now). Traces come
from the OpenTelemetry SDK and leave it through the SDK's own OTLP/gRPC exporter.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Status, StatusCode

from exporters.loadbalancing import resolver
from otelpipe import components
from otelpipe.testing import running_service
from pipeline.config.confmap import load_texts
from pipeline.config.loader import build
from pipeline.model import Signal
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from pipeline.testing import wait_until

from .backends import GrpcBackend

GATEWAYS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
SAMPLED_PCT = 20

AGENT = """
receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}
processors:
  batch: {timeout: 20ms}
exporters:
  loadbalancing:
    routing_key: traceID
    resolver:
      dns: {hostname: otelpipe-gateway-headless.test, port: PORT, interval: 100ms}
    protocol:
      otlp:
        tls: {insecure: true}
        retry_on_failure: {initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [loadbalancing]}
"""

STATIC_AGENT = """
receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}
processors:
  batch: {timeout: 20ms}
exporters:
  loadbalancing:
    resolver:
      static: {hostnames: [HOSTNAMES]}
    protocol:
      otlp:
        tls: {insecure: true}
        retry_on_failure: {initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [loadbalancing]}
"""

GATEWAY = """
receivers:
  otlp: {protocols: {grpc: {endpoint: "ADDRESS"}}}
processors:
  tail_sampling:
    decision_wait: 300ms
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: some, type: probabilistic, probabilistic: {sampling_percentage: PCT}}
exporters:
  otlp/all: {endpoint: "ALL", tls: {insecure: true}}
  otlp/sampled: {endpoint: "SAMPLED", tls: {insecure: true}}
service:
  pipelines:
    traces/all: {receivers: [otlp], exporters: [otlp/all]}
    traces/sampled: {receivers: [otlp], processors: [tail_sampling], exporters: [otlp/sampled]}
"""


class DNS:
    """The test's DNS for the gateways' headless Service: the addresses of the pods that are ready."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def lookup(self, name: str) -> list[str]:
        assert name == "otelpipe-gateway-headless.test"
        return list(self.addresses)


def sdk_traces(n: int, seed: int) -> list[ReadableSpan]:
    """`n` traces from the OpenTelemetry SDK: an agent run with 2-6 children, one in ten with a failed tool."""
    exporter = InMemorySpanExporter()
    gen = RandomIdGenerator()
    rng = random.Random(seed)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}), id_generator=gen)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent.runtime")
    for t in range(n):
        with tracer.start_as_current_span("agent.run", attributes={"run": t}):
            for c in range(rng.randint(2, 6)):
                with tracer.start_as_current_span(f"execute_tool tool-{c}") as span:
                    if t % 10 == 0 and c == 1:
                        span.set_status(Status(StatusCode.ERROR, "tool failed"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


async def send(endpoint: str, spans: list[ReadableSpan]) -> None:
    """Through the SDK's own OTLP/gRPC exporter, 512 spans per request (its batch processor's default)."""
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10)
    try:
        for i in range(0, len(spans), 512):
            assert await asyncio.to_thread(exporter.export, spans[i:i + 512]) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def ids(spans: list[ReadableSpan]) -> dict[int, set[int]]:
    """trace id → its span ids."""
    out: dict[int, set[int]] = {}
    for s in spans:
        assert s.context is not None
        out.setdefault(s.context.trace_id, set()).add(s.context.span_id)
    return out


def received(backend: GrpcBackend) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for s in backend.spans():
        out.setdefault(int.from_bytes(s.trace_id, "big"), set()).add(int.from_bytes(s.span_id, "big"))  # type: ignore[attr-defined]
    return out


def consistent_keep(trace_id: int, pct: int) -> bool:
    """OTEP 235: kept iff the trace id's low 56 bits reach the threshold (what `probabilistic` decides)."""
    return trace_id & (2**56 - 1) >= round((1 - Fraction(pct, 100)) * 2**56)


def free_shared_port() -> int:
    """A port free on every gateway address (each pod listens on the same port)."""
    import socket
    for _ in range(50):
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(socket.socket()) for _ in GATEWAYS]
            try:
                socks[0].bind((GATEWAYS[0], 0))
                port = socks[0].getsockname()[1]
                for s, host in zip(socks[1:], GATEWAYS[1:]):
                    s.bind((host, port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no port free on all gateway addresses")


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[DNS]:
    d = DNS(list(GATEWAYS))
    monkeypatch.setattr(resolver, "lookup_host", d.lookup)
    yield d


class Tier:
    """Three gateway daemons, each stoppable on its own, with their sinks."""

    def __init__(self, port: int, stack: contextlib.AsyncExitStack, sampled: GrpcBackend) -> None:
        self.port = port
        self.stack = stack
        self.sampled = sampled
        self.all: list[GrpcBackend] = []
        self.stops: list[contextlib.AsyncExitStack] = []
        self.services: list[Service] = []

    async def start(self) -> None:
        for host in GATEWAYS:
            sink = GrpcBackend()
            await sink.start()
            self.stack.push_async_callback(sink.stop)
            self.all.append(sink)
            yaml = (GATEWAY.replace("ADDRESS", f"{host}:{self.port}").replace("ALL", f"127.0.0.1:{sink.port}")
                    .replace("SAMPLED", f"127.0.0.1:{self.sampled.port}").replace("PCT", str(SAMPLED_PCT)))
            own = contextlib.AsyncExitStack()
            self.services.append(await own.enter_async_context(running_service(yaml)))
            self.stops.append(own)
            self.stack.push_async_callback(own.aclose)


@pytest.fixture
async def tier(dns: DNS) -> AsyncIterator[Tier]:
    async with contextlib.AsyncExitStack() as stack:
        sampled = GrpcBackend()
        await sampled.start()
        stack.push_async_callback(sampled.stop)
        t = Tier(free_shared_port(), stack, sampled)
        await t.start()
        yield t


async def test_every_trace_lands_whole_on_one_gateway_evenly_and_tail_sampling_decides_whole_traces(
        tier: Tier) -> None:
    spans = sdk_traces(1000, seed=1)
    want = ids(spans)
    assert len(want) == 1000 and len(spans) > 3000
    async with running_service(AGENT.replace("PORT", str(tier.port))) as agent:
        await send(agent.endpoint("receiver", "otlp", "grpc"), spans)
        await wait_until(lambda: sum(b.items[Signal.TRACES] for b in tier.all) == len(spans), timeout=20,
                         what="every span at the gateways")
    for stop in tier.stops:  # SIGTERM-like: tail sampling decides what is pending and flushes it
        await stop.aclose()

    # every trace on exactly one gateway, whole
    per_gateway = [received(b) for b in tier.all]
    where: dict[int, list[int]] = {}
    for g, got in enumerate(per_gateway):
        for tid in got:
            where.setdefault(tid, []).append(g)
    assert set(where) == set(want)
    assert all(len(gs) == 1 for gs in where.values())
    assert all(per_gateway[gs[0]][tid] == want[tid] for tid, gs in where.items())
    # spread within ±15 % of even
    counts = [len(got) for got in per_gateway]
    assert all(abs(c / (1000 / 3) - 1) <= 0.15 for c in counts), counts

    # tail sampling saw whole traces: each is kept whole or not at all, exactly as the policies say
    kept = received(tier.sampled)
    errors = {tid for tid, s in ids([s for s in spans if s.status.status_code is StatusCode.ERROR]).items()}
    expected = {tid for tid in want if tid in errors or consistent_keep(tid, SAMPLED_PCT)}
    assert set(kept) == expected
    assert all(kept[tid] == want[tid] for tid in kept)
    assert 100 < len(expected) < 1000


async def test_stopping_a_gateway_mid_run_loses_nothing_once_dns_drops_it(tier: Tier, dns: DNS) -> None:
    rounds = [sdk_traces(300, seed=s) for s in (2, 3, 4)]
    async with running_service(AGENT.replace("PORT", str(tier.port))) as agent:
        endpoint = agent.endpoint("receiver", "otlp", "grpc")
        lb: Any = agent.component("exporter", "loadbalancing")
        tel = agent.telemetry

        def delivered() -> int:
            return sum(b.items[Signal.TRACES] for b in tier.all)

        await send(endpoint, rounds[0])
        await wait_until(lambda: delivered() == len(rounds[0]), timeout=20, what="round 1 at the gateways")

        # The second gateway's pod stops (it drains what it has) before DNS knows: its share of round 2
        # fails and is retried by its own queue in the agent.
        await tier.stops[1].aclose()
        await send(endpoint, rounds[1])
        stopped_ep = f"{GATEWAYS[1]}:{tier.port}"
        await wait_until(lambda: tel.value("otelpipe_exporter_send_duration_seconds_count",
                                           exporter=f"loadbalancing/{stopped_ep}", outcome="retryable_error") > 0,
                         timeout=20, what="the stopped gateway's share to be retried")
        assert stopped_ep in lb.backends

        # DNS drops the pod: its share is routed to the others, and so is everything after.
        dns.addresses = [GATEWAYS[0], GATEWAYS[2]]
        await wait_until(lambda: stopped_ep not in lb.backends, timeout=10, what="the resolver to drop it")
        await send(endpoint, rounds[2])
        total = sum(len(r) for r in rounds)
        await wait_until(lambda: delivered() == total, timeout=20, what="every span of every round delivered")
        assert tel.value("otelpipe_loadbalancer_rerouted_spans_total") > 0
        assert tel.value("otelpipe_exporter_send_failed_spans_total") == 0
    for stop in tier.stops:
        await stop.aclose()

    got: dict[int, set[int]] = {}
    n = 0
    for b in tier.all:
        for tid, sids in received(b).items():
            got.setdefault(tid, set()).update(sids)
        n += len(b.spans())
    want: dict[int, set[int]] = {}
    for r in rounds:
        for tid, sids in ids(r).items():
            want.setdefault(tid, set()).update(sids)
    assert got == want and n == sum(len(r) for r in rounds)  # everything, once
    # with nothing sampled away in round 3 either: the sampled sink has whole traces of all rounds
    assert all(received(tier.sampled)[tid] == want[tid] for tid in received(tier.sampled))


@contextlib.asynccontextmanager
async def reloadable_service(text: list[str]) -> AsyncIterator[Service]:
    """The daemon with a config it reads again on `reload()`: `text[0]`, as the test changes it."""
    overlay = "service: {telemetry: {metrics: {address: '127.0.0.1:0', readers: []}}}"

    def load() -> Any:
        raw, issues = load_texts([("<agent config>", text[0]), ("<test overlay>", overlay)])
        return build(raw, issues, components.factories(), {})

    svc = Service(load(), components.factories(), reload_config=load, telemetry=Telemetry(process_metrics=False))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.shutdown()


async def test_a_static_list_changed_by_reload_hands_a_stopped_gateways_share_to_the_others(tier: Tier) -> None:
    def hostnames(hosts: tuple[str, ...]) -> str:
        return STATIC_AGENT.replace("HOSTNAMES", ", ".join(f"{h}:{tier.port}" for h in hosts))

    rounds = [sdk_traces(300, seed=s) for s in (5, 6, 7)]
    text = [hostnames(GATEWAYS)]
    async with reloadable_service(text) as agent:
        tel = agent.telemetry

        def delivered() -> int:
            return sum(b.items[Signal.TRACES] for b in tier.all)

        await send(agent.endpoint("receiver", "otlp", "grpc"), rounds[0])
        await wait_until(lambda: delivered() == len(rounds[0]), timeout=20, what="round 1 at the gateways")
        await tier.stops[1].aclose()  # the second gateway goes away; the agent's list still names it
        await send(agent.endpoint("receiver", "otlp", "grpc"), rounds[1])
        stopped = f"loadbalancing/{GATEWAYS[1]}:{tier.port}"
        await wait_until(lambda: tel.value("otelpipe_exporter_send_duration_seconds_count", exporter=stopped,
                                           outcome="retryable_error") > 0, timeout=20, what="its share retried")

        text[0] = hostnames((GATEWAYS[0], GATEWAYS[2]))
        assert (await agent.reload()).result == "ok"
        await send(agent.endpoint("receiver", "otlp", "grpc"), rounds[2])
        total = sum(len(r) for r in rounds)
        await wait_until(lambda: delivered() == total, timeout=20, what="every span, the stopped one's share too")
        await agent.settled()  # the replaced load balancer has stopped, having handed everything on
        assert tel.value("otelpipe_loadbalancer_rerouted_spans_total") > 0
        assert tel.value("otelpipe_exporter_send_failed_spans_total") == 0
    for stop in tier.stops:
        await stop.aclose()
    per_gateway = [received(b) for b in tier.all]
    where: dict[int, list[int]] = {}
    for g, got in enumerate(per_gateway):
        for tid in got:
            where.setdefault(tid, []).append(g)
    want = {tid: sids for r in rounds for tid, sids in ids(r).items()}
    assert set(where) == set(want) and all(len(gs) == 1 for gs in where.values())  # each trace on one gateway
    assert all(per_gateway[gs[0]][tid] == want[tid] for tid, gs in where.items())  # whole
    assert sum(len(b.spans()) for b in tier.all) == sum(len(r) for r in rounds)
