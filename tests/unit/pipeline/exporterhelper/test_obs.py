"""The obs wrappers alone: sent / send_failed{reason} per request, the push-duration histogram per attempt,
and enqueue_failed{reason}, under the names pipeline/telemetry.py defines."""
from __future__ import annotations

import pytest

from pipeline.component import Kind, Settings
from pipeline.config.types import ByteSize, Duration
from pipeline.errors import (
    PartialSuccessError,
    PermanentError,
    QueueFullError,
    RetryableError,
)
from pipeline.exporterhelper import ExporterConfig, ExporterHelper
from pipeline.exporterhelper.errors import (
    ExportTimeoutError,
    RetriesExhaustedError,
    ShutdownError,
)
from pipeline.exporterhelper.obs import ObsSender, PushTimer
from pipeline.exporterhelper.queue import QueueConfig
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.testing import FakeClock, NopHost, Sink, nop_settings, payload

SENT = "otelpipe_exporter_sent_spans_total"
FAILED = "otelpipe_exporter_send_failed_spans_total"
ENQUEUE_FAILED = "otelpipe_exporter_enqueue_failed_spans_total"
DURATION = "otelpipe_exporter_send_duration_seconds"


def settings() -> Settings:
    return nop_settings("sink/x", Kind.EXPORTER, Signal.TRACES)


def value(s: Settings, name: str, **labels: str) -> float:
    return s.telemetry.value(name, exporter="sink/x", **labels)


def obs_sender(s: Settings, sink: Sink) -> ObsSender:
    return ObsSender(s.telemetry.exporter(s), RateLimitedLog(s.logger), sink.push)


async def test_a_delivered_request_is_counted_sent() -> None:
    s, sink = settings(), Sink()
    await obs_sender(s, sink).send(payload(Signal.TRACES, n=5))
    assert value(s, SENT) == 5 and value(s, FAILED) == 0 and sink.items == 5


@pytest.mark.parametrize("rejected, sent, failed", [(2, 4, 2), (0, 6, 0), (99, 0, 6)])
async def test_a_partial_success_counts_the_rejected_items_and_raises_nothing(rejected: int, sent: int,
                                                                              failed: int) -> None:
    s, sink = settings(), Sink()
    sink.fail_with, sink.fail_times = PartialSuccessError(rejected, "some bad spans"), 1
    await obs_sender(s, sink).send(payload(Signal.TRACES, n=6))
    assert value(s, SENT) == sent and value(s, FAILED, reason="partial_success") == failed


async def test_a_permanent_error_is_counted_once_and_marked_counted() -> None:
    s, sink = settings(), Sink()
    error = PermanentError("bad request")
    sink.fail_with, sink.fail_times = error, 1
    with pytest.raises(PermanentError) as ei:
        await obs_sender(s, sink).send(payload(Signal.TRACES, n=4))
    assert ei.value is error and error.counted      # the batch processor relies on it
    assert value(s, FAILED, reason="permanent_error") == 4 and value(s, FAILED) == 4


@pytest.mark.parametrize("error, reason", [
    (ValueError("encoder bug"), "retryable_error"),
    (RetryableError("throttled", retry_after=3), "retryable_error"),
    (QueueFullError("a downstream queue is full", retry_after=3), "retryable_error"),
    (TimeoutError(), "timeout"),
    (ExportTimeoutError("export attempt timed out after 5s"), "timeout"),
    (RetriesExhaustedError("down", attempts=3), "retries_exhausted"),
    (ShutdownError("exporter is shutting down"), "shutdown"),
])
async def test_a_transient_failure_is_counted_with_its_reason_and_raised_retryable(error: Exception,
                                                                                    reason: str) -> None:
    s, sink = settings(), Sink()
    sink.fail_with, sink.fail_times = error, 1
    with pytest.raises(RetryableError) as ei:
        await obs_sender(s, sink).send(payload(Signal.TRACES, n=3))
    assert value(s, FAILED, reason=reason) == 3 and value(s, FAILED) == 3 and value(s, SENT) == 0
    raised = ei.value
    if reason in ("retries_exhausted", "shutdown") or isinstance(error, ExportTimeoutError):
        assert raised is error
    else:   # the backend's error, as a plain RetryableError (a receiver answers it 503, never 429)
        assert type(raised) is RetryableError and raised.__cause__ is error
        assert raised.retry_after == (3 if isinstance(error, RetryableError) else None)


async def test_push_timer_records_every_attempt_on_the_clock_by_outcome() -> None:
    s, clock = settings(), FakeClock()

    class Backend:
        def __init__(self) -> None:
            self.outcomes: list[BaseException | None] = [
                None, RetryableError("down"), PermanentError("bad"), PartialSuccessError(1)]

        async def push(self, p: Payload) -> None:
            clock.advance(0.25)
            outcome = self.outcomes.pop(0)
            if outcome is not None:
                raise outcome

    timer = PushTimer(s.telemetry.exporter(s), clock, Backend().push)
    for _ in range(4):
        try:
            await timer.send(payload(Signal.TRACES))
        except (RetryableError, PermanentError, PartialSuccessError):
            pass
    for outcome in ("success", "retryable_error", "permanent_error", "partial_success"):
        assert value(s, f"{DURATION}_count", outcome=outcome) == 1
        assert value(s, f"{DURATION}_sum", outcome=outcome) == 0.25
    assert value(s, SENT) == 0 and value(s, FAILED) == 0   # counting requests is ObsSender's job


async def test_enqueue_failed_counts_a_full_queue_and_data_refused_at_shutdown() -> None:
    s, sink = settings(), Sink()
    h = ExporterHelper(s, sink, ExporterConfig(sending_queue=QueueConfig(queue_size=ByteSize(1)), timeout=Duration(5)))
    await h.consume(payload(Signal.TRACES, n=2))     # not started: stays queued
    with pytest.raises(QueueFullError):
        await h.consume(payload(Signal.TRACES, n=3))
    await h.start(NopHost())
    await sink.wait_for_items(2)
    await h.shutdown()
    with pytest.raises(RetryableError):
        await h.consume(payload(Signal.TRACES, n=4))
    assert value(s, ENQUEUE_FAILED, reason="queue_full") == 3
    assert value(s, ENQUEUE_FAILED, reason="shutting_down") == 4
    assert value(s, SENT) == 2
