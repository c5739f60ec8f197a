"""The timeout wrapper alone: each attempt gets `timeout`, and a slow push becomes a retryable timeout."""
from __future__ import annotations

import asyncio

import pytest

from pipeline.component import Kind
from pipeline.config.types import Duration
from pipeline.errors import PermanentError, RetryableError
from pipeline.exporterhelper.errors import ExportTimeoutError
from pipeline.exporterhelper.obs import ObsSender
from pipeline.exporterhelper.retry import RetryConfig
from pipeline.exporterhelper.retry_sender import RetrySender
from pipeline.exporterhelper.timeout import TimeoutSender
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.testing import FakeClock, Sink, nop_settings, payload


class Hangs:
    """A push that never answers for its first `hangs` attempts, then delivers."""

    def __init__(self, hangs: int = 10**9) -> None:
        self.hangs = hangs
        self.attempts = 0
        self.delivered = 0
        self._never = asyncio.Event()

    async def push(self, p: Payload) -> None:
        self.attempts += 1
        if self.attempts <= self.hangs:
            await self._never.wait()
        self.delivered += 1


async def test_a_push_slower_than_the_timeout_raises_a_retryable_timeout() -> None:
    push = Hangs()
    with pytest.raises(ExportTimeoutError) as ei:
        async with asyncio.timeout(5):
            await TimeoutSender(0.01, push.push).send(payload(Signal.TRACES))
    err = ei.value
    assert isinstance(err, RetryableError) and isinstance(err, TimeoutError) and err.reason == "timeout"
    assert "timed out after 0.01s" in str(err) and push.delivered == 0


async def test_a_fast_push_and_the_push_own_errors_pass_through_unchanged() -> None:
    sink = Sink()
    await TimeoutSender(5, sink.push).send(payload(Signal.TRACES, n=3))
    assert sink.items == 3
    for error in (PermanentError("bad"), TimeoutError("connect timeout")):
        sink.fail_with, sink.fail_times = error, 1
        with pytest.raises(type(error)) as ei:
            await TimeoutSender(5, sink.push).send(payload(Signal.TRACES))
        assert ei.value is error    # the push's own TimeoutError is not the wrapper's deadline


async def test_a_timed_out_push_is_counted_with_reason_timeout() -> None:
    settings = nop_settings("sink/x", Kind.EXPORTER, Signal.TRACES)
    obs = settings.telemetry.exporter(settings)
    chain = ObsSender(obs, RateLimitedLog(settings.logger), TimeoutSender(0.01, Hangs().push).send)
    with pytest.raises(ExportTimeoutError):
        async with asyncio.timeout(5):
            await chain.send(payload(Signal.TRACES, n=4))
    tel = settings.telemetry
    assert tel.value("otelpipe_exporter_send_failed_spans_total", exporter="sink/x", reason="timeout") == 4
    assert tel.value("otelpipe_exporter_sent_spans_total", exporter="sink/x") == 0


async def test_the_timeout_bounds_each_attempt_not_the_retries() -> None:
    """Below the retry wrapper (the Collector's order): an attempt that times out is retried with a fresh deadline."""
    push, clock = Hangs(hangs=2), FakeClock()
    retry = RetryConfig(initial_interval=Duration(1), max_interval=Duration(1), randomization_factor=0)
    sender = RetrySender(retry, clock, RateLimitedLog(nop_settings().logger), TimeoutSender(0.01, push.push).send)
    task = asyncio.ensure_future(sender.send(payload(Signal.TRACES)))
    for _ in range(2):
        await clock.wait_for_waiters()
        clock.advance(clock.waits[-1])
    async with asyncio.timeout(5):
        await task
    assert push.attempts == 3 and push.delivered == 1 and clock.waits == [1.0, 1.0]
