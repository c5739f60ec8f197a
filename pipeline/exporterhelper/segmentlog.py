"""The on-disk part of a persistent sending queue: an append-only log of segment files (blocking I/O only).

One queue owns one directory:

- `LOCK`: held with `flock` while a queue has the directory open, so two
  processes (or two exporters configured with the same storage) never write
  one log;
- `00000000000000000001.seg`, `...002.seg`: segments, written in order and
  never rewritten; a new process always starts a new segment. A segment is
  deleted once every record in it was acknowledged;
- `cursor`: where replay starts (the oldest record not yet acknowledged when it
  was written; a stale cursor only means duplicates, never loss).

A record is `magic (4) | length (4) | crc32 (4) | items (4) | enqueued at, ms
since the epoch (8) | the OTLP export request's wire bytes`; `length` counts
from `items` to the end and the checksum covers the same bytes. On open, every
segment from the cursor on is read and checked: a record whose header or
checksum is wrong is skipped, and reading resumes at the next offset where a
whole record checks out (`corrupt`); bad bytes up to the end of a segment are a
`torn_tail` (what a crash in the middle of a write leaves) and are cut off the
file. Nothing found on disk stops start-up.

`SegmentLog` is used from one thread at a time (the queue runs every call in
its own single worker thread), so it needs no locks; `read_span` opens the file
itself and may run in another thread.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"OPQ1"
_HEAD = struct.Struct("<4sII")   # magic, length (from `items` on), crc32 of the same bytes
_META = struct.Struct("<Iq")     # items, enqueued at (ms since the epoch)
HEADER_SIZE = _HEAD.size + _META.size
_CURSOR = struct.Struct("<4sQQI")  # magic, segment, offset, crc32 of segment+offset
_CURSOR_MAGIC = b"OPC1"
SEGMENT_SUFFIX = ".seg"
IOV_MAX = 1024  # buffers per writev (Linux's limit)
FILE_MODE = 0o600  # telemetry may carry personal data: only otelpipe's user reads its queue


class LockedError(OSError):
    """Another queue (in this process or another one) has the directory open."""


@dataclass(slots=True)
class Record:
    """Where one record is and what it holds (its bytes stay on disk)."""

    segment: int
    offset: int
    size: int       # header + body
    items: int
    enqueued_ms: int

    @property
    def body_size(self) -> int:
        return self.size - HEADER_SIZE


@dataclass(slots=True)
class Skipped:
    segment: int
    offset: int
    size: int
    reason: str  # corrupt | torn_tail


@dataclass(slots=True)
class Recovered:
    """What `open()` found: the records to send again, in order, and what it skipped."""

    records: list[Record] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def encode_header(body: bytes, items: int, enqueued_ms: int) -> bytes:
    meta = _META.pack(items, enqueued_ms)
    crc = zlib.crc32(body, zlib.crc32(meta))
    return _HEAD.pack(MAGIC, len(meta) + len(body), crc) + meta


def decode_record(buf: bytes | memoryview, pos: int) -> tuple[int, int, int] | None:
    """(size, items, enqueued_ms) of the whole, valid record at `pos`, or None."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    magic, length, crc = _HEAD.unpack_from(buf, pos)
    start = pos + _HEAD.size
    if magic != MAGIC or length < _META.size or start + length > len(buf):
        return None
    if zlib.crc32(memoryview(buf)[start:start + length]) != crc:
        return None
    items, enqueued_ms = _META.unpack_from(buf, start)
    return _HEAD.size + length, items, enqueued_ms


def segment_name(segment: int) -> str:
    return f"{segment:020d}{SEGMENT_SUFFIX}"


