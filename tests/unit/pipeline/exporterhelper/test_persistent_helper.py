"""The exporter helper with `sending_queue.storage`: outages longer than the retry window, shutdown, refusals."""
from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

import pytest

from pipeline.component import Kind, Settings, acknowledges
from pipeline.config.types import Duration
from pipeline.errors import RetryableError
from pipeline.exporterhelper import ExporterConfig, ExporterHelper, QueueConfig, RetryConfig
from pipeline.exporterhelper.persistent_queue import DiskFullError
from pipeline.exporterhelper.segmentlog import SegmentLog
from pipeline.model import Payload, Signal
from pipeline.testing import FakeClock, NopHost, nop_settings, payload, wait_until


class Backend:
    """An exporter whose backend is down until `up` is set; records the requests it took."""

    def __init__(self) -> None:
        self.up = False
        self.attempts = 0
        self.got: list[str] = []

    async def start(self, host: object) -> None: ...

    async def shutdown(self) -> None: ...

    async def push(self, p: Payload) -> None:
        self.attempts += 1
        if not self.up:
            raise RetryableError("backend outage")
        self.got.append(str(p.message.resource_spans[0].scope_spans[0].spans[0].name))  # type: ignore[union-attr]


def traces(i: int) -> Payload:
    p = payload(Signal.TRACES, n=3)
    p.mutable().resource_spans[0].scope_spans[0].spans[0].name = f"req-{i}"
    return p


def make(tmp: Path, clock: FakeClock | None = None, consumers: int = 2) -> tuple[ExporterHelper, Backend, Settings]:
    s = nop_settings("otlp/q", Kind.EXPORTER, Signal.TRACES)
    if clock is not None:
        s = dataclasses.replace(s, clock=clock)
    cfg = ExporterConfig(sending_queue=QueueConfig(storage=str(tmp), num_consumers=consumers),
                         retry_on_failure=RetryConfig(initial_interval=Duration(1), max_interval=Duration(5),
                                                      max_elapsed_time=Duration(10)))
    backend = Backend()
    return ExporterHelper(s, backend, cfg), backend, s


def value(s: Settings, name: str, **labels: str) -> float:
    return s.telemetry.value(name, exporter="otlp/q", **labels)


async def test_a_backend_down_for_longer_than_max_elapsed_time_loses_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    helper, backend, s = make(tmp_path, clock)
    assert acknowledges(helper)
    await helper.start(NopHost())
    for i in range(3):
        await helper.consume(traces(i))  # returns once on disk
    for _ in range(30):  # 30 retry waits of up to 5 s each: three times max_elapsed_time
        await clock.wait_for_waiters(2)
        clock.advance(5)
    assert value(s, "otelpipe_exporter_send_failed_spans_total") == 0 and helper.queue_size == 3
    backend.up = True
    clock.advance(5)
    await wait_until(lambda: len(backend.got) == 3, what="the queue to drain after the outage")
    assert sorted(backend.got) == ["req-0", "req-1", "req-2"]
    assert value(s, "otelpipe_exporter_sent_spans_total") == 9
    assert value(s, "otelpipe_exporter_send_failed_spans_total") == 0
    await helper.shutdown()


async def test_shutdown_keeps_what_was_not_sent_on_disk_uncounted_and_the_next_start_sends_it(tmp_path: Path) -> None:
    clock = FakeClock()
    helper, backend, s = make(tmp_path, clock, consumers=1)
    await helper.start(NopHost())
    for i in range(3):
        await helper.consume(traces(i))
    await clock.wait_for_waiters(1)  # the first request is waiting to be retried
    await helper.shutdown()
    assert value(s, "otelpipe_exporter_send_failed_spans_total") == 0  # nothing was lost
    helper, backend, s = make(tmp_path)
    backend.up = True
    await helper.start(NopHost())
    await wait_until(lambda: len(backend.got) == 3, what="the replayed queue to be sent")
    assert sorted(backend.got) == ["req-0", "req-1", "req-2"]
    assert value(s, "otelpipe_exporter_queue_replayed_records_total") == 3
    await helper.shutdown()


async def test_shutdown_drains_what_the_backend_takes(tmp_path: Path) -> None:
    helper, backend, s = make(tmp_path, consumers=1)
    backend.up = True
    await helper.start(NopHost())
    for i in range(5):
        await helper.consume(traces(i))
    await helper.shutdown()
    assert backend.got == [f"req-{i}" for i in range(5)]
    helper, backend, s = make(tmp_path)
    await helper.start(NopHost())
    assert helper.queue_size == 0 and value(s, "otelpipe_exporter_queue_replayed_records_total") == 0
    await helper.shutdown()


async def test_a_write_that_fails_is_refused_to_the_sender_and_counted(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    helper, backend, s = make(tmp_path)
    backend.up = True
    await helper.start(NopHost())
    real = SegmentLog.append

    def full(self: SegmentLog, bodies: list[tuple[bytes, int, int]]) -> object:
        monkeypatch.setattr(SegmentLog, "append", real)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SegmentLog, "append", full)
    with pytest.raises(DiskFullError):
        await helper.consume(traces(0))
    assert value(s, "otelpipe_exporter_enqueue_failed_spans_total", reason="disk_full") == 3
    await helper.consume(traces(1))
    await wait_until(lambda: backend.got == ["req-1"], what="the next request to go through")
    await helper.shutdown()
