"""The sending queue and its consumers alone: bounded offers, draining, and what shutdown abandons."""
from __future__ import annotations

import asyncio

import pytest

from pipeline.component import Kind, Settings
from pipeline.config.types import ByteSize
from pipeline.errors import QueueFullError, RetryableError
from pipeline.exporterhelper.queue import MemoryQueue, QueueConfig, new_queue
from pipeline.exporterhelper.queue_sender import QueueSender
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.testing import Sink, nop_settings, payload, wait_until


def test_queue_sizes_decode_from_yaml() -> None:
    from pipeline.config.types import decode_dataclass
    issues: list = []
    cfg = decode_dataclass(QueueConfig, {"sizer": "bytes", "queue_size": "64MiB", "max_size": "1GiB"}, "q", issues)
    assert issues == [] and cfg.queue_size == 64 * 1024 * 1024 and cfg.max_size == 1024 ** 3
    decode_dataclass(QueueConfig, {"sizer": "byte"}, "q", issues)
    assert "q.sizer: invalid value 'byte'" in str(issues[0]) and "did you mean 'bytes'" in str(issues[0])


class Gated(Sink):
    """A backend that holds every push until `gate` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = 0

    async def push(self, p: Payload) -> None:
        self.started += 1
        await self.gate.wait()
        await self.consume(p)


def queue_sender(s: Settings, sink: Sink, cfg: QueueConfig) -> QueueSender:
    return QueueSender(str(s.id), cfg, new_queue(cfg), sink.push, obs=s.telemetry.exporter(s),
                       log=RateLimitedLog(s.logger), logger=s.logger)


def settings() -> Settings:
    return nop_settings("sink/x", Kind.EXPORTER, Signal.TRACES)


def value(s: Settings, name: str, **labels: str) -> float:
    return s.telemetry.value(name, exporter="sink/x", **labels)


async def test_consumers_send_what_was_offered_and_shutdown_drains() -> None:
    s, sink = settings(), Gated()
    q = queue_sender(s, sink, QueueConfig(num_consumers=2, queue_size=ByteSize(10)))
    for _ in range(5):
        q.offer(payload(Signal.TRACES, n=2))
    assert q.size() == 5 and value(s, "otelpipe_exporter_queue_size") == 5
    assert value(s, "otelpipe_exporter_queue_capacity") == 10
    await q.start()
    await wait_until(lambda: sink.started == 2, what="both consumers pushing")
    assert q.size() == 3
    sink.gate.set()
    await q.shutdown()
    assert sink.items == 10 and q.size() == 0


async def test_a_full_queue_refuses_with_retry_after_and_counts_enqueue_failed() -> None:
    s, sink = settings(), Sink()
    q = queue_sender(s, sink, QueueConfig(queue_size=ByteSize(2)))
    q.offer(payload(Signal.TRACES, n=1))
    q.offer(payload(Signal.TRACES, n=1))
    with pytest.raises(QueueFullError) as ei:
        q.offer(payload(Signal.TRACES, n=7))
    assert ei.value.retry_after and value(s, "otelpipe_exporter_enqueue_failed_spans_total", reason="queue_full") == 7


async def test_a_consumer_moves_on_after_a_failed_send() -> None:
    s, sink = settings(), Sink()
    sink.fail_with, sink.fail_times = RetryableError("down"), 1
    q = queue_sender(s, sink, QueueConfig(num_consumers=1))
    q.offer(payload(Signal.TRACES, n=1))
    q.offer(payload(Signal.TRACES, n=2))
    await q.start()
    await sink.wait_for_items(2)
    await q.shutdown()
    assert sink.items == 2 and sink.fail_times == 0


async def test_abandon_counts_queued_and_in_flight_payloads_as_shutdown() -> None:
    s, sink = settings(), Gated()
    q = queue_sender(s, sink, QueueConfig(num_consumers=1))
    for n in (1, 2, 3):
        q.offer(payload(Signal.TRACES, n=n))
    await q.start()
    await wait_until(lambda: sink.started == 1, what="one payload in flight")
    await q.abandon()
    assert value(s, "otelpipe_exporter_send_failed_spans_total", reason="shutdown") == 6
    assert q.size() == 0 and sink.items == 0


async def test_memory_queue_ends_takes_once_closed_and_empty_and_takes_one_oversized_payload() -> None:
    q = MemoryQueue(1, sizer="bytes", max_bytes=10)
    big = Payload(Signal.TRACES, raw=bytes(100), items=1)
    assert q.offer(big)                                 # empty: an oversized payload cannot wedge the exporter
    assert not q.offer(Payload(Signal.TRACES, raw=bytes(1), items=1))
    assert await q.take() is big
    q.close()
    assert await q.take() is None and not q.offer(big)


def test_new_queue_follows_the_config() -> None:
    q = new_queue(QueueConfig(sizer="items", queue_size=ByteSize(25), max_size=ByteSize(1000)))
    assert isinstance(q, MemoryQueue) and (q.capacity, q.sizer, q.max_bytes) == (25, "items", 1000)
