"""The wrapper every exporter sits behind: queue → retry → timeout → push.

An exporter module only writes `async push(payload)` (plus optional
start/shutdown); this wrapper adds the Collector's exporterhelper behaviour:
a bounded sending queue drained by N consumers, retries with jittered
exponential backoff for anything not permanent, a per-attempt timeout, and the
standard sent / send_failed / enqueue_failed self-metrics with a reason on
every failure. A full queue raises `QueueFullError` back to the receiver.

Shutdown order follows the Collector: stop taking new data, let the queue
drain (retrying, because delivering beats dropping), and when the Service's
shutdown deadline cancels us, count whatever is left as failed with reason
`shutdown` so nothing disappears silently.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.component import Host, Settings
from pipeline.configtypes import Duration
from pipeline.errors import PartialSuccessError, PermanentError, QueueFullError, RetryableError
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload
from pipeline.queue import MemoryQueue, QueueConfig, SendQueue
from pipeline.retry import Backoff, RetryConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ExporterConfig:
    """The blocks every exporter config shares; exporter configs inherit from this."""

    timeout: Duration = Duration(5.0)
    sending_queue: QueueConfig = field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> list[object]:
        return [("timeout", "must be greater than 0")] if self.timeout <= 0 else []


class ExporterHelper:
    """Consumer facade of one exporter for one signal."""

    mutates_data = False

    def __init__(self, settings: Settings, exporter: Any, cfg: ExporterConfig) -> None:
        self.settings = settings
        self.exporter = exporter
        self.cfg = cfg
        self._obs = settings.telemetry.exporter(settings)
        self._log = RateLimitedLog(settings.logger)
        q = cfg.sending_queue
        self._queue: SendQueue | None = (MemoryQueue(int(q.queue_size), sizer=q.sizer, max_bytes=int(q.max_size))
                                         if q.enabled else None)
        self._workers: list[asyncio.Task[None]] = []
        self._inflight: dict[int, Payload] = {}
        self._stopping = False
        self._started = False
        self._shut = False
        self._sync_inflight = 0
        if self._queue is not None:
            self._obs.register_queue(self._queue.size, self._queue.capacity)

    @property
    def queue_size(self) -> int:
        return self._queue.size() if self._queue is not None else 0

    async def start(self, host: Host) -> None:
        start = getattr(self.exporter, "start", None)
        if start is not None:
            await start(host)
        if self._queue is not None:
            self._workers = [asyncio.create_task(self._worker(i), name=f"{self.settings.id}-sender-{i}")
                             for i in range(self.cfg.sending_queue.num_consumers)]
        self._started = True

    async def consume(self, payload: Payload) -> None:
        if self._stopping:
            self._obs.enqueue_failed(payload.items, "shutting_down")
            raise RetryableError(f"exporter {self.settings.id} is shutting down", retry_after=1.0)
        if self._queue is None:
            await self._send(payload, raise_errors=True)
            return
        if not self._queue.offer(payload):
            self._obs.enqueue_failed(payload.items, "queue_full")
            self._log.warning("sending queue is full; refusing data so the sender backs off",
                              key="queue_full", extra={"queue_size": self._queue.capacity,
                                                       "sizer": self.cfg.sending_queue.sizer})
            raise QueueFullError(f"sending queue of exporter {self.settings.id} is full", retry_after=1.0)

    async def _worker(self, slot: int) -> None:
        assert self._queue is not None
        while True:
            payload = await self._queue.take()
            if payload is None:
                return
            self._inflight[slot] = payload
            try:
                await self._send(payload, raise_errors=False)
            except asyncio.CancelledError:
                # The shutdown deadline cut this send short (maybe mid-retry): account for it.
                self._obs.failed(payload.items, "shutdown")
                raise
            finally:
                self._inflight.pop(slot, None)

    async def _send(self, payload: Payload, *, raise_errors: bool) -> None:
        retry = self.cfg.retry_on_failure
        backoff = Backoff(retry)
        began = time.monotonic()
        n = payload.items
        attempt = 0
        while True:
            attempt += 1
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(self.cfg.timeout):
                    await self.exporter.push(payload)
            except PartialSuccessError as e:
                rejected = min(max(e.rejected, 0), n)
                self._obs.observe_push(time.monotonic() - t0, "partial_success")
                self._obs.sent(n - rejected)
                if rejected:
                    self._obs.failed(rejected, "partial_success")
                self._log.warning("backend accepted the request partially; rejected items are not retried",
                                  key="partial", extra={"rejected": rejected, "error_message": str(e)})
                return
            except PermanentError as e:
                self._obs.observe_push(time.monotonic() - t0, "permanent_error")
                self._obs.failed(n, "permanent_error")
                self._log.error("export failed permanently; dropping data", key="permanent",
                                extra={"items": n, "error": str(e)})
                if raise_errors:
                    e.counted = True
                    raise
                return
            except Exception as e:  # every other failure is treated as transient
                self._obs.observe_push(time.monotonic() - t0, "retryable_error")
                reason = "timeout" if isinstance(e, TimeoutError) else "retryable_error"
                retry_after = e.retry_after if isinstance(e, RetryableError) else None
                if not retry.enabled:
                    self._obs.failed(n, reason)
                    self._log.error("export failed and retry_on_failure is disabled; dropping data",
                                    key="noretry", extra={"items": n, "error": _describe(e)})
                    if raise_errors:
                        raise RetryableError(str(e), retry_after) from e
                    return
                delay = backoff.next_delay(retry_after)
                elapsed = time.monotonic() - began
                if retry.max_elapsed_time and elapsed + delay > retry.max_elapsed_time:
                    self._obs.failed(n, "retries_exhausted")
                    self._log.error("export failed after retrying for max_elapsed_time; dropping data",
                                    key="exhausted", extra={"items": n, "attempts": attempt, "error": _describe(e)})
                    if raise_errors:
                        raise RetryableError(str(e), retry_after) from e
                    return
                self._log.warning("export failed; will retry", key="retry",
                                  extra={"items": n, "attempt": attempt, "delay_s": round(delay, 3), "error": _describe(e)})
                await asyncio.sleep(delay)
                continue
            self._obs.observe_push(time.monotonic() - t0, "success")
            self._obs.sent(n)
            return

    async def shutdown(self) -> None:
        """Stop intake, drain the queue (the Service's deadline may cancel us), then stop the exporter."""
        if self._shut:
            return
        self._shut = True
        self._stopping = True
        try:
            if self._queue is not None:
                self._queue.close()
                if self._workers:
                    await asyncio.gather(*self._workers, return_exceptions=True)
        except asyncio.CancelledError:
            for t in self._workers:
                t.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._count_abandoned()
            await self._stop_exporter()
            raise
        await self._stop_exporter()

    def _count_abandoned(self) -> None:
        if self._queue is None:
            return
        left = self._queue.drain_nowait()
        items = sum(p.items for p in left)
        if items:
            self._obs.failed(items, "shutdown")
            self.settings.logger.error("shutdown deadline reached with data still queued; dropped",
                                       extra={"items": items, "requests": len(left)})

    async def _stop_exporter(self) -> None:
        stop = getattr(self.exporter, "shutdown", None)
        if stop is not None:
            await stop()


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
