from __future__ import annotations

import asyncio

import pytest

from pipeline.component import Kind
from pipeline.configtypes import Duration
from pipeline.errors import PartialSuccessError, PermanentError, QueueFullError, RetryableError
from pipeline.exporterhelper import ExporterConfig, ExporterHelper
from pipeline.model import Signal
from pipeline.queue import QueueConfig
from pipeline.retry import Backoff, RetryConfig
from pipeline.testing import NopHost, Sink, nop_settings, payload

FAST = RetryConfig(initial_interval=Duration(0.001), max_interval=Duration(0.005), max_elapsed_time=Duration(5))


def helper(sink: Sink, **kw: object) -> ExporterHelper:
    cfg = ExporterConfig(retry_on_failure=kw.pop("retry", FAST), **kw)  # type: ignore[arg-type]
    return ExporterHelper(nop_settings("sink/x", Kind.EXPORTER, Signal.TRACES), sink, cfg)


def value(h: ExporterHelper, name: str, **labels: str) -> float:
    return h.settings.telemetry.value(name, exporter="sink/x", **labels)


async def test_transient_failures_are_retried_until_delivered() -> None:
    sink = Sink()
    sink.fail_with, sink.fail_times = RetryableError("down"), 3
    h = helper(sink)
    await h.start(NopHost())
    await h.consume(payload(Signal.TRACES, n=5))
    await sink.wait_for_items(5)
    await h.shutdown()
    assert value(h, "otelpipe_exporter_sent_spans_total") == 5
    assert value(h, "otelpipe_exporter_send_failed_spans_total") == 0


async def test_permanent_error_is_not_retried_and_counted() -> None:
    sink = Sink()
    sink.fail_with, sink.fail_times = PermanentError("bad"), 1
    h = helper(sink, sending_queue=QueueConfig(enabled=False))
    with pytest.raises(PermanentError):
        await h.consume(payload(Signal.TRACES, n=4))
    assert sink.fail_times == 0 and sink.items == 0
    assert value(h, "otelpipe_exporter_send_failed_spans_total", reason="permanent_error") == 4


async def test_partial_success_counts_rejected_and_does_not_retry() -> None:
    sink = Sink()
    sink.fail_with, sink.fail_times = PartialSuccessError(2, "two bad spans"), 1
    h = helper(sink, sending_queue=QueueConfig(enabled=False))
    await h.consume(payload(Signal.TRACES, n=6))
    assert value(h, "otelpipe_exporter_sent_spans_total") == 4
    assert value(h, "otelpipe_exporter_send_failed_spans_total", reason="partial_success") == 2


async def test_full_queue_pushes_back() -> None:
    gate = asyncio.Event()

    class Slow(Sink):
        async def push(self, p):  # type: ignore[no-untyped-def]
            await gate.wait()
            await self.consume(p)

    sink = Slow()
    h = helper(sink, sending_queue=QueueConfig(num_consumers=1, queue_size=2))
    await h.start(NopHost())
    for _ in range(3):  # one in flight, two queued
        await h.consume(payload(Signal.TRACES, n=1))
        await asyncio.sleep(0)
    with pytest.raises(QueueFullError) as ei:
        await h.consume(payload(Signal.TRACES, n=1))
    assert ei.value.retry_after
    assert value(h, "otelpipe_exporter_enqueue_failed_spans_total", reason="queue_full") == 1
    assert h.settings.telemetry.value("otelpipe_exporter_queue_capacity", exporter="sink/x") == 2
    gate.set()
    await h.shutdown()  # drains
    assert sink.items == 3


async def test_shutdown_deadline_counts_abandoned_items() -> None:
    sink = Sink()
    sink.fail_with, sink.fail_times = RetryableError("down"), 10**9
    h = helper(sink, retry=RetryConfig(initial_interval=Duration(10), max_interval=Duration(10)))
    await h.start(NopHost())
    await h.consume(payload(Signal.TRACES, n=3))
    await h.consume(payload(Signal.TRACES, n=2))
    task = asyncio.ensure_future(h.shutdown())
    done, _ = await asyncio.wait({task}, timeout=0.05)
    assert not done
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value(h, "otelpipe_exporter_send_failed_spans_total", reason="shutdown") == 5


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    b = Backoff(RetryConfig(initial_interval=Duration(1), max_interval=Duration(4), randomization_factor=0.5))
    d = [b.next_delay() for _ in range(6)]
    assert 0.5 <= d[0] <= 1.5 and all(x <= 6 for x in d)
    assert b.next_delay(retry_after=30) == 30
