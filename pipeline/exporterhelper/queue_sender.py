"""The queue wrapper: accept now, send later, with `num_consumers` consumers draining the queue.

The top of the chain when `sending_queue.enabled` (the Collector's
`queue_sender.go`): `offer()` returns as soon as the queue holds the payload,
or raises `QueueFullError` (counted in `enqueue_failed{reason="queue_full"}`) so
the sender backs off. Each consumer hands one payload at a time to the rest of
the chain, which has already counted and logged whatever went wrong, so a
consumer only moves on.

Shutting down is two steps the chain calls in order: `shutdown()` closes the
queue and lets the consumers drain it; if the Service's deadline cuts that
short, `abandon()` stops the consumers and counts every payload still queued or
in flight as failed with reason `shutdown`, so nothing acknowledged disappears
uncounted. A reload that replaces the exporter calls `hand_over(adopt)` instead:
the queued payloads, and each one whose retry wait the hand-over ended, go to
the successor's `adopt`, and the consumers stop once their last attempt is done.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pipeline.errors import PermanentError, QueueFullError, RetryableError
from pipeline.exporterhelper.errors import HandedOverError
from pipeline.exporterhelper.queue import QueueConfig, SendQueue
from pipeline.exporterhelper.sender import Send
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload
from pipeline.telemetry import ExporterObs


class QueueSender:
    """A bounded queue in front of `next`, drained by `cfg.num_consumers` tasks."""

    def __init__(self, name: str, cfg: QueueConfig, queue: SendQueue, next_send: Send, *,
                 obs: ExporterObs, log: RateLimitedLog, logger: logging.LoggerAdapter[logging.Logger]) -> None:
        self._name = name
        self._cfg = cfg
        self._queue = queue
        self._next = next_send
        self._obs = obs
        self._log = log
        self._logger = logger
        self._consumers: list[asyncio.Task[None]] = []
        self._adopt: Callable[[list[Payload]], None] | None = None
        obs.register_queue(queue.size, queue.capacity)

    def size(self) -> int:
        """Occupancy in the sizer's unit (what `otelpipe_exporter_queue_size` reports)."""
        return self._queue.size()

    def offer(self, payload: Payload) -> None:
        """Queue the payload, or refuse it with `QueueFullError` so the sender retries later."""
        if not self._queue.offer(payload):
            self._obs.enqueue_failed(payload.items, "queue_full")
            self._log.warning("sending queue is full; refusing data so the sender backs off",
                              key="queue_full", extra={"queue_size": self._queue.capacity, "sizer": self._cfg.sizer})
            raise QueueFullError(f"sending queue of exporter {self._name} is full", retry_after=1.0)

    async def start(self) -> None:
        self._consumers = [asyncio.create_task(self._consume(), name=f"{self._name}-sender-{i}")
                           for i in range(self._cfg.num_consumers)]

    async def _consume(self) -> None:
        queue, send = self._queue, self._next
        while True:
            payload = await queue.take()
            if payload is None:
                return
            try:
                await send(payload)
            except asyncio.CancelledError:
                # The shutdown deadline cut this send short (maybe mid-retry): account for it.
                self._obs.failed(payload.items, "shutdown")
                raise
            except HandedOverError:
                if self._adopt is not None:
                    self._adopt([payload])
            except (PermanentError, RetryableError):
                continue  # the obs wrapper below already counted and logged it; take the next payload

    def hand_over(self, adopt: Callable[[list[Payload]], None]) -> None:
        """Give every queued payload to `adopt` (the successor), and later the ones a hand-over interrupts."""
        self._adopt = adopt
        self._queue.close()
        left = self._queue.drain_nowait()
        if left:
            adopt(left)

    def force(self, payloads: list[Payload]) -> None:
        """Queue payloads a predecessor had acknowledged, past the capacity if need be (never refused)."""
        for payload in payloads:
            self._queue.force(payload)

    async def shutdown(self) -> None:
        """Close the queue and wait until the consumers have sent (or given up on) everything in it."""
        self._queue.close()
        if self._consumers:
            await asyncio.gather(*self._consumers, return_exceptions=True)

    async def abandon(self) -> None:
        """Deadline reached: stop the consumers, count in-flight and queued payloads as failed (`shutdown`)."""
        self._queue.close()
        left = self._queue.drain_nowait()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        items = sum(p.items for p in left)
        if items:
            self._obs.failed(items, "shutdown")
            self._logger.error("shutdown deadline reached with data still queued; dropped",
                               extra={"items": items, "requests": len(left)})
