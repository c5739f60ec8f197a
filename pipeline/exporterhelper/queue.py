"""Bounded sending queues that sit in front of every exporter (the data structure; `queue_sender` drains it).

`SendQueue` is what the queue sender drains: `MemoryQueue` here, or the
`PersistentQueue` (`persistent_queue.py`) when `sending_queue.storage` names a
directory or a storage extension; `new_queue()` is the one place that picks
the implementation from the config.

The queue is bounded twice. `queue_size` counts in the unit `sizer` names, as
the Collector's does (`requests` by default, or `items`, or `bytes`), so
Collector configs keep their meaning. On top of that, `max_size` always bounds
the bytes the queue holds, whatever the sizer: a queue of 1,000 requests is
~70 MB of ordinary agent traffic but 5 GB of 5 MB requests, and memory must
stay bounded whatever senders choose to send. A payload is measured by its
wire size, which is also what it costs to hold (payloads wait as bytes).
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from pipeline.component import ComponentID, Host, Settings
from pipeline.config.types import ByteSize, Issue
from pipeline.exporterhelper.persistent_queue import PersistentQueue
from pipeline.exporterhelper.storage import is_directory
from pipeline.model import Payload

Sizer = Literal["requests", "items", "bytes"]

# Enough for the default 1,000 requests of ordinary agent traffic (SDK batches of 512 spans are
# ~250 KB) while keeping a queue's worst case far below a typical pod's memory limit.
DEFAULT_MAX_SIZE = ByteSize(256 * 1024 * 1024)
DEFAULT_QUEUE_SIZE = ByteSize(1000)  # requests, as the Collector's default


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """`sending_queue`: a bounded buffer drained by `num_consumers` concurrent senders.

    queue_size: capacity in `sizer` units (requests, items, or bytes; sizes like '64MiB' are accepted).
    max_size: the most bytes the queue holds whatever the sizer (memory bound; with `storage`, disk bound).
    storage: a directory, or the id of a storage extension (file_storage), that makes the queue persistent.
    """

    enabled: bool = True
    num_consumers: int = 10
    sizer: Sizer = "requests"
    queue_size: ByteSize = DEFAULT_QUEUE_SIZE
    max_size: ByteSize = DEFAULT_MAX_SIZE
    storage: str | None = None

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.num_consumers < 1:
            out.append(Issue("num_consumers", "must be at least 1"))
        if self.queue_size < 1:
            unit = {"requests": "requests", "items": "items", "bytes": "bytes"}[self.sizer]
            out.append(Issue("queue_size", f"must be at least 1 (it counts {unit}, as `sizer` says)"))
        if self.max_size < 1:
            out.append(Issue("max_size", "must be greater than 0, e.g. '256MiB' (the default)"))
        if self.storage is not None and not is_directory(self.storage):
            try:
                ComponentID.parse(self.storage)
            except ValueError:
                out.append(Issue("storage", f"{self.storage!r} is neither a directory (write an absolute path, or "
                                            "one starting with ./) nor a storage extension id such as file_storage"))
        return out


class SendQueue(Protocol):
    """What the queue sender needs of a queue, in memory or persistent (`storage`).

    `offer` admits or refuses at once; `sync` returns once what was offered is
    durable (at once in memory); `take` hands out the oldest payload and `done`
    says the exporter is finished with it (a persistent queue may then forget
    it); `close` refuses new offers and lets `take` drain, `halt` ends takes
    now, `release` frees what `open` took (files, threads).
    """

    capacity: int
    persistent: bool

    def size(self) -> int: ...

    async def open(self, host: Host | None) -> None: ...

    def offer(self, payload: Payload) -> bool: ...

    async def sync(self) -> None: ...

    async def take(self) -> Payload | None: ...

    def done(self, payload: Payload) -> None: ...

    def close(self) -> None: ...

    def halt(self) -> None: ...

    def drain_nowait(self) -> list[Payload]: ...

    def force(self, payload: Payload) -> None: ...
    async def release(self) -> None: ...


def payload_bytes(payload: Payload) -> int:
    """Wire size of a payload; encodes it once if no stage has yet (the exporter needs the bytes anyway)."""
    return len(payload.serialize())


class MemoryQueue:
    """FIFO of payloads bounded by `capacity` sizer units and by `max_bytes`.

    `take()` returns None once closed and empty. A single payload larger than
    the whole queue is still taken when the queue is empty, so one oversized
    request can never wedge an exporter (it is bounded by the receivers' own
    request limits).
    """

    persistent = False

    def __init__(self, capacity: int, *, sizer: Sizer = "requests", max_bytes: int = DEFAULT_MAX_SIZE) -> None:
        self.capacity = capacity
        self.sizer = sizer
        self.max_bytes = max_bytes
        self._items: deque[tuple[Payload, int, int]] = deque()  # (payload, sizer units, bytes)
        self._used = 0
        self._bytes = 0
        self._closed = False
        self._wake = asyncio.Event()

    def size(self) -> int:
        """Occupancy in sizer units (what `otelpipe_exporter_queue_size` reports)."""
        return self._used

    def bytes(self) -> int:
        return self._bytes

    def offer(self, payload: Payload) -> bool:
        if self._closed:
            return False
        units, nbytes = self._measure(payload)
        if self._items and (self._used + units > self.capacity or self._bytes + nbytes > self.max_bytes):
            return False
        self._append(payload, units, nbytes)
        return True

    def force(self, payload: Payload) -> None:
        """Append even past the bounds: a payload a replaced exporter's queue had already acknowledged."""
        self._append(payload, *self._measure(payload))

    def _measure(self, payload: Payload) -> tuple[int, int]:
        nbytes = payload_bytes(payload)
        return (1 if self.sizer == "requests" else payload.items if self.sizer == "items" else nbytes), nbytes

    def _append(self, payload: Payload, units: int, nbytes: int) -> None:
        payload.compact()
        self._items.append((payload, units, nbytes))
        self._used += units
        self._bytes += nbytes
        self._wake.set()

    async def take(self) -> Payload | None:
        while True:
            if self._items:
                payload, units, nbytes = self._items.popleft()
                self._used -= units
                self._bytes -= nbytes
                if not self._items and not self._closed:
                    self._wake.clear()
                return payload
            if self._closed:
                return None
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def halt(self) -> None:
        self.close()

    def drain_nowait(self) -> list[Payload]:
        items = [p for p, _, _ in self._items]
        self._items.clear()
        self._used = self._bytes = 0
        return items

    # Nothing to open, wait for, acknowledge or free in memory.
    async def open(self, host: Host | None) -> None:
        return None

    async def sync(self) -> None:
        return None

    def done(self, payload: Payload) -> None:
        return None

    async def release(self) -> None:
        return None


def new_queue(cfg: QueueConfig, settings: Settings | None = None) -> SendQueue:
    """The queue `sending_queue` describes: in memory, or on disk when `storage` is set (needs `settings`)."""
    if cfg.storage is not None and settings is not None:
        return PersistentQueue(cfg, settings)
    return MemoryQueue(int(cfg.queue_size), sizer=cfg.sizer, max_bytes=int(cfg.max_size))
