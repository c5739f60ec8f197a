"""Time as components see it: a monotonic `now()` and a wait that an event cuts short.

Components never read `time.monotonic()` or call `asyncio.sleep()` for their
own timing (batch timeouts, retry backoff, memory checks): they use the clock
in their `Settings`. The system clock is the default; tests pass
`pipeline.testing.FakeClock` and advance time explicitly, so a retry schedule
or an expiry can be checked without waiting for it.
"""
from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """`clock()` is monotonic seconds; `await clock.wait(delay, event)` is True when `event` ended the wait."""

    def __call__(self) -> float: ...

    async def wait(self, delay: float, event: asyncio.Event | None = None) -> bool: ...


class SystemClock:
    """The real monotonic clock."""

    __slots__ = ()

    def __call__(self) -> float:
        return time.monotonic()

    async def wait(self, delay: float, event: asyncio.Event | None = None) -> bool:
        """Wait up to `delay` seconds; return at once (True) if `event` is or becomes set."""
        if event is None:
            await asyncio.sleep(delay)
            return False
        if event.is_set():
            return True
        try:
            async with asyncio.timeout(delay):
                await event.wait()
        except TimeoutError:
            return False
        return True


SYSTEM_CLOCK = SystemClock()
