"""The retry wrapper: retries every failure that is not permanent, on the injected clock.

Mirrors the Collector's `retry_sender.go`: a `PermanentError` (and a partial
success, which the backend already decided) goes straight up; anything else
waits `Backoff.next_delay()` (raised by a throttle hint) and tries again,
until the next wait would end past `max_elapsed_time` (0: no limit), which
raises `RetriesExhaustedError`. Every wait and elapsed time is read from the
clock in `Settings`, so tests drive time with `pipeline.testing.FakeClock`.

Waits end at once when `shutdown()` sets the stop event, raising
`ShutdownError`; after that a failure is not retried at all. `hand_over()`
ends them the same way but raises `HandedOverError`, so a reload's successor
exporter sends the request instead. Who stops the retry sender, and when, is
the chain's decision (`helper.py`).
"""
from __future__ import annotations

import asyncio
import random

from pipeline.clock import Clock
from pipeline.errors import PartialSuccessError, PermanentError, RetryableError
from pipeline.exporterhelper.errors import (
    HandedOverError,
    RetriesExhaustedError,
    ShutdownError,
    describe,
)
from pipeline.exporterhelper.retry import Backoff, RetryConfig
from pipeline.exporterhelper.sender import Send
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload


class RetrySender:
    """Calls `next` until it succeeds, fails permanently, runs out of time, or the sender is shut down."""

    def __init__(self, cfg: RetryConfig, clock: Clock, log: RateLimitedLog, next_send: Send,
                 *, rng: random.Random | None = None) -> None:
        self._cfg = cfg
        self._clock = clock
        self._log = log
        self._next = next_send
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._handed_over = False

    async def send(self, payload: Payload) -> None:
        began = self._clock()
        try:
            await self._next(payload)
            return
        except (PermanentError, PartialSuccessError):
            raise
        except Exception as e:
            error: Exception = e
        await self._retry(payload, began, error)

    async def _retry(self, payload: Payload, began: float, error: Exception) -> None:
        cfg, clock = self._cfg, self._clock
        backoff = Backoff(cfg, self._rng)
        attempt = 1
        while True:
            retry_after = error.retry_after if isinstance(error, RetryableError) else None
            delay = backoff.next_delay(retry_after)
            if cfg.max_elapsed_time and clock() - began + delay > cfg.max_elapsed_time:
                raise RetriesExhaustedError(str(error), retry_after, attempts=attempt) from error
            self._log.warning("export failed; will retry", key="retry",
                              extra={"items": payload.items, "attempt": attempt, "delay_s": round(delay, 3),
                                     "error": describe(error)})
            if await clock.wait(delay, self._stop):
                if self._handed_over:
                    raise HandedOverError(describe(error)) from error
                raise ShutdownError(f"exporter is shutting down; not retrying: {describe(error)}",
                                    retry_after) from error
            attempt += 1
            try:
                await self._next(payload)
                return
            except (PermanentError, PartialSuccessError):
                raise
            except Exception as e:
                error = e

    async def shutdown(self) -> None:
        """End every retry wait now (its request raises `ShutdownError`) and retry nothing from here on."""
        self._stop.set()

    def hand_over(self) -> None:
        """End every retry wait now with `HandedOverError` (a successor will send), and retry nothing more."""
        self._handed_over = True
        self._stop.set()

