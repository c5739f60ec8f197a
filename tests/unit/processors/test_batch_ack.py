"""`batch` before a persistent queue: each sender is answered once the batch holding its data was written."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from otelpipe import components
from pipeline.component import acknowledges
from pipeline.config.loader import load_text
from pipeline.errors import PermanentError, QueueFullError
from pipeline.graph import Graph
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import Sink, make_traces, nop_host, nop_settings
from processors.batch import FACTORY, BatchConfig, BatchProcessor


class DurableSink(Sink):
    """Stands for an exporter with a persistent queue: `consume` returns once the data is on disk (`gate`)."""

    acknowledges = True

    def __init__(self) -> None:
        super().__init__(Signal.TRACES)
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def consume(self, payload: Payload) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().consume(payload)


def make(sink: Sink, **cfg: object) -> BatchProcessor:
    cfg.setdefault("timeout", 10.0)  # tests flush by size, force_flush or shutdown
    return FACTORY.create(nop_settings("batch"), BatchConfig(**cfg), sink)  # type: ignore[arg-type]


def traces(n: int, name: str = "span") -> Payload:
    return Payload(Signal.TRACES, message=make_traces(n, name=name))


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_sender_is_answered_only_once_the_batch_holding_its_data_was_written() -> None:
    sink = DurableSink()
    sink.gate.clear()
    proc = make(sink, send_batch_size=25)
    assert proc.acknowledges
    await proc.start(nop_host())
    senders = [asyncio.create_task(proc.consume(traces(10, f"r{i}"))) for i in range(2)]
    await settle()
    assert not any(t.done() for t in senders) and sink.items == 0   # below the size: nothing sent, nobody answered
    senders.append(asyncio.create_task(proc.consume(traces(10, "r2"))))
    await sink.entered.wait()                                        # the size was reached: the batch is being written
    await settle()
    assert not any(t.done() for t in senders)
    sink.gate.set()
    await asyncio.gather(*senders)
    assert [p.items for p in sink.payloads] == [30]                  # one batch, the whole buffer
    await proc.shutdown()


async def test_downstream_refusal_reaches_every_sender_of_the_batch_and_nothing_is_held() -> None:
    sink = DurableSink()
    sink.fail_with, sink.fail_times = QueueFullError("persistent queue full", retry_after=2.0), 1
    proc = make(sink, send_batch_size=20)
    await proc.start(nop_host())
    results = await asyncio.gather(proc.consume(traces(10)), proc.consume(traces(10)), return_exceptions=True)
    assert all(isinstance(r, QueueFullError) and r.retry_after == 2.0 for r in results), results
    assert proc.buffered_items == 0 and not proc.blocked              # the senders hold it: they send it again
    await proc.consume(traces(20))
    assert sink.items == 20
    await proc.shutdown()


async def test_a_permanent_refusal_is_told_as_such_and_not_counted_twice() -> None:
    sink = DurableSink()
    refused = PermanentError("bad data")
    refused.counted = True
    sink.fail_with, sink.fail_times = refused, 1
    proc = make(sink, send_batch_size=10)
    await proc.start(nop_host())
    with pytest.raises(PermanentError) as ei:
        await proc.consume(traces(10))
    assert ei.value.counted
    await proc.shutdown()


async def test_a_sender_that_stops_waiting_takes_back_data_not_yet_sent() -> None:
    sink = DurableSink()
    proc = make(sink, send_batch_size=100)
    await proc.start(nop_host())
    gone = asyncio.create_task(proc.consume(traces(10, "gone")))
    await settle()
    assert proc.buffered_items == 10
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert proc.buffered_items == 0       # its client will send it again: no duplicate from here
    kept = asyncio.create_task(proc.consume(traces(5, "kept")))
    await settle()
    await proc.force_flush()
    await kept
    assert [s.name for m in sink.messages() for s in m.resource_spans[0].scope_spans[0].spans] == [
        f"kept-{i}" for i in range(5)]
    await proc.shutdown()


async def test_shutdown_sends_what_is_buffered_and_answers_its_senders() -> None:
    sink = DurableSink()
    proc = make(sink, send_batch_size=100)
    await proc.start(nop_host())
    waiting = asyncio.create_task(proc.consume(traces(7)))
    await settle()
    await proc.shutdown()
    await waiting
    assert sink.items == 7


async def test_without_a_persistent_queue_downstream_senders_are_answered_on_arrival() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=100)
    assert not proc.acknowledges
    await proc.start(nop_host())
    await proc.consume(traces(10))       # returns at once, buffered
    assert proc.buffered_items == 10 and sink.items == 0
    await proc.shutdown()


PIPELINES = """
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}}}
processors: {{batch: {{}}, memory_limiter: {{limit_mib: 4096}}}}
exporters:
  debug: {{}}
  otlphttp/durable: {{endpoint: "http://127.0.0.1:9", sending_queue: {{storage: "{dir}"}}}}
connectors: {{forward: {{}}}}
service:
  pipelines:
    traces/durable: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [otlphttp/durable, debug]}}
    logs/plain: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [debug]}}
    metrics/in: {{receivers: [otlp], processors: [batch], exporters: [forward]}}
    metrics/out: {{receivers: [forward], exporters: [otlphttp/durable]}}
"""


def test_acknowledgement_follows_the_graph_to_the_persistent_queues(tmp_path: Path) -> None:
    fmap = components.factories()
    g = Graph(load_text(PIPELINES.format(dir=tmp_path), fmap, env={}), fmap, Telemetry(process_metrics=False))
    g.build()
    batches = {n.pipeline: n.component for n in g.processors if n.id.type == "batch"}
    # a fan-out with one persistent exporter; through a connector; none at all
    assert batches["traces/durable"].acknowledges and batches["metrics/in"].acknowledges
    assert not batches["logs/plain"].acknowledges
    (otlp,) = [n.component for n in g.receivers]
    assert acknowledges(otlp.consumers[Signal.TRACES]) and acknowledges(otlp.consumers[Signal.METRICS])
    assert not acknowledges(otlp.consumers[Signal.LOGS])
