"""The persistent sending queue: group commit, at-least-once replay, refusals instead of drops, self-metrics."""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import threading
from pathlib import Path

import pytest

from extensions.file_storage import FileStorageConfig
from extensions.file_storage import create as create_file_storage
from pipeline.component import Component, ComponentID, Kind, Settings
from pipeline.config.types import ByteSize, Duration
from pipeline.errors import StartError
from pipeline.exporterhelper import persistent_queue
from pipeline.exporterhelper.persistent_queue import DiskFullError, PersistentQueue
from pipeline.exporterhelper.queue import QueueConfig, new_queue
from pipeline.exporterhelper.segmentlog import HEADER_SIZE
from pipeline.model import Payload, Signal
from pipeline.testing import FakeClock, NopHost, nop_settings, payload


def settings() -> Settings:
    return nop_settings("otlp/q", Kind.EXPORTER, Signal.TRACES)


def value(s: Settings, name: str, **labels: str) -> float:
    return s.telemetry.value(name, exporter="otlp/q", **labels)


def traces(i: int, n: int = 2) -> Payload:
    p = payload(Signal.TRACES, n=n)
    p.mutable().resource_spans[0].scope_spans[0].spans[0].name = f"req-{i}"
    return p


def name(p: Payload) -> str:
    return str(p.message.resource_spans[0].scope_spans[0].spans[0].name)  # type: ignore[union-attr]


async def opened(tmp: Path, s: Settings | None = None, **kw: object) -> PersistentQueue:
    cfg = QueueConfig(storage=str(tmp), **kw)  # type: ignore[arg-type]
    q = new_queue(cfg, s or settings())
    assert isinstance(q, PersistentQueue)
    await q.open(None)
    return q


async def take_all(q: PersistentQueue, ack: bool = True) -> list[str]:
    q.close()
    out = []
    while (p := await q.take()) is not None:
        out.append(name(p))
        if ack:
            q.done(p)
    return out


