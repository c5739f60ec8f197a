"""The loadbalancing exporter against real OTLP/gRPC backends on loopback addresses.

DNS is played by a test lookup: each backend listens on its own loopback address
(127.0.0.2, .3, .4 ...) on one shared port, as pods behind a headless Service do.
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from exporters.loadbalancing import FACTORY
from exporters.loadbalancing.config import LoadBalancingConfig
from exporters.loadbalancing.exporter import LoadBalancingExporter
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue, QueueFullError, RetryableError
from pipeline.exporterhelper import ExporterHelper
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import FakeClock, kv, make_logs, make_metrics, nop_host, nop_settings, wait_until
from tests.e2e.backends import GrpcBackend


class LoopbackBackend(GrpcBackend):
    """A recording OTLP/gRPC backend on a chosen loopback address (and port)."""

    def __init__(self, host: str, port: int = 0) -> None:
        super().__init__()
        self.host, self.want = host, port

    async def start(self) -> str:
        self.server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            self._servicer(Signal.TRACES, trace_service_pb2_grpc.TraceServiceServicer), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            self._servicer(Signal.METRICS, metrics_service_pb2_grpc.MetricsServiceServicer), self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
            self._servicer(Signal.LOGS, logs_service_pb2_grpc.LogsServiceServicer), self.server)
        self.port = self.server.add_insecure_port(f"{self.host}:{self.want}")
        await self.server.start()
        return f"{self.host}:{self.port}"


class DNS:
    """The test's DNS: what the gateway name resolves to right now."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.error: Exception | None = None

    async def lookup(self, name: str) -> list[str]:
        if self.error is not None:
            raise self.error
        return list(self.addresses)


@pytest.fixture
async def backends() -> AsyncIterator[list[LoopbackBackend]]:
    first = LoopbackBackend("127.0.0.2")
    await first.start()
    out = [first] + [LoopbackBackend(f"127.0.0.{i}", first.port) for i in (3, 4, 5)]
    for b in out[1:]:
        await b.start()
    yield out
    for b in out:
        await b.stop()


def config(raw: dict[str, Any]) -> LoadBalancingConfig:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(LoadBalancingConfig, raw, "exporters.loadbalancing", issues)
    assert not [i for i in issues if not i.warning], issues
    assert isinstance(cfg, LoadBalancingConfig)
    return cfg


def dns_config(port: int, **otlp: Any) -> LoadBalancingConfig:
    return config({"resolver": {"dns": {"hostname": "gateways.test", "port": port, "interval": "5s"}},
                   "protocol": {"otlp": {"tls": {"insecure": True}, **otlp}}})


def exporter(cfg: LoadBalancingConfig, dns: DNS | None = None, *, signal: Signal = Signal.TRACES,
             clock: FakeClock | None = None, tel: Telemetry | None = None) -> LoadBalancingExporter:
    settings = nop_settings("loadbalancing", Kind.EXPORTER, signal, telemetry=tel)
    if clock is not None:
        settings = dataclasses.replace(settings, clock=clock)
    return LoadBalancingExporter(settings, cfg, lookup=dns.lookup if dns else None)


def traces(n_traces: int, spans_per_trace: int, seed: int = 0) -> Payload:
    rng = random.Random(seed)
    req = Signal.TRACES.request_type()
    rs = req.resource_spans.add()  # type: ignore[union-attr]
    rs.resource.attributes.append(kv("service.name", "agent"))
    ss = rs.scope_spans.add()
    tids = [rng.randbytes(16) for _ in range(n_traces)]
    for i in range(n_traces * spans_per_trace):
        s = ss.spans.add()
        s.trace_id = tids[i % n_traces]
        s.span_id = rng.randbytes(8)
        s.name = f"span-{i}"
    return Payload(Signal.TRACES, raw=req.SerializeToString())


def spans_at(b: GrpcBackend) -> list[tuple[bytes, bytes]]:
    return [(s.trace_id, s.span_id) for s in b.spans()]  # type: ignore[attr-defined]


def value(tel: Telemetry, name: str, **labels: str) -> float:
    return tel.value(f"otelpipe_{name}", **labels)


