from __future__ import annotations

import asyncio
import dataclasses

import pytest

from pipeline.component import Kind
from pipeline.config.types import Duration
from pipeline.errors import (
    PartialSuccessError,
    PermanentError,
    QueueFullError,
    RetryableError,
)
from pipeline.exporterhelper import ExporterConfig, ExporterHelper
from pipeline.exporterhelper.queue import QueueConfig
from pipeline.exporterhelper.retry import RetryConfig
from pipeline.model import Payload, Signal
from pipeline.testing import FakeClock, NopHost, Sink, nop_settings, payload

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


class Stalled(Sink):
    """A backend that never answers (until the test ends): everything stays queued."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def push(self, p):  # type: ignore[no-untyped-def]
        await self.gate.wait()
        await self.consume(p)


async def _fill(h: ExporterHelper, make) -> int:  # type: ignore[no-untyped-def]
    """Offer payloads until the queue refuses; returns how many were taken."""
    taken = 0
    while True:
        try:
            await h.consume(make())
        except QueueFullError:
            return taken
        taken += 1
        await asyncio.sleep(0)
        assert taken < 10_000, "the queue never filled"


async def test_default_queue_is_bounded_in_bytes_whatever_the_request_size() -> None:
    """110 queued 5 MB requests were 663 MiB: the default queue now holds at most 256 MiB of them."""
    assert QueueConfig().sizer == "requests" and QueueConfig().queue_size == 1000
    raw = bytes(5 * 1024 * 1024)              # one buffer shared by every payload: the queue measures each
    sink = Stalled()
    h = helper(sink, sending_queue=QueueConfig(num_consumers=1))
    await h.start(NopHost())
    taken = _fill(h, lambda: Payload(Signal.TRACES, raw=raw, items=1))
    n = await taken
    assert n == 1 + (256 // 5)                # one in flight + what fits in 256 MiB
    assert value(h, "otelpipe_exporter_enqueue_failed_spans_total", reason="queue_full") == 1
    sink.gate.set()
    await h.shutdown()
    assert sink.items == n


@pytest.mark.parametrize("sizer, queue_size, expected", [
    ("items", 25, 1 + 2),                     # 10-item payloads: 2 fit in 25 items (+1 in flight)
    ("bytes", 3 * 1024, 1 + 3),               # 1 KiB payloads: 3 fit in 3 KiB
])
async def test_sizer_measures_queue_size(sizer: str, queue_size: int, expected: int) -> None:
    sink = Stalled()
    h = helper(sink, sending_queue=QueueConfig(num_consumers=1, sizer=sizer, queue_size=queue_size))  # type: ignore[arg-type]
    await h.start(NopHost())
    n = await _fill(h, lambda: Payload(Signal.TRACES, raw=bytes(1024), items=10))
    assert n == expected
    tel = h.settings.telemetry
    assert tel.value("otelpipe_exporter_queue_capacity", exporter="sink/x") == queue_size
    assert (tel.value("otelpipe_exporter_queue_size", exporter="sink/x")
            == (expected - 1) * (10 if sizer == "items" else 1024))
    sink.gate.set()
    await h.shutdown()
    assert sink.items == 10 * n



# --- the chain on the injected clock (Settings.clock) ---------------------------------------------

def clocked(exporter: object, clock: FakeClock, **kw: object) -> ExporterHelper:
    """A helper whose every wait and elapsed time is on `clock`."""
    cfg = ExporterConfig(**kw)  # type: ignore[arg-type]
    settings = dataclasses.replace(nop_settings("sink/x", Kind.EXPORTER, Signal.TRACES), clock=clock)
    return ExporterHelper(settings, exporter, cfg)


STEADY = RetryConfig(initial_interval=Duration(1), multiplier=2, randomization_factor=0, max_interval=Duration(3))


async def test_retry_waits_on_the_injected_clock_and_obs_counts_the_request_once() -> None:
    clock = FakeClock()
    sink = Sink()
    sink.fail_with, sink.fail_times = RetryableError("down"), 3
    h = clocked(sink, clock, retry_on_failure=STEADY)
    await h.start(NopHost())
    await h.consume(payload(Signal.TRACES, n=5))
    for _ in range(3):                       # each failure asks the clock for one wait; let it pass
        await clock.wait_for_waiters()
        clock.advance(clock.waits[-1])
    await sink.wait_for_items(5)
    await h.shutdown()
    assert clock.waits == [1.0, 2.0, 3.0]    # initial_interval, x multiplier, capped at max_interval
    assert value(h, "otelpipe_exporter_sent_spans_total") == 5
    assert value(h, "otelpipe_exporter_send_failed_spans_total") == 0
    # the push-duration histogram sees every attempt; sent/send_failed see the request once
    assert value(h, "otelpipe_exporter_send_duration_seconds_count", outcome="retryable_error") == 3
    assert value(h, "otelpipe_exporter_send_duration_seconds_count", outcome="success") == 1


class SlowFailing:
    """A backend whose every attempt takes `took` seconds of the injected clock and fails."""

    def __init__(self, clock: FakeClock, took: float) -> None:
        self.clock, self.took, self.attempts = clock, took, 0

    async def push(self, p: Payload) -> None:
        self.attempts += 1
        self.clock.advance(self.took)
        raise RetryableError("backend unavailable")


async def test_max_elapsed_time_is_measured_on_the_injected_clock() -> None:
    clock = FakeClock()
    backend = SlowFailing(clock, took=4)
    retry = RetryConfig(initial_interval=Duration(10), max_interval=Duration(10), multiplier=1,
                        randomization_factor=0, max_elapsed_time=Duration(30))
    h = clocked(backend, clock, retry_on_failure=retry, sending_queue=QueueConfig(enabled=False))
    task = asyncio.ensure_future(h.consume(payload(Signal.TRACES, n=7)))
    for _ in range(2):                       # t=4 +10 -> 14, t=18 +10 -> 28; then 32 + 10 > 30: give up
        await clock.wait_for_waiters()
        clock.advance(clock.waits[-1])
    with pytest.raises(RetryableError):
        async with asyncio.timeout(5):
            await task
    assert clock.waits == [10.0, 10.0] and backend.attempts == 3
    assert value(h, "otelpipe_exporter_send_failed_spans_total", reason="retries_exhausted") == 7
    assert value(h, "otelpipe_exporter_send_failed_spans_total") == 7


async def test_shutdown_ends_a_retry_wait_at_once_and_the_caller_gets_a_retryable_error() -> None:
    """Queue disabled: the caller still holds the data, so shutdown ends the wait instead of sitting it out."""
    clock = FakeClock()
    sink = Sink()
    sink.fail_with, sink.fail_times = RetryableError("down"), 10**9
    h = clocked(sink, clock, retry_on_failure=RetryConfig(initial_interval=Duration(60), max_interval=Duration(60)),
                sending_queue=QueueConfig(enabled=False))
    await h.start(NopHost())
    task = asyncio.ensure_future(h.consume(payload(Signal.TRACES, n=4)))
    await clock.wait_for_waiters()
    start = clock()
    await h.shutdown()
    with pytest.raises(RetryableError):
        async with asyncio.timeout(5):
            await task
    assert clock() == start                   # no time had to pass
    assert sink.fail_times == 10**9 - 1       # one attempt, no retry after shutdown
    assert value(h, "otelpipe_exporter_send_failed_spans_total", reason="shutdown") == 4
    assert value(h, "otelpipe_exporter_send_failed_spans_total") == 4


async def test_a_push_slower_than_timeout_is_a_retryable_timeout() -> None:
    never = asyncio.Event()

    class Hung(Sink):
        async def push(self, p):  # type: ignore[no-untyped-def]
            await never.wait()

    h = helper(Hung(), timeout=Duration(0.01), retry=RetryConfig(enabled=False),
               sending_queue=QueueConfig(enabled=False))
    with pytest.raises(RetryableError) as ei:
        async with asyncio.timeout(5):
            await h.consume(payload(Signal.TRACES, n=3))
    assert isinstance(ei.value, TimeoutError)
    assert value(h, "otelpipe_exporter_send_failed_spans_total", reason="timeout") == 3
    assert value(h, "otelpipe_exporter_send_duration_seconds_count", outcome="retryable_error") == 1
