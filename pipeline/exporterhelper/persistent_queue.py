"""The persistent sending queue (`sending_queue.storage`): what the exporter has not yet sent, on disk.

It is the same `SendQueue` the queue sender drains, kept in a `SegmentLog`:

- `offer()` admits a payload (or refuses it: `queue_size` in `sizer` units,
  `max_size` in bytes of segment files on disk) and `sync()` returns once it is
  on disk. Offers are written in groups: while one group is being written (and
  fsync'd) in the queue's writer thread, new offers gather into the next group,
  so one fsync covers every request that arrived meanwhile (group commit). A
  failed write (a full disk) refuses the whole group with a retryable error:
  `DiskFullError` (counted `disk_full`, HTTP 429 / RESOURCE_EXHAUSTED) or
  `StorageError` (503 / UNAVAILABLE); none of it is queued, and the senders
  send it again.
- `take()` hands out records in the order they were written, only once they
  are durable. Recent records are also kept in memory (up to `CACHE_BYTES`),
  so a queue that keeps up never reads back; the rest is read from disk in
  runs of consecutive records, in a reader thread, and checked against its
  checksum (a bad record is counted `skipped{reason="corrupt"}`).
- `done()` acknowledges a record once the exporter is finished with it (sent,
  or refused for good): only then may replay skip it. The replay position (the
  cursor) is the oldest record not yet acknowledged, and a segment is deleted
  once all its records are acknowledged, so at-least-once holds whatever order
  the consumers finish in.
- On start, whatever an earlier run left is queued again, oldest first
  (`replayed_records`); torn or corrupt records are counted and skipped.

Nothing is ever dropped to make room: a full queue refuses new data. Closing
keeps every record not acknowledged on disk for the next start.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.component import Host, Kind, Settings
from pipeline.errors import QueueFullError, RetryableError, StartError
from pipeline.exporterhelper.errors import describe
from pipeline.exporterhelper.segmentlog import (
    HEADER_SIZE,
    LockedError,
    Record,
    Recovered,
    SegmentLog,
    decode_record,
)
from pipeline.exporterhelper.storage import StorageLocation, resolve
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload

if TYPE_CHECKING:
    from pipeline.exporterhelper.queue import QueueConfig

# Bytes offered but not yet written: past this (a disk that stalls), offers are refused.
UNWRITTEN_LIMIT = 64 * 1024 * 1024
# Records kept in memory as well as on disk, so that a queue whose exporter keeps up never reads back.
CACHE_BYTES = 32 * 1024 * 1024
# Consecutive records read back from disk in one call.
READ_AHEAD = 4 * 1024 * 1024
# Segments are an eighth of max_size, within these bounds: small enough that acknowledged records
# are deleted soon (disk use follows the queue), large enough that files are not created per write.
MIN_SEGMENT_BYTES = 64 * 1024
MAX_SEGMENT_BYTES = 16 * 1024 * 1024
LOCK_RETRY = 0.05
WRITE_RETRY = 1.0  # seconds between attempts to write data a reload handed over, after a failed write


class DiskFullError(QueueFullError):
    """The queue's disk is full: refuse like a full queue, so senders back off."""

    reason = "disk_full"


class StorageError(RetryableError):
    """Writing the queue failed for another reason (permissions, I/O error)."""

    reason = "storage_error"