async def test_every_trace_goes_to_one_backend_and_each_backend_is_counted(
        backends: list[LoopbackBackend]) -> None:
    three = backends[:3]
    cfg = config({"resolver": {"static": {"hostnames": [f"{b.host}:{b.port}" for b in three]}},
                  "protocol": {"otlp": {"tls": {"insecure": True}}}})
    tel = Telemetry(process_metrics=False)
    lb = exporter(cfg, tel=tel)
    helper = ExporterHelper(lb.settings, lb, cfg)  # as the graph wraps every exporter
    await helper.start(nop_host())
    sent = [traces(60, 5, seed=i) for i in range(4)]
    for p in sent:
        await helper.consume(p)
    await helper.shutdown()  # drains the load balancer's queue, then every backend's
    everything = [x for b in three for x in spans_at(b)]
    assert sorted(everything) == sorted(
        (s.trace_id, s.span_id) for p in sent for rs in p.message.resource_spans  # type: ignore[union-attr]
        for ss in rs.scope_spans for s in ss.spans)
    owner: dict[bytes, set[int]] = {}
    for i, b in enumerate(three):
        assert b.spans()  # every backend got its share
        for tid, _ in spans_at(b):
            owner.setdefault(tid, set()).add(i)
    assert all(len(o) == 1 for o in owner.values())
    total = len(everything)
    assert value(tel, "exporter_sent_spans_total", exporter="loadbalancing") == total
    for b in three:
        ep = f"{b.host}:{b.port}"
        assert value(tel, "loadbalancer_backend_spans_total", endpoint=ep) == len(b.spans())
        assert value(tel, "exporter_sent_spans_total", exporter=f"loadbalancing/{ep}") == len(b.spans())
    assert value(tel, "loadbalancer_num_backends", resolver="static") == 3
    assert value(tel, "loadbalancer_num_resolutions_total", resolver="static", success="true") == 1


async def test_a_backend_that_is_down_keeps_its_share_then_it_is_rerouted_when_dns_drops_it(
        backends: list[LoopbackBackend]) -> None:
    a, b, c = backends[:3]
    port = a.port
    dns = DNS([a.host, b.host, c.host])
    clock = FakeClock()
    tel = Telemetry(process_metrics=False)
    cfg = dns_config(port, retry_on_failure={"initial_interval": "1s", "max_elapsed_time": "0s"})
    lb = exporter(cfg, dns, clock=clock, tel=tel)
    await lb.start(nop_host())
    assert lb.backends == (f"127.0.0.2:{port}", f"127.0.0.3:{port}", f"127.0.0.4:{port}")
    await b.stop()  # the pod goes away before DNS knows
    sent = traces(300, 4)
    await lb.push(sent)
    b_ep = f"{b.host}:{port}"
    b_share = value(tel, "loadbalancer_backend_spans_total", endpoint=b_ep)
    assert b_share > 0
    await wait_until(lambda: len(a.spans()) + len(c.spans()) + b_share == 1200, what="a and c to get their shares")
    # b's share waits for a retry (the resolver's own wait is the other one)
    await clock.wait_for_waiters(2)
    assert value(tel, "exporter_send_failed_spans_total", exporter=f"loadbalancing/{b_ep}") == 0
    dns.addresses = [a.host, c.host]
    clock.advance(5)  # the resolver's interval: b is dropped, its retry wait ends, its share is routed again
    await wait_until(lambda: len(a.spans()) + len(c.spans()) == 1200, what="b's share to reach a and c")
    assert sorted(spans_at(a) + spans_at(c)) == sorted(
        (s.trace_id, s.span_id) for s in sent.message.resource_spans[0].scope_spans[0].spans)  # type: ignore[union-attr]
    assert lb.backends == (f"127.0.0.2:{port}", f"127.0.0.4:{port}")
    assert value(tel, "loadbalancer_rerouted_spans_total") == b_share
    assert value(tel, "loadbalancer_num_backend_updates_total") == 2
    assert value(tel, "loadbalancer_num_backends") == 2
    # the removed backend's series stay a while (scrapes see their last values), then go
    assert value(tel, "exporter_queue_capacity", exporter=f"loadbalancing/{b_ep}") == 1000
    await wait_until(lambda: clock.waiting >= 2, what="the drained backend's wait before its series go")
    clock.advance(600)
    await wait_until(lambda: f"loadbalancing/{b_ep}" not in str(tel.snapshot()), what="b's series to be gone")
    assert value(tel, "loadbalancer_backend_spans_total", endpoint=f"{a.host}:{port}") > 0
    await lb.shutdown()


