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

A persistent queue (`storage`) differs in three ways: `written()` waits until
the offered payload is on disk (a failed write is counted in `enqueue_failed`
with its reason and refused, retryably); each payload is acknowledged to the
queue with `done()` once sent or failed for good; and at shutdown the
consumers drain only while the backend takes data at once (the chain stops
retrying first): a send cut short by shutdown (`ShutdownError`, or the deadline)
stops the draining and leaves everything not sent on disk for the next start,
counted as nothing since nothing is lost.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pipeline.component import Host
from pipeline.errors import PermanentError, QueueFullError, RetryableError
from pipeline.exporterhelper.errors import HandedOverError, ShutdownError
from pipeline.exporterhelper.persistent_queue import exc_reason
from pipeline.exporterhelper.queue import QueueConfig, SendQueue
from pipeline.exporterhelper.sender import Send
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload
from pipeline.telemetry import ExporterObs

# Records a reload moves to the successor's queue between two waits for its disk.
MOVE_RUN = 256


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
        self._adopted: Callable[[], Awaitable[None]] | None = None  # the successor's queue is durable
        self._leaving = False  # a successor reopens this queue's storage
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

    async def written(self, payload: Payload) -> None:
        """Wait until an offered payload is durable (persistent queues); a failed write is counted and raised."""
        try:
            await self._queue.sync()
        except RetryableError as e:
            self._obs.enqueue_failed(payload.items, exc_reason(e))
            raise

    async def start(self, host: Host | None = None) -> None:
        await self._queue.open(host)
        self._consumers = [asyncio.create_task(self._consume(), name=f"{self._name}-sender-{i}")
                           for i in range(self._cfg.num_consumers)]

    async def _consume(self) -> None:
        queue, send = self._queue, self._next
        persistent = queue.persistent
        while True:
            payload = await queue.take()
            if payload is None:
                return
            if persistent and self._adopt is not None:
                await self._move(payload)  # handed over: what was on disk goes to the successor
                return
            try:
                await send(payload)
            except asyncio.CancelledError:
                # The shutdown deadline cut this send short (maybe mid-retry): account for it, unless it
                # stays on disk for the next start.
                if not persistent:
                    self._obs.failed(payload.items, "shutdown")
                raise
            except HandedOverError:
                if self._leaving:
                    return  # not sent: it stays on disk, and the successor opening this storage sends it
                if persistent and self._adopt is not None:
                    await self._move(payload)
                    return
                if self._adopt is not None:
                    self._adopt([payload])
            except ShutdownError:
                if persistent:
                    queue.halt()  # not sent and not lost: it and everything after it wait on disk
                    return
            except (PermanentError, RetryableError):
                pass  # the obs wrapper below already counted and logged it; take the next payload
            queue.done(payload)

    def hand_over(self, adopt: Callable[[list[Payload]], None],
                  adopted: Callable[[], Awaitable[None]] | None = None) -> None:
        """Give every queued payload to `adopt` (the successor), and later the ones a hand-over interrupts.

        A persistent queue's consumers move its records (they may have to be read back from disk);
        `adopted` (the successor's queue is persistent too) says when the successor has them durably.
        """
        self._adopt, self._adopted = adopt, adopted
        self._queue.close()
        left = self._queue.drain_nowait()
        if left:
            adopt(left)

    async def _move(self, payload: Payload | None) -> None:
        """Handed over: give this persistent queue's records, `payload` first, to the successor; forget them
        here in runs, each once the successor's queue has it on disk (never when that queue is in memory:
        then they also stay here, at-least-once). The queue is closed, so `take()` ends once it is empty."""
        assert self._adopt is not None
        moved: list[Payload] = []
        while payload is not None:
            self._adopt([payload])
            moved.append(payload)
            if len(moved) >= MOVE_RUN:
                await self._forget(moved)
                moved = []
            payload = await self._queue.take()
        await self._forget(moved)

    async def _forget(self, moved: list[Payload]) -> None:
        if self._adopted is None or not moved:
            return
        try:
            await self._adopted()
        except RetryableError as e:  # the successor could not write them: they stay on this queue's disk
            self._log.error("a reload's successor could not write handed-over requests; they stay in the old "
                            "queue's storage", key="move_failed",
                            extra={"items": sum(p.items for p in moved), "error": str(e)})
            return
        for p in moved:
            self._queue.done(p)

    def leave(self) -> None:
        """A reload's successor opens this queue's storage once this one has closed it: stop taking, and
        leave every payload not sent (or not yet written) on disk for it."""
        self._leaving = True
        self._queue.halt()

    async def synced(self) -> None:
        """Return once everything queued so far is durable (at once in memory)."""
        await self._queue.sync()

    def force(self, payloads: list[Payload]) -> None:
        """Queue payloads a predecessor had acknowledged, past the capacity if need be (never refused)."""
        for payload in payloads:
            self._queue.force(payload)

    async def shutdown(self) -> None:
        """Close the queue and wait until the consumers have sent (or given up on) everything in it."""
        self._queue.close()
        if self._consumers:
            await asyncio.gather(*self._consumers, return_exceptions=True)
        await self._queue.release()

    async def abandon(self) -> None:
        """Deadline reached: stop the consumers, count in-flight and queued payloads as failed (`shutdown`)."""
        self._queue.close()
        left = self._queue.drain_nowait()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        await self._queue.release()
        items = sum(p.items for p in left)
        if items:
            self._obs.failed(items, "shutdown")
            self._logger.error("shutdown deadline reached with data still queued; dropped",
                               extra={"items": items, "requests": len(left)})