def segment_bytes(max_bytes: int) -> int:
    return min(MAX_SEGMENT_BYTES, max(MIN_SEGMENT_BYTES, max_bytes // 8))


@dataclass(slots=True, eq=False)
class _Entry:
    """One durable record not yet acknowledged; `body` is set while it is also held in memory."""

    segment: int
    offset: int
    size: int
    items: int
    enqueued_ms: int
    units: int
    body: bytes | None = None
    acked: bool = False
    corrupt: bool = False


@dataclass(slots=True, eq=False)
class _Pending:
    body: bytes
    items: int
    units: int
    enqueued_ms: int
    forced: bool = False  # handed over by a replaced exporter: acknowledged already, never refused


@dataclass(slots=True)
class _Cycle:
    """What one trip to the writer thread did."""

    records: list[Record] = field(default_factory=list)
    error: OSError | None = None          # the append failed: the group is not queued
    housekeeping: list[OSError] = field(default_factory=list)
    disk_bytes: int = 0
    active: int = 0


_KEEP = object()  # no cursor to save in this cycle


class PersistentQueue:
    """A `SendQueue` backed by a `SegmentLog`; see the module docstring."""

    persistent = True

    def __init__(self, cfg: QueueConfig, settings: Settings, *, wall: Callable[[], float] = time.time,
                 sync_file: Callable[[int], None] | None = None) -> None:
        assert cfg.storage is not None and settings.signal is not None
        self.capacity = int(cfg.queue_size)
        self.sizer = cfg.sizer
        self.max_bytes = int(cfg.max_size)
        self._storage = cfg.storage
        self._settings = settings
        self._signal = settings.signal
        self._wall = wall
        self._sync_file = sync_file
        self._log: SegmentLog | None = None
        self._location: StorageLocation | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._committer: asyncio.Task[None] | None = None
        self._rlog = RateLimitedLog(settings.logger)
        # accounting of what is queued (durable or being written) and not acknowledged
        self._used = 0          # sizer units
        self._items = 0         # items on disk
        self._unwritten = 0     # bytes offered, not yet written
        self._disk_bytes = 0    # bytes of segment files
        self._cached = 0        # bytes of records also held in memory
        self._ready: deque[_Entry] = deque()        # durable, not taken, in write order
        self._outstanding: deque[_Entry] = deque()  # taken, in take order, until acknowledged in order
        self._taken: dict[int, _Entry] = {}         # id(payload handed out) -> its record
        self._live: dict[int, int] = {}             # segment -> records in it not acknowledged
        self._active = 0
        self._deletable: list[int] = []
        self._cursor_dirty = False
        self._group: list[_Pending] = []
        self._group_future: asyncio.Future[None] | None = None
        self._writing: asyncio.Future[None] | None = None  # the group in the writer thread
        self._work = asyncio.Event()
        self._wake = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._closed = False     # no more offers; takes drain what is ready
        self._halted = False     # takes end now
        self._closing = False    # the committer finishes and exits
        tel, eid, dt = settings.telemetry, str(settings.id), settings.signal.value
        self._replayed = tel.counter("exporter_queue_replayed_records").labels(eid, dt)
        self._skipped = tel.counter("exporter_queue_skipped_records")
        self._labels = (eid, dt)
        tel.gauge("exporter_queue_disk_bytes").labels(eid, dt).set_function(lambda: self._disk_bytes)
        tel.gauge("exporter_queue_disk_capacity_bytes").labels(eid, dt).set(self.max_bytes)
        tel.gauge("exporter_queue_disk_items").labels(eid, dt).set_function(lambda: self._items)
        tel.gauge("exporter_queue_oldest_item_age_seconds").labels(eid, dt).set_function(self.oldest_age)

    # -- what the queue sender uses ------------------------------------------------------------

    def size(self) -> int:
        """Records (or items, or bytes: the sizer's unit) queued and not yet acknowledged."""
        return self._used

    def oldest_age(self) -> float:
        """Seconds since the oldest record not yet acknowledged was queued (0 when there is none)."""
        head = self._outstanding[0] if self._outstanding else self._ready[0] if self._ready else None
        return max(0.0, self._wall() - head.enqueued_ms / 1000) if head is not None else 0.0

    async def open(self, host: Host | None) -> None:
        """Lock the queue's directory, find what earlier runs left, and start writing (what was offered
        before, while a reload's predecessor still held the directory, is written first)."""
        try:
            await self._open(host)
        except BaseException as e:
            self._abandon_unopened(f"it could not be opened: {e}")
            raise

    async def _open(self, host: Host | None) -> None:
        location = resolve(self._storage, host, Kind.EXPORTER, self._settings.id, self._signal.value)
        kw = {"sync_file": self._sync_file} if self._sync_file is not None else {}
        log = SegmentLog(location.directory, segment_bytes(self.max_bytes), fsync=location.fsync, **kw)
        name = f"{self._settings.id}-{self._signal.value}-queue"
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-read")
        loop = asyncio.get_running_loop()
        try:
            await self._lock(log, location)
            recovered = await loop.run_in_executor(self._writer, log.open)
        except OSError as e:
            await loop.run_in_executor(self._writer, log.close)
            self._stop_threads()
            raise StartError(f"cannot open the persistent queue in {location.directory}: {describe(e)}") from e
        self._log, self._location = log, location
        self._active, self._disk_bytes = log.active, log.disk_bytes
        self._recover(recovered)
        self._committer = asyncio.create_task(self._commit_loop(), name=f"{name}-commit")

    def offer(self, payload: Payload) -> bool:
        """Admit the payload to the next group write; False when the queue or its disk budget is full."""
        if self._closed:
            return False
        body, units = self._measure(payload)
        size = HEADER_SIZE + len(body)
        if self._used and (self._used + units > self.capacity
                           or self._disk_bytes + self._unwritten + size > self.max_bytes
                           or self._unwritten + size > UNWRITTEN_LIMIT):
            return False
        self._admit(payload, body, units)
        return True

    def force(self, payload: Payload) -> None:
        """Queue even past the bounds: a payload a replaced exporter's queue had already acknowledged.

        Also before `open()` (a successor started after its predecessor stopped): written once open; a
        failed write is tried again (every `WRITE_RETRY` seconds) rather than refused."""
        self._admit(payload, *self._measure(payload), forced=True)

    def _measure(self, payload: Payload) -> tuple[bytes, int]:
        body = payload.serialize()
        return body, 1 if self.sizer == "requests" else payload.items if self.sizer == "items" else len(body)

    def _admit(self, payload: Payload, body: bytes, units: int, *, forced: bool = False) -> None:
        self._group.append(_Pending(body, payload.items, units, int(self._wall() * 1000), forced))
        self._used += units
        self._unwritten += HEADER_SIZE + len(body)
        if self._group_future is None:
            self._group_future = asyncio.get_running_loop().create_future()
        self._work.set()

    async def sync(self) -> None:
        """Return once everything offered before the call is on disk; raise if its write failed."""
        future = self._group_future or self._writing
        if future is not None:
            await asyncio.shield(future)

    async def take(self) -> Payload | None:
        """The oldest durable record not yet handed out; None once halted, or closed and empty."""
        while True:
            if self._halted:
                return None
            if self._ready:
                entry = self._ready.popleft()
                body = entry.body
                if body is None and not entry.corrupt:
                    body = await self._load(entry)
                if body is None or entry.corrupt:
                    self._skip(entry, "corrupt")
                    continue
                self._cached -= len(body)
                entry.body = None
                payload = Payload(self._signal, raw=body, items=entry.items)
                self._outstanding.append(entry)
                self._taken[id(payload)] = entry
                return payload
            if self._closed:
                return None
            self._wake.clear()
            await self._wake.wait()

    def done(self, payload: Payload) -> None:
        """The exporter is finished with this payload (sent, or refused for good): it may leave the disk."""
        entry = self._taken.pop(id(payload), None)
        if entry is None:
            return
        entry.acked = True
        self._release(entry)
        out = self._outstanding
        if out and out[0].acked:
            while out and out[0].acked:
                out.popleft()
            self._cursor_dirty = True
            self._work.set()

    def close(self) -> None:
        """Refuse new offers; `take()` hands out what is ready, then None."""
        self._closed = True
        self._wake.set()

    def halt(self) -> None:
        """`take()` returns None from now on; whatever was not acknowledged stays on disk."""
        self._closed = self._halted = True
        self._wake.set()

    def drain_nowait(self) -> list[Payload]:
        """Nothing to give up at a shutdown deadline: every record not acknowledged stays on disk."""
        return []

    async def release(self) -> None:
        """Finish the writes under way, save the cursor, close the files (after the consumers stopped)."""
        self.halt()
        if self._committer is None:
            self._abandon_unopened("the exporter stopped before its queue was opened")
        else:
            self._closing = True
            self._cursor_dirty = True
            self._work.set()
            await asyncio.gather(self._committer, return_exceptions=True)
            self._committer = None
        log, self._log = self._log, None
        if log is not None and self._writer is not None:
            finished = not (self._live or self._group or self._unwritten)  # nothing on disk is needed any more
            await asyncio.get_running_loop().run_in_executor(self._writer, functools.partial(log.close,
                                                                                           finished=finished))
            self._settings.logger.info("persistent queue closed", extra={
                "records_left": len(self._ready) + len(self._outstanding), "items_left": self._items})
        self._stop_threads()

    def _abandon_unopened(self, why: str) -> None:
        """Refuse, retryably, what was offered before an open that will not come (its senders still hold it)."""
        group, future = self._group, self._group_future
        self._group, self._group_future = [], None
        self._used -= sum(p.units for p in group)
        self._unwritten -= sum(HEADER_SIZE + len(p.body) for p in group)
        if future is not None and not future.done():
            future.set_exception(StorageError(f"persistent queue of exporter {self._settings.id}: {why}", 1.0))
            future.exception()

    # -- opening -------------------------------------------------------------------------------

    async def _lock(self, log: SegmentLog, location: StorageLocation) -> None:
        assert self._writer is not None
        loop, clock = asyncio.get_running_loop(), self._settings.clock
        deadline = clock() + location.lock_timeout
        while True:
            try:
                await loop.run_in_executor(self._writer, log.lock, location.directory_mode)
                return
            except LockedError:
                if clock() >= deadline:
                    raise
                await clock.wait(LOCK_RETRY)

    def _recover(self, recovered: Recovered) -> None:
        for rec in recovered.records:
            units = 1 if self.sizer == "requests" else rec.items if self.sizer == "items" else rec.body_size
            self._ready.append(_Entry(rec.segment, rec.offset, rec.size, rec.items, rec.enqueued_ms, units))
            self._used += units
            self._items += rec.items
            self._live[rec.segment] = self._live.get(rec.segment, 0) + 1
        eid, dt = self._labels
        for s in recovered.skipped:
            self._skipped.labels(eid, dt, s.reason).inc()
        if recovered.records:
            self._replayed.inc(len(recovered.records))
        if recovered.skipped:
            self._settings.logger.error("persistent queue: skipped records that failed their checks", extra={
                "skipped": [{"segment": s.segment, "offset": s.offset, "bytes": s.size, "reason": s.reason}
                            for s in recovered.skipped[:20]], "count": len(recovered.skipped)})
        assert self._location is not None
        self._settings.logger.info("persistent queue opened", extra={
            "directory": str(self._location.directory), "replayed_records": len(recovered.records),
            "replayed_items": self._items, "disk_bytes": self._disk_bytes, "fsync": self._location.fsync})

    # -- writing (group commit) ----------------------------------------------------------------

    async def _commit_loop(self) -> None:
        """Write each group, save the cursor, delete finished segments: one trip to the writer thread each."""
        loop = asyncio.get_running_loop()
        assert self._writer is not None
        while True:
            if not (self._group or self._cursor_dirty or self._deletable):
                if self._closing:
                    return
                self._work.clear()
                await self._work.wait()
                continue
            group, future = self._group, self._group_future
            self._group, self._group_future, self._writing = [], None, future
            cursor = self._cursor() if self._cursor_dirty else _KEEP
            self._cursor_dirty = False
            deletable, self._deletable = self._deletable, []
            bodies = [(p.body, p.items, p.enqueued_ms) for p in group]
            cycle = await loop.run_in_executor(self._writer, self._io, bodies, cursor, deletable)
            self._writing = None
            self._committed(group, future, cycle)
            if cycle.error is not None and any(p.forced for p in self._group):
                if self._closing:
                    self._give_up_forced(cycle.error)
                else:
                    await self._settings.clock.wait(WRITE_RETRY)

    def _cursor(self) -> tuple[int, int] | None:
        """The oldest record not acknowledged (None: none is left, replay starts at the log's end)."""
        head = self._outstanding[0] if self._outstanding else self._ready[0] if self._ready else None
        return (head.segment, head.offset) if head is not None else None

    def _io(self, bodies: list[tuple[bytes, int, int]], cursor: object, deletable: list[int]) -> _Cycle:
        """In the writer thread: cursor first (it never points past what is durable), deletions, the group."""
        log = self._log
        assert log is not None
        cycle = _Cycle()
        if cursor is not _KEEP:
            try:
                seg, off = cursor if isinstance(cursor, tuple) else log.end()
                log.save_cursor(seg, off)
            except OSError as e:
                cycle.housekeeping.append(e)
        for seg in deletable:
            try:
                log.delete(seg)
            except OSError as e:
                cycle.housekeeping.append(e)
        if bodies:
            try:
                cycle.records = log.append(bodies)
            except OSError as e:
                cycle.error = e
        cycle.disk_bytes, cycle.active = log.disk_bytes, log.active
        return cycle

    def _committed(self, group: list[_Pending], future: asyncio.Future[None] | None, cycle: _Cycle) -> None:
        self._disk_bytes = cycle.disk_bytes
        if cycle.active != self._active:
            old, self._active = self._active, cycle.active
            if not self._live.get(old):
                self._deletable.append(old)  # everything in it was acknowledged while it was written
                self._work.set()
        for e in cycle.housekeeping:
            self._rlog.warning("persistent queue: could not save the cursor or delete a finished segment",
                               key="housekeeping", extra={"error": describe(e)})
        self._unwritten -= sum(HEADER_SIZE + len(p.body) for p in group)
        if cycle.error is not None:
            self._fail(group, future, cycle.error)
            return
        for p, rec in zip(group, cycle.records, strict=True):
            keep = self._cached + len(p.body) <= CACHE_BYTES
            if keep:
                self._cached += len(p.body)
            self._ready.append(_Entry(rec.segment, rec.offset, rec.size, rec.items, rec.enqueued_ms, p.units,
                                      p.body if keep else None))
            self._items += rec.items
            self._live[rec.segment] = self._live.get(rec.segment, 0) + 1
        if future is not None and not future.done():
            future.set_result(None)
        if group:
            self._wake.set()

    def _fail(self, group: list[_Pending], future: asyncio.Future[None] | None, error: OSError) -> None:
        forced = [p for p in group if p.forced]
        if forced:  # acknowledged by a replaced exporter's queue: written again with the next group
            self._group[:0] = forced
            self._unwritten += sum(HEADER_SIZE + len(p.body) for p in forced)
            if self._group_future is None:
                self._group_future = asyncio.get_running_loop().create_future()
            group = [p for p in group if not p.forced]
        self._used -= sum(p.units for p in group)
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        exc: RetryableError = (DiskFullError if full else StorageError)(
            f"persistent queue of exporter {self._settings.id}: cannot write to disk: {describe(error)}",
            retry_after=1.0)
        self._rlog.error("persistent queue: a write failed; its data is refused so senders send it again",
                         key="write_failed", extra={"requests": len(group), "items": sum(p.items for p in group),
                                                    "error": describe(error), "reason": exc_reason(exc)})
        if future is not None and not future.done():
            future.set_exception(exc)
            future.exception()  # retrieved: every waiter gets it through its own shield

    def _give_up_forced(self, error: OSError) -> None:
        """Closing while handed-over data still cannot be written: it is lost, and said so."""
        forced = [p for p in self._group if p.forced]
        self._group = [p for p in self._group if not p.forced]
        self._used -= sum(p.units for p in forced)
        self._unwritten -= sum(HEADER_SIZE + len(p.body) for p in forced)
        self._settings.logger.error("persistent queue closed with data handed over by a reload that could not be "
                                    "written; dropped", extra={"requests": len(forced),
                                                               "items": sum(p.items for p in forced),
                                                               "error": describe(error)})
        if not self._group and self._group_future is not None and not self._group_future.done():
            self._group_future.set_exception(StorageError(f"persistent queue of exporter {self._settings.id} "
                                                          "closed before the data was written", 1.0))
            self._group_future.exception()
            self._group_future = None

    # -- reading -------------------------------------------------------------------------------

    async def _load(self, entry: _Entry) -> bytes | None:
        """Read `entry` (and the run of records after it) back from disk; None if it is unreadable."""
        async with self._read_lock:
            if entry.body is not None or entry.corrupt:
                return entry.body
            run = [entry]
            end = entry.offset + entry.size
            for e in self._ready:
                if (e.segment != entry.segment or e.offset != end or e.body is not None or e.corrupt
                        or end - entry.offset + e.size > READ_AHEAD):
                    break
                run.append(e)
                end += e.size
            log = self._log
            assert log is not None and self._reader is not None
            try:
                data = await asyncio.get_running_loop().run_in_executor(
                    self._reader, log.read_span, entry.segment, entry.offset, end - entry.offset)
            except OSError as e:
                self._rlog.error("persistent queue: cannot read a record back", key="read_failed",
                                 extra={"segment": entry.segment, "offset": entry.offset, "error": describe(e)})
                for r in run:
                    r.corrupt = True
                return None
            for r in run:
                pos = r.offset - entry.offset
                decoded = decode_record(data, pos)
                if decoded is None or decoded[0] != r.size:
                    r.corrupt = True
                    continue
                r.body = data[pos + HEADER_SIZE:pos + r.size]
                self._cached += len(r.body)
            return entry.body

    def _skip(self, entry: _Entry, reason: str) -> None:
        """A record that cannot be read back: counted, logged, and let go (it can never be sent)."""
        eid, dt = self._labels
        self._skipped.labels(eid, dt, reason).inc()
        self._settings.logger.error("persistent queue: a record failed its checksum when read back; skipped",
                                    extra={"segment": entry.segment, "offset": entry.offset, "items": entry.items})
        self._release(entry)
        self._cursor_dirty = True
        self._work.set()

    def _release(self, entry: _Entry) -> None:
        self._used -= entry.units
        self._items -= entry.items
        live = self._live[entry.segment] - 1
        if live:
            self._live[entry.segment] = live
        else:
            del self._live[entry.segment]
            if entry.segment != self._active:
                self._deletable.append(entry.segment)
                self._work.set()

    def _stop_threads(self) -> None:
        for ex in (self._writer, self._reader):
            if ex is not None:
                ex.shutdown(wait=False)
        self._writer = self._reader = None


def exc_reason(e: BaseException) -> str:
    """The `reason` a queue refusal is counted under."""
    return str(getattr(e, "reason", "storage_error"))