async def test_forgetting_a_removed_backend_leaves_the_other_signals_series_of_that_backend(
        backends: list[LoopbackBackend]) -> None:
    # The traces and metrics pipelines each have a load balancer (one exporter id, one telemetry); DNS
    # drops a backend for traces only (its next lookup runs first). The series the metrics load balancer
    # keeps for that backend must stay.
    a, b = backends[:2]
    tel = Telemetry(process_metrics=False)
    traces_dns, metrics_dns = DNS([a.host, b.host]), DNS([a.host, b.host])
    clock = FakeClock()
    traces_lb = exporter(dns_config(a.port), traces_dns, clock=clock, tel=tel)
    metrics_lb = exporter(dns_config(a.port), metrics_dns, signal=Signal.METRICS, clock=FakeClock(), tel=tel)
    for lb in (traces_lb, metrics_lb):
        await lb.start(nop_host())
    await traces_lb.push(traces(50, 2))
    for i in range(20):
        await metrics_lb.push(Payload(Signal.METRICS, raw=make_metrics(2, service=f"svc{i}").SerializeToString()))
    b_id = f"loadbalancing/{b.host}:{b.port}"
    await wait_until(lambda: value(tel, "exporter_sent_metric_points_total", exporter=b_id) > 0
                     and value(tel, "exporter_sent_spans_total", exporter=b_id) > 0, what="both signals at b")
    traces_dns.addresses = [a.host]
    await clock.wait_for_waiters(1)
    clock.advance(5)
    await wait_until(lambda: len(traces_lb.backends) == 1, what="b dropped for traces")
    await wait_until(lambda: clock.waiting >= 2, what="the drained backend's wait before its series go")
    clock.advance(600)

    def of_b(name: str, **labels: str) -> bool:
        return any(s["labels"].get("exporter") == b_id and labels.items() <= s["labels"].items()  # type: ignore[union-attr, attr-defined]
                   for s in tel.snapshot().get(f"otelpipe_{name}", []))

    await wait_until(lambda: not of_b("exporter_sent_spans_total") and not of_b("exporter_queue_capacity",
                                                                               data_type="traces"),
                     what="b's traces series gone")
    assert value(tel, "exporter_sent_metric_points_total", exporter=b_id) > 0
    assert value(tel, "exporter_queue_capacity", exporter=b_id, data_type="metrics") == 1000
    for lb in (traces_lb, metrics_lb):
        await lb.shutdown()


async def test_a_retry_in_flight_when_the_backend_is_removed_goes_to_the_others_at_once(
        backends: list[LoopbackBackend]) -> None:
    a, b = backends[:2]
    dns = DNS([a.host, b.host])
    clock = FakeClock()
    tel = Telemetry(process_metrics=False)
    lb = exporter(dns_config(a.port), dns, clock=clock, tel=tel)
    await lb.start(nop_host())
    b.failing = True  # answers UNAVAILABLE: b's share is retried
    await lb.push(traces(100, 2))
    b_ep = f"{b.host}:{b.port}"
    share = value(tel, "loadbalancer_backend_spans_total", endpoint=b_ep)
    await clock.wait_for_waiters(2)
    waits = len(clock.waits)
    dns.addresses = [a.host]
    clock.advance(5)  # only the resolver's interval: b's 5 s backoff is not over, and need not be
    await wait_until(lambda: len(a.spans()) == 200, what="everything at a")
    assert value(tel, "loadbalancer_rerouted_spans_total") == share
    assert value(tel, "exporter_send_failed_spans_total") == 0
    assert clock.waits[waits:waits + 1] == [5.0]  # the resolver waits again; b's retry did not
    await lb.shutdown()