class SegmentLog:
    """The segment files of one queue directory; see the module docstring."""

    def __init__(self, directory: Path, segment_bytes: int, *, fsync: bool = True,
                 sync_file: Callable[[int], None] = os.fdatasync) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._sync_file = sync_file
        self._lock_fd = -1
        self._fd = -1
        self.active = 0        # the segment being written
        self.active_size = 0   # bytes in it
        self._damaged = False  # it ends in bytes a failed write left: never append to it again
        self.sizes: dict[int, int] = {}  # every segment file there is -> its size

    @property
    def disk_bytes(self) -> int:
        return sum(self.sizes.values())

    # -- open / close -----------------------------------------------------------------------

    def lock(self, mode: int) -> None:
        """Create the directory if needed and take its lock without waiting (LockedError when taken)."""
        make_dirs(self.directory, mode)
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockedError(e.errno, f"queue directory {self.directory} is in use by another queue") from None
            raise
        self._lock_fd = fd

    def open(self) -> Recovered:
        """Find what is left from earlier runs (see the module docstring) and start a new segment."""
        found = Recovered()
        segments = self._segments()
        cursor = self._read_cursor()
        for seg in segments:
            path = self.directory / segment_name(seg)
            if cursor is not None and seg < cursor[0]:
                self._unlink(path)  # every record in it was acknowledged; deleting it was cut short
                continue
            start = cursor[1] if cursor is not None and seg == cursor[0] else 0
            before = len(found.records)
            size = self._scan(seg, path, start, found)
            if len(found.records) == before:
                self._unlink(path)  # nothing (left) to send in it
            else:
                self.sizes[seg] = size
        last = max([*segments, cursor[0] if cursor is not None else 0], default=0)
        self._start_segment(last + 1)
        return found

    def close(self, *, finished: bool = False) -> None:
        """Close the files; `finished` (every record was acknowledged) also removes the segments, last first."""
        if finished and self._lock_fd >= 0:
            for seg in sorted(self.sizes, reverse=True):
                self._unlink(self.directory / segment_name(seg))
            self.sizes.clear()
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)  # closing the lock's descriptor releases the flock
        self._fd = self._lock_fd = -1

    # -- writing -----------------------------------------------------------------------------

    def append(self, bodies: Sequence[tuple[bytes, int, int]]) -> list[Record]:
        """Write records `(body, items, enqueued_ms)` at the end, durably when `fsync`; all or none.

        A group goes into one segment: a new one first when it would not fit in
        the active segment's room (a group larger than a segment gets one of its own).
        On failure (a full disk, say) the active segment is cut back to where it
        was and the error is raised; none of the group counts as written.
        """
        heads = [encode_header(body, items, ms) for body, items, ms in bodies]
        total = sum(len(h) + len(b) for h, (b, _, _) in zip(heads, bodies, strict=True))
        if self._damaged or (self.active_size and self.active_size + total > self.segment_bytes):
            self._start_segment(self.active + 1)
        before = self.active_size
        out: list[Record] = []
        pos = before
        bufs: list[bytes] = []
        for head, (body, items, ms) in zip(heads, bodies, strict=True):
            size = len(head) + len(body)
            out.append(Record(self.active, pos, size, items, ms))
            pos += size
            bufs += (head, body)
        try:
            _write_all(self._fd, bufs)
            if self.fsync:
                self._sync_file(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, before)
            except OSError:
                self._damaged = True  # cannot cut the bad bytes off: the next group starts a new segment
            raise
        self.active_size = pos
        self.sizes[self.active] = pos
        return out

    def save_cursor(self, segment: int, offset: int) -> None:
        """Where replay starts: rewritten in place, not synced (a stale cursor only replays more)."""
        body = struct.pack("<QQ", segment, offset)
        data = _CURSOR.pack(_CURSOR_MAGIC, segment, offset, zlib.crc32(body))
        fd = os.open(self.directory / "cursor", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)

    def end(self) -> tuple[int, int]:
        """The position the next record will have (the cursor when nothing is left to send)."""
        return self.active, self.active_size

    def delete(self, segment: int) -> None:
        """Remove a segment whose records were all acknowledged (never the active one)."""
        if segment == self.active or segment not in self.sizes:
            return
        self._unlink(self.directory / segment_name(segment))
        del self.sizes[segment]

    # -- reading -----------------------------------------------------------------------------

    def read_span(self, segment: int, offset: int, size: int) -> bytes:
        """`size` bytes of a segment from `offset` (consecutive records, read in one call)."""
        fd = os.open(self.directory / segment_name(segment), os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    # -- internals ---------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        out = []
        for entry in os.scandir(self.directory):
            stem, dot, suffix = entry.name.partition(".")
            if dot and "." + suffix == SEGMENT_SUFFIX and stem.isdigit() and entry.is_file(follow_symlinks=False):
                out.append(int(stem))
        return sorted(out)

    def _read_cursor(self) -> tuple[int, int] | None:
        try:
            data = (self.directory / "cursor").read_bytes()
        except FileNotFoundError:
            return None
        if len(data) < _CURSOR.size:
            return None
        magic, seg, off, crc = _CURSOR.unpack_from(data)
        if magic != _CURSOR_MAGIC or zlib.crc32(struct.pack("<QQ", seg, off)) != crc:
            return None  # torn or foreign: replay everything there is (duplicates, never loss)
        return seg, off

    def _scan(self, seg: int, path: Path, start: int, found: Recovered) -> int:
        """Collect the valid records of one segment from `start`; cut a torn tail off. Returns its size."""
        with open(path, "rb") as f:
            data = f.read()
        pos = min(start, len(data))
        for kind, at, end, rec in _walk(data, pos):
            if kind == "record":
                assert rec is not None
                found.records.append(Record(seg, at, rec[0], rec[1], rec[2]))
            elif kind == "corrupt":
                found.skipped.append(Skipped(seg, at, end - at, "corrupt"))
            else:
                found.skipped.append(Skipped(seg, at, end - at, "torn_tail"))
                with open(path, "r+b") as f:
                    f.truncate(at)
                return at
        return len(data)

    def _start_segment(self, segment: int) -> None:
        """Switch writing to a new segment file (the old one stays until its records are acknowledged)."""
        path = self.directory / segment_name(segment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self.active, self.active_size = segment, 0
        self._damaged = False
        self.sizes[segment] = 0
        if self.fsync:
            self._sync_directory()  # the new file's name must survive a power loss with its records

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _walk(data: bytes, pos: int) -> Iterator[tuple[str, int, int, tuple[int, int, int] | None]]:
    """("record", at, end, (size, items, ms)) for each valid record; ("corrupt", at, next, None) for bad
    bytes followed by a valid record; ("torn_tail", at, len, None) for bad bytes up to the end."""
    end = len(data)
    while pos < end:
        rec = decode_record(data, pos)
        if rec is not None:
            yield "record", pos, pos + rec[0], rec
            pos += rec[0]
            continue
        nxt = _resync(data, pos + 1)
        if nxt is None:
            yield "torn_tail", pos, end, None
            return
        yield "corrupt", pos, nxt, None
        pos = nxt


def make_dirs(path: Path, mode: int) -> None:
    """mkdir -p, with `mode` (minus the umask) for every directory it creates, not only the last."""
    for p in (*reversed(path.parents), path):
        if not p.is_dir():
            p.mkdir(mode=mode, exist_ok=True)


def _resync(data: bytes, pos: int) -> int | None:
    """The next offset after a bad record where a whole, valid record starts."""
    while True:
        pos = data.find(MAGIC, pos)
        if pos < 0:
            return None
        if decode_record(data, pos) is not None:
            return pos
        pos += 1


def _write_all(fd: int, bufs: list[bytes]) -> None:
    """writev every buffer, resuming after short writes."""
    views = [memoryview(b) for b in bufs if b]
    i = 0
    while i < len(views):
        chunk = views[i:i + IOV_MAX]
        n = os.writev(fd, chunk)
        for v in chunk:
            if n >= len(v):
                n -= len(v)
                i += 1
            else:
                views[i] = v[n:]
                break
