"""A reload replacing an exporter with a persistent queue (`ExporterHelper.hand_over`): nothing acknowledged is
lost, and the old queue forgets a record only once the successor has it on disk."""
from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline.component import Kind
from pipeline.config.types import Duration
from pipeline.exporterhelper import ExporterConfig, ExporterHelper, QueueConfig, RetryConfig
from pipeline.exporterhelper.segmentlog import SegmentLog
from pipeline.model import Signal
from pipeline.testing import NopHost, nop_settings, wait_until

from .test_persistent_helper import Backend, traces


def helper(storage: Path | None) -> tuple[ExporterHelper, Backend]:
    s = nop_settings("otlp/q", Kind.EXPORTER, Signal.TRACES)
    cfg = ExporterConfig(sending_queue=QueueConfig(storage=str(storage) if storage else None, num_consumers=2),
                         retry_on_failure=RetryConfig(initial_interval=Duration(0.01), max_interval=Duration(0.01)))
    backend = Backend()
    return ExporterHelper(s, backend, cfg), backend


def records_on_disk(storage: Path) -> int:
    log = SegmentLog(storage / "exporter_otlp_q_traces", 1 << 20)
    log.lock(0o700)
    try:
        return len(log.open().records)
    finally:
        log.close()


async def filled(storage: Path, n: int = 6) -> tuple[ExporterHelper, Backend]:
    old, backend = helper(storage)
    await old.start(NopHost())
    for i in range(n):
        await old.consume(traces(i))  # returns once on disk
    await wait_until(lambda: backend.attempts >= 2, what="the old exporter retrying")
    return old, backend


async def test_the_same_storage_is_reopened_by_the_successor_after_the_old_queue_closed_it(tmp_path: Path) -> None:
    old, _ = await filled(tmp_path)
    new, backend = helper(tmp_path)
    assert old.shares_storage(new)
    old.hand_over(new)
    # a straggler before the successor opened: accepted, answered once written (after it opened)
    straggler = asyncio.create_task(old.consume(traces(99)))
    await old.shutdown()  # the Service stops the old one first: it closes the log
    assert not straggler.done()
    await new.start(NopHost())  # ... and the successor replays it
    await straggler
    backend.up = True
    await wait_until(lambda: len(backend.got) >= 7, what="everything at the new backend")
    assert sorted(backend.got) == sorted([f"req-{i}" for i in range(6)] + ["req-99"])
    await new.shutdown()
    assert records_on_disk(tmp_path) == 0


async def test_records_moved_to_another_storage_are_forgotten_once_the_successor_wrote_them(tmp_path: Path) -> None:
    old, _ = await filled(tmp_path / "old")
    new, backend = helper(tmp_path / "new")
    await new.start(NopHost())
    assert not old.shares_storage(new)
    old.hand_over(new)
    await old.shutdown()
    assert records_on_disk(tmp_path / "old") == 0
    await new.shutdown()  # backend still down: all of it waits in the new storage
    assert records_on_disk(tmp_path / "new") == 6
    again, backend = helper(tmp_path / "new")
    await again.start(NopHost())
    backend.up = True
    await wait_until(lambda: len(backend.got) >= 6, what="everything sent after the restart")
    assert sorted(backend.got) == [f"req-{i}" for i in range(6)]
    await again.shutdown()


async def test_records_handed_to_an_in_memory_successor_also_stay_on_the_old_disk(tmp_path: Path) -> None:
    old, _ = await filled(tmp_path)
    new, backend = helper(None)
    await new.start(NopHost())
    old.hand_over(new)
    backend.up = True
    await wait_until(lambda: len(backend.got) >= 6, what="the in-memory successor sending everything")
    await old.shutdown()
    await new.shutdown()
    assert records_on_disk(tmp_path) == 6  # never committed: the memory queue could not promise to keep them