async def test_a_full_backend_queue_refuses_the_whole_request_so_nothing_is_sent_twice(
        backends: list[LoopbackBackend]) -> None:
    a, b = backends[:2]
    dns = DNS([a.host, b.host])
    clock = FakeClock()
    cfg = dns_config(a.port, sending_queue={"queue_size": 1, "num_consumers": 1})
    lb = exporter(cfg, dns, clock=clock)
    await lb.start(nop_host())
    b.failing = True
    await lb.push(traces(50, 2, seed=1))  # b's consumer takes its share and waits to retry it
    await clock.wait_for_waiters(2)
    await lb.push(traces(50, 2, seed=2))  # b's queue now holds one request: full
    await wait_until(lambda: len(a.spans()) > 0 and a.calls == 2, what="a to get both shares")
    before = len(a.spans())
    with pytest.raises(QueueFullError, match=f"backend {b.host}:{b.port} is full"):
        await lb.push(traces(50, 2, seed=3))
    assert len(a.spans()) == before and a.calls == 2  # a took nothing of the refused request
    b.failing = False
    clock.advance(60)
    await wait_until(lambda: len(a.spans()) + len(b.spans()) == 200, what="b to recover and send both shares")
    await lb.push(traces(50, 2, seed=3))
    await lb.shutdown()
    assert len(a.spans()) + len(b.spans()) == 300


async def test_a_share_refused_by_the_byte_bound_after_others_were_taken_is_still_queued_once(
        backends: list[LoopbackBackend]) -> None:
    # b's queue has room in requests but not in bytes (max_size): the unit check passes, a takes its share
    # first, then b's queue refuses. Raising then would make the sender retry the whole request and a
    # would get its share twice; b's share is queued past the byte bound instead (bounded by queue_size).
    a, b = backends[:2]
    dns = DNS([a.host, b.host])
    clock = FakeClock()
    tel = Telemetry(process_metrics=False)
    cfg = dns_config(a.port, sending_queue={"queue_size": 100, "max_size": 2000, "num_consumers": 1})
    lb = exporter(cfg, dns, clock=clock, tel=tel)
    await lb.start(nop_host())
    b.failing = True
    sent = [traces(50, 2, seed=s) for s in (1, 2, 3)]
    await lb.push(sent[0])  # b's consumer takes its share and waits to retry it
    await clock.wait_for_waiters(2)
    await wait_until(lambda: a.calls == 1, what="a's first share")
    await lb.push(sent[1])  # b's queue: one share (an empty queue takes anything)
    await wait_until(lambda: a.calls == 2, what="a's second share")
    await lb.push(sent[2])  # b's share is over 2000 bytes with the one queued
    await wait_until(lambda: a.calls == 3, what="a's third share")
    b.failing = False
    clock.advance(60)
    await lb.shutdown()
    got = spans_at(a) + spans_at(b)
    assert len(got) == len(set(got)) == 300
    assert value(tel, "exporter_enqueue_failed_spans_total") == 0


async def test_without_a_resolved_backend_data_is_refused_retryably_until_dns_answers(
        backends: list[LoopbackBackend]) -> None:
    a = backends[0]
    dns = DNS([a.host])
    dns.error = OSError("Name or service not known")
    clock = FakeClock()
    tel = Telemetry(process_metrics=False)
    lb = exporter(dns_config(a.port), dns, clock=clock, tel=tel)
    await lb.start(nop_host())
    with pytest.raises(RetryableError, match="no backend to send to.*Name or service not known"):
        await lb.push(traces(5, 2))
    assert value(tel, "loadbalancer_num_resolutions_total", success="false") == 1
    dns.error = None
    await clock.wait_for_waiters(1)
    clock.advance(5)
    await wait_until(lambda: lb.backends == (f"{a.host}:{a.port}",), what="the backend to be resolved")
    await lb.push(traces(5, 2))
    # a failed lookup later keeps the backends the exporter has
    dns.error = TimeoutError()
    await clock.wait_for_waiters(1)
    clock.advance(5)
    await wait_until(lambda: value(tel, "loadbalancer_num_resolutions_total", success="false") == 2,
                     what="the second failure")
    assert lb.backends == (f"{a.host}:{a.port}",)
    await lb.shutdown()
    assert len(a.spans()) == 10


