"""Bounded sending queues that sit in front of every exporter.

`SendQueue` is the seam for a persistent queue (`sending_queue.storage`, a
later issue): the exporter helper only offers, takes and closes. The in-memory
queue counts requests, as the Collector's does by default.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from pipeline.model import Payload


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """`sending_queue`: a bounded buffer drained by `num_consumers` concurrent senders."""

    enabled: bool = True
    num_consumers: int = 10
    queue_size: int = 1000
    storage: str | None = None

    def validate(self) -> list[object]:
        out: list[object] = []
        if self.num_consumers < 1:
            out.append(("num_consumers", "must be at least 1"))
        if self.queue_size < 1:
            out.append(("queue_size", "must be at least 1 (it counts requests)"))
        if self.storage is not None:
            out.append(("storage", "persistent sending queues are not available in this version; remove the key to use the in-memory queue"))
        return out


class SendQueue(Protocol):
    capacity: int

    def size(self) -> int: ...

    def offer(self, payload: Payload) -> bool: ...

    async def take(self) -> Payload | None: ...

    def close(self) -> None: ...

    def drain_nowait(self) -> list[Payload]: ...


class MemoryQueue:
    """FIFO of payloads bounded by request count; `take()` returns None once closed and empty."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Payload] = deque()
        self._closed = False
        self._cond = asyncio.Condition()
        self._waiters = 0
        self._wake = asyncio.Event()

    def size(self) -> int:
        return len(self._items)

    def offer(self, payload: Payload) -> bool:
        if self._closed or len(self._items) >= self.capacity:
            return False
        self._items.append(payload)
        self._wake.set()
        return True

    async def take(self) -> Payload | None:
        while True:
            if self._items:
                item = self._items.popleft()
                if not self._items and not self._closed:
                    self._wake.clear()
                return item
            if self._closed:
                return None
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def drain_nowait(self) -> list[Payload]:
        items = list(self._items)
        self._items.clear()
        return items