class GatedSync:
    """An fsync that the test holds: `entered` is set when the writer thread is in it; `gate` lets it finish."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(10), "the test never released the fsync"


async def test_an_offer_is_durable_when_sync_returns_and_one_fsync_covers_every_offer_made_meanwhile(
        tmp_path: Path) -> None:
    gated = GatedSync()
    q = PersistentQueue(QueueConfig(storage=str(tmp_path)), settings(), sync_file=gated)
    await q.open(None)
    assert q.offer(traces(0))
    first = asyncio.create_task(q.sync())
    assert await asyncio.to_thread(gated.entered.wait, 10)  # group 1 is in fsync
    later = []
    for i in range(1, 6):                                     # these arrive while it runs: the next group
        assert q.offer(traces(i))
        later.append(asyncio.create_task(q.sync()))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done() and not any(t.done() for t in later)  # nothing answered before it is on disk
    assert gated.calls == 1
    gated.gate.set()
    await asyncio.gather(first, *later)
    assert gated.calls == 2  # one fsync for the first offer, one for the five that waited behind it
    assert await take_all(q) == [f"req-{i}" for i in range(6)]
    await q.release()


async def test_what_was_not_acknowledged_is_replayed_oldest_first_and_what_was_is_not(tmp_path: Path) -> None:
    s = settings()
    q = await opened(tmp_path, s)
    for i in range(5):
        assert q.offer(traces(i))
    await q.sync()
    taken = [await q.take() for _ in range(3)]
    assert [name(p) for p in taken if p] == ["req-0", "req-1", "req-2"]
    q.done(taken[1])  # type: ignore[arg-type]  # finished out of order: req-0 is still in flight
    q.done(taken[2])  # type: ignore[arg-type]
    await q.release()  # a crash here would replay the same (the cursor is saved as acks happen)
    q = await opened(tmp_path, s)
    assert value(s, "otelpipe_exporter_queue_replayed_records_total") == 5
    # req-0 was not acknowledged: it and everything after it come again (duplicates, never loss).
    assert await take_all(q) == [f"req-{i}" for i in range(5)]
    await q.release()
    q = await opened(tmp_path, s)
    assert q.size() == 0 and await take_all(q) == []
    await q.release()
    assert list((tmp_path / "exporter_otlp_q_traces").glob("*.seg")) == []  # all acknowledged: nothing is kept


async def test_a_full_queue_refuses_new_data_and_keeps_the_oldest(tmp_path: Path) -> None:
    q = await opened(tmp_path, queue_size=ByteSize(2))
    assert q.offer(traces(0)) and q.offer(traces(1))
    assert not q.offer(traces(2))
    await q.sync()
    assert await take_all(q) == ["req-0", "req-1"]
    await q.release()
    one = len(traces(0).serialize()) + HEADER_SIZE
    q = await opened(tmp_path / "b", max_size=ByteSize(2 * one + 10))
    assert q.offer(traces(0)) and q.offer(traces(1))
    assert not q.offer(traces(2))  # max_size bounds the bytes on disk whatever the sizer
    await q.sync()
    assert await take_all(q) == ["req-0", "req-1"]
    await q.release()


async def test_a_full_disk_refuses_the_whole_group_retryably_and_queues_none_of_it(tmp_path: Path) -> None:
    calls = {"n": 0}

    def sync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")

    q = PersistentQueue(QueueConfig(storage=str(tmp_path)), settings(), sync_file=sync)
    await q.open(None)
    assert q.offer(traces(0)) and q.offer(traces(1))
    with pytest.raises(DiskFullError) as ei:
        await q.sync()
    assert ei.value.reason == "disk_full" and ei.value.retry_after
    assert q.size() == 0
    assert q.offer(traces(2))
    await q.sync()
    assert await take_all(q) == ["req-2"]
    await q.release()


async def test_data_a_reload_handed_over_is_written_again_after_a_failed_write_never_refused(
        tmp_path: Path) -> None:
    calls = {"n": 0}

    def sync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    clock = FakeClock()
    q = PersistentQueue(QueueConfig(storage=str(tmp_path)), dataclasses.replace(settings(), clock=clock),
                        sync_file=sync)
    q.force(traces(0))  # before open: a successor started after its predecessor closed the directory
    await q.open(None)
    assert q.offer(traces(1))
    with pytest.raises(DiskFullError):
        await q.sync()  # the offer is refused (its sender still holds it) ...
    await clock.wait_for_waiters(1)
    assert clock.waits == [persistent_queue.WRITE_RETRY] and q.size() == 1  # ... the handed-over one waits
    clock.advance(persistent_queue.WRITE_RETRY)
    with pytest.raises(DiskFullError):
        await q.sync()  # the second attempt fails too
    await clock.wait_for_waiters(1)
    clock.advance(persistent_queue.WRITE_RETRY)
    await q.sync()
    assert calls["n"] == 3 and await take_all(q) == ["req-0"]
    await q.release()


async def test_records_beyond_the_memory_cache_are_read_back_from_disk(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(persistent_queue, "CACHE_BYTES", 0)
    monkeypatch.setattr(persistent_queue, "READ_AHEAD", 3 * 1024)  # a few records per read
    q = await opened(tmp_path)
    for i in range(20):
        assert q.offer(traces(i, n=5))
    await q.sync()
    assert await take_all(q) == [f"req-{i}" for i in range(20)]
    await q.release()


async def test_a_record_damaged_on_disk_after_it_was_written_is_skipped_and_counted_when_read_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(persistent_queue, "CACHE_BYTES", 0)
    s = settings()
    q = await opened(tmp_path, s)
    for i in range(3):
        assert q.offer(traces(i))
    await q.sync()
    seg = next((tmp_path / "exporter_otlp_q_traces").glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the second record
    seg.write_bytes(bytes(data))
    assert await take_all(q) == ["req-0", "req-2"]
    assert value(s, "otelpipe_exporter_queue_skipped_records_total", reason="corrupt") == 1
    assert q.size() == 0
    await q.release()


async def test_disk_use_items_and_the_oldest_age_are_exported(tmp_path: Path) -> None:
    s = settings()
    now = [1_700_000_000.0]
    q = PersistentQueue(QueueConfig(storage=str(tmp_path), max_size=ByteSize(1 << 20)), s, wall=lambda: now[0])
    await q.open(None)
    assert value(s, "otelpipe_exporter_queue_disk_capacity_bytes") == 1 << 20
    for i in range(3):
        assert q.offer(traces(i, n=4))
        await q.sync()
        now[0] += 10
    assert value(s, "otelpipe_exporter_queue_disk_items") == 12
    assert value(s, "otelpipe_exporter_queue_disk_bytes") == sum(
        len(traces(i, n=4).serialize()) + HEADER_SIZE for i in range(3))
    assert value(s, "otelpipe_exporter_queue_oldest_item_age_seconds") == 30
    p = await q.take()
    assert p is not None
    assert value(s, "otelpipe_exporter_queue_oldest_item_age_seconds") == 30  # in flight is not yet sent
    q.done(p)
    assert value(s, "otelpipe_exporter_queue_oldest_item_age_seconds") == 20
    assert value(s, "otelpipe_exporter_queue_disk_items") == 8
    await take_all(q)
    assert value(s, "otelpipe_exporter_queue_oldest_item_age_seconds") == 0
    await q.release()


class Host(NopHost):
    def __init__(self, extensions: dict[ComponentID, Component]) -> None:
        super().__init__()
        self._ext = extensions

    def extensions(self) -> dict[ComponentID, Component]:
        return self._ext


async def test_storage_names_a_file_storage_extension_as_the_collector_spells_it(tmp_path: Path) -> None:
    ext = create_file_storage(nop_settings("file_storage", Kind.EXTENSION, None),
                              FileStorageConfig(directory=str(tmp_path / "fs"), create_directory=True))
    host = Host({ComponentID("file_storage"): ext})
    await ext.start(host)
    s = nop_settings("otlp/tempo", Kind.EXPORTER, Signal.LOGS)
    q = new_queue(QueueConfig(storage="file_storage"), s)
    await q.open(host)
    assert (tmp_path / "fs" / "exporter_otlp_tempo_logs" / "LOCK").exists()
    await q.release()
    for storage, hosted, why in (("file_storage/other", host, "is not running"),
                                 ("health", Host({ComponentID("health"): ext_without_storage()}),
                                  "is not a storage extension")):
        q = new_queue(QueueConfig(storage=storage), s)
        with pytest.raises(StartError, match=why):
            await q.open(hosted)
    await ext.shutdown()


def ext_without_storage() -> Component:
    class Plain:
        async def start(self, host: object) -> None: ...

        async def shutdown(self) -> None: ...

    return Plain()  # type: ignore[return-value]


async def test_a_directory_another_queue_holds_is_refused_at_start_after_the_lock_timeout(tmp_path: Path) -> None:
    first = await opened(tmp_path)
    ext = create_file_storage(nop_settings("file_storage", Kind.EXTENSION, None),
                              FileStorageConfig(directory=str(tmp_path), timeout=Duration(0)))
    second = new_queue(QueueConfig(storage="file_storage"), settings())
    with pytest.raises(StartError, match="in use by another queue"):
        await second.open(Host({ComponentID("file_storage"): ext}))
    await second.release()
    await first.release()


async def test_the_file_storage_directory_must_exist_unless_created(tmp_path: Path) -> None:
    missing = FileStorageConfig(directory=str(tmp_path / "nope"))
    ext = create_file_storage(nop_settings("file_storage", Kind.EXTENSION, None), missing)
    with pytest.raises(StartError, match="does not exist"):
        await ext.start(NopHost())
    made = dataclasses.replace(missing, create_directory=True, directory_permissions="0700")
    await create_file_storage(nop_settings("file_storage", Kind.EXTENSION, None), made).start(NopHost())
    assert (tmp_path / "nope").stat().st_mode & 0o777 == 0o700
    assert [i.key for i in FileStorageConfig(directory_permissions="0999").validate()] == ["directory_permissions"]
