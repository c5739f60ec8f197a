"""Sampling end to end: a real OTLP/gRPC client → otelpipe (head and tail samplers) → OTLP/gRPC backends."""
from __future__ import annotations

import random
from collections.abc import AsyncIterator
from fractions import Fraction

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from otelpipe import components
from otelpipe.testing import running_service
from pipeline.component import Factory, Kind
from pipeline.model import Signal
from pipeline.testing import kv
from processors.sampling import probabilistic as probabilistic_sampler
from processors.sampling import tail as tail_sampling

from .backends import GrpcBackend

CONFIG = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}
processors:
  probabilistic_sampler: {{sampling_percentage: 25}}
  tail_sampling:
    decision_wait: 300ms
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
      - {{name: slow, type: latency, latency: {{threshold_ms: 500}}}}
      - {{name: some, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}
exporters:
  otlp/head: {{endpoint: "{head}", tls: {{insecure: true}}}}
  otlp/tail: {{endpoint: "{tail}", tls: {{insecure: true}}}}
service:
  pipelines:
    traces/head: {{receivers: [otlp], processors: [probabilistic_sampler], exporters: [otlp/head]}}
    traces/tail: {{receivers: [otlp], processors: [tail_sampling], exporters: [otlp/tail]}}
    logs: {{receivers: [otlp], processors: [probabilistic_sampler], exporters: [otlp/head]}}
"""

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
ERRORS, SLOW = set(range(100)), set(range(100, 150))
AT_SHUTDOWN = range(2000, 2010)  # slow traces sent just before shutdown
SLOW |= set(AT_SHUTDOWN)


def factories() -> dict[Kind, dict[str, Factory]]:
    fmap = {kind: dict(by_type) for kind, by_type in components.factories().items()}
    for f in (probabilistic_sampler.FACTORY, tail_sampling.FACTORY):
        fmap[f.kind].setdefault(f.type, f)
    return fmap


def trace_id(n: int) -> bytes:
    return random.Random(f"trace-{n}").getrandbits(128).to_bytes(16, "big")


def keeps(tid: bytes, pct: int) -> bool:
    return int.from_bytes(tid[9:], "big") >= round((1 - Fraction(pct, 100)) * 2**56)


def span_specs(traces: range) -> list[tuple[int, int]]:
    specs = [(t, i) for t in traces for i in range(3)]
    random.Random(4).shuffle(specs)
    return specs


def trace_request(specs: list[tuple[int, int]]) -> object:
    req = Signal.TRACES.request_type()
    rs = req.resource_spans.add()  # type: ignore[union-attr]
    rs.resource.attributes.append(kv("service.name", "agent"))
    ss = rs.scope_spans.add()
    ss.scope.name = "agent"
    for t, i in specs:
        s = ss.spans.add()
        s.trace_id = trace_id(t)
        s.span_id = (t * 10 + i + 1).to_bytes(8, "big")
        s.name = f"t{t}-s{i}"
        s.start_time_unix_nano = T0 + i * MS
        s.end_time_unix_nano = T0 + (700 if t in SLOW and i == 0 else 40 + i) * MS
        if t in ERRORS and i == 2:
            s.status.code = Status.STATUS_CODE_ERROR
    return req


def logs_request(traces: range) -> object:
    req = Signal.LOGS.request_type()
    sl = req.resource_logs.add().scope_logs.add()  # type: ignore[union-attr]
    for t in traces:
        r = sl.log_records.add()
        r.trace_id = trace_id(t)
        r.body.string_value = f"log of trace {t}"
    return req


@pytest.fixture
async def backends() -> AsyncIterator[tuple[GrpcBackend, GrpcBackend]]:
    head, tail = GrpcBackend(), GrpcBackend()
    await head.start()
    await tail.start()
    yield head, tail
    await head.stop()
    await tail.stop()


def by_trace(backend: GrpcBackend) -> dict[bytes, set[bytes]]:
    out: dict[bytes, set[bytes]] = {}
    for s in backend.spans():
        out.setdefault(s.trace_id, set()).add(s.span_id)  # type: ignore[attr-defined]
    return out


async def test_head_and_tail_sampling_through_the_daemon(backends: tuple[GrpcBackend, GrpcBackend]) -> None:
    head, tail = backends
    config = CONFIG.format(head=f"127.0.0.1:{head.port}", tail=f"127.0.0.1:{tail.port}")
    async with running_service(config, factories()) as svc:
        async with grpc.aio.insecure_channel(svc.endpoint("receiver", "otlp", "grpc")) as channel:
            traces = trace_service_pb2_grpc.TraceServiceStub(channel)
            logs = logs_service_pb2_grpc.LogsServiceStub(channel)
            specs = span_specs(range(1000))
            for start in range(0, len(specs), 300):
                await traces.Export(trace_request(specs[start:start + 300]))
            await logs.Export(logs_request(range(1000)))

            # Head: exactly the traces the OTEP 235 formula keeps at 25%, whole, and their logs.
            head_kept = {trace_id(t) for t in range(1000) if keeps(trace_id(t), 25)}
            await head.wait_for(Signal.TRACES, 3 * len(head_kept))
            await head.wait_for(Signal.LOGS, len(head_kept))
            got = by_trace(head)
            assert set(got) == head_kept and all(len(v) == 3 for v in got.values())
            log_tids = [r.trace_id for req in head.requests[Signal.LOGS] for rl in req.resource_logs  # type: ignore[attr-defined]
                        for sl in rl.scope_logs for r in sl.log_records]
            assert sorted(log_tids) == sorted(head_kept)

            # Tail: every error and slow trace complete, plus the consistent 10% of the rest.
            tail_kept = {trace_id(t) for t in range(1000) if t in ERRORS or t in SLOW or keeps(trace_id(t), 10)}
            await tail.wait_for(Signal.TRACES, 3 * len(tail_kept))
            got = by_trace(tail)
            assert set(got) == tail_kept and all(len(v) == 3 for v in got.values())
            rest = tail_kept - {trace_id(t) for t in ERRORS | SLOW}
            assert 0.05 <= len(rest) / 850 <= 0.15

            # Late spans: the kept trace's arrive at once; the dropped trace's never do.
            dropped = next(t for t in range(150, 1000) if trace_id(t) not in tail_kept)
            await traces.Export(trace_request([(dropped, 5), (0, 5)]))
            await tail.wait_for(Signal.TRACES, 3 * len(tail_kept) + 1)
            assert len(by_trace(tail)[trace_id(0)]) == 4 and trace_id(dropped) not in by_trace(tail)

            # Traces still pending at shutdown are decided and flushed, not lost.
            await traces.Export(trace_request(span_specs(AT_SHUTDOWN)))
    got = by_trace(tail)
    assert all(len(got.get(trace_id(t), ())) == 3 for t in AT_SHUTDOWN)