async def test_a_new_backend_takes_about_a_quarter_of_the_traces_and_only_from_the_others(
        backends: list[LoopbackBackend]) -> None:
    dns = DNS([b.host for b in backends[:3]])
    clock = FakeClock()
    lb = exporter(dns_config(backends[0].port), dns, clock=clock)
    await lb.start(nop_host())
    p = traces(1000, 1)
    await lb.push(p)
    await wait_until(lambda: sum(len(b.spans()) for b in backends) == 1000, what="the first round")
    first = {tid: i for i, b in enumerate(backends) for tid, _ in spans_at(b)}
    for b in backends:
        b.requests[Signal.TRACES].clear()
    dns.addresses = [b.host for b in backends]
    await clock.wait_for_waiters(1)
    clock.advance(5)
    await wait_until(lambda: len(lb.backends) == 4, what="the fourth backend")
    await lb.push(traces(1000, 1))  # the same trace ids again
    await wait_until(lambda: sum(len(b.spans()) for b in backends) == 1000, what="the second round")
    second = {tid: i for i, b in enumerate(backends) for tid, _ in spans_at(b)}
    moved = [tid for tid in first if first[tid] != second[tid]]
    assert {second[tid] for tid in moved} == {3}
    assert 0.18 < len(moved) / 1000 < 0.32
    await lb.shutdown()


@pytest.mark.parametrize(("signal", "key"), [(Signal.METRICS, "service"), (Signal.METRICS, "metric"),
                                             (Signal.LOGS, "service"), (Signal.LOGS, "traceID")])
async def test_metrics_and_logs_are_routed_by_their_key(backends: list[LoopbackBackend], signal: Signal,
                                                        key: str) -> None:
    three = backends[:3]
    cfg = config({"routing_key": key, "resolver": {"static": {"hostnames": [f"{b.host}:{b.port}" for b in three]}},
                  "protocol": {"otlp": {"tls": {"insecure": True}}}})
    lb = exporter(cfg, signal=signal)
    await lb.start(nop_host())
    sent = 0
    for i in range(30):
        msg = make_metrics(3, name=f"m{i % 7}", service=f"svc{i}") if signal is Signal.METRICS else \
            make_logs(3, service=f"svc{i}")
        if signal is Signal.LOGS:
            for j, rec in enumerate(msg.resource_logs[0].scope_logs[0].log_records):  # type: ignore[union-attr]
                rec.trace_id = (i * 10 + j + 1).to_bytes(16, "big")
        p = Payload(signal, raw=msg.SerializeToString())
        sent += p.items
        await lb.push(p)
    await lb.shutdown()
    assert sum(b.items[signal] for b in three) == sent
    assert sum(1 for b in three if b.items[signal]) >= 2
    seen: dict[str, set[int]] = {}
    for i, b in enumerate(three):
        for req in b.requests[signal]:
            for res in getattr(req, signal.resource_field):
                service = res.resource.attributes[0].value.string_value
                for sc in getattr(res, signal.scope_field):
                    for item in getattr(sc, signal.items_field):
                        k = service if key == "service" else item.name if key == "metric" else item.trace_id.hex()
                        seen.setdefault(k, set()).add(i)
    assert all(len(v) == 1 for v in seen.values())


async def test_a_routing_key_that_cannot_route_the_pipelines_signal_stops_the_start() -> None:
    cfg = config({"routing_key": "metric", "resolver": {"static": {"hostnames": ["127.0.0.1:9"]}}})
    lb = exporter(cfg)
    with pytest.raises(ValueError, match="routing_key 'metric' cannot route traces"):
        await lb.start(nop_host())
    await lb.shutdown()


async def test_shutdown_without_start_and_twice_and_a_default_factory() -> None:
    cfg = config({"resolver": {"static": {"hostnames": ["127.0.0.1:9"]}}})
    lb = FACTORY.create(nop_settings("loadbalancing", Kind.EXPORTER, Signal.TRACES), cfg)
    await lb.shutdown()
    await lb.shutdown()
    await asyncio.sleep(0)
