"""The chain every exporter sits behind: queue → obs → retry → (push timer) → timeout → push.

An exporter module only writes `async push(payload)` (plus optional
start/shutdown); `ExporterHelper` composes the wrappers around it in the
Collector's order (`exporter/exporterhelper/internal/base_exporter.go`): the
timeout bounds one attempt, the retry wrapper repeats attempts, obs counts the
request once, and the queue (when enabled) answers the caller before any of it
happens. With the queue disabled, the caller waits for the outcome and gets the
error (a `PermanentError` marked counted, or a `RetryableError`).

Shutdown, in the Collector's order: stop intake (new data is refused with a
retryable error and counted `enqueue_failed{reason="shutting_down"}`), then
the retry wrapper, then the queue, then the exporter. One deliberate
difference: data in the queue was acknowledged to its sender, so the queue
drains *with* retries until the Service's shutdown deadline (delivering beats
dropping); at the deadline the retry waits end, and whatever is still queued or
in flight is counted failed with reason `shutdown`. Without a queue the caller
still holds its data, so retry waits end as soon as shutdown starts and the
caller gets a retryable error to send it again.
"""
from __future__ import annotations

import asyncio

from pipeline.component import Exporter, Host, Settings
from pipeline.errors import RetryableError
from pipeline.exporterhelper.config import ExporterConfig
from pipeline.exporterhelper.obs import ObsSender, PushTimer
from pipeline.exporterhelper.queue import new_queue
from pipeline.exporterhelper.queue_sender import QueueSender
from pipeline.exporterhelper.retry_sender import RetrySender
from pipeline.exporterhelper.sender import Send
from pipeline.exporterhelper.timeout import TimeoutSender
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload


class ExporterHelper:
    """Consumer facade of one exporter for one signal. `exporter` is the wrapped exporter itself."""

    mutates_data = False

    def __init__(self, settings: Settings, exporter: Exporter, cfg: ExporterConfig) -> None:
        self.settings = settings
        self.exporter = exporter
        self.cfg = cfg
        self._obs = settings.telemetry.exporter(settings)
        log = RateLimitedLog(settings.logger)
        send: Send = exporter.push
        if cfg.timeout > 0:
            send = TimeoutSender(cfg.timeout, send).send
        send = PushTimer(self._obs, settings.clock, send).send
        self._retry: RetrySender | None = None
        if cfg.retry_on_failure.enabled:
            self._retry = RetrySender(cfg.retry_on_failure, settings.clock, log, send)
            send = self._retry.send
        self._send = ObsSender(self._obs, log, send).send
        q = cfg.sending_queue
        self._queue: QueueSender | None = (
            QueueSender(str(settings.id), q, new_queue(q), self._send, obs=self._obs, log=log, logger=settings.logger)
            if q.enabled else None)
        self._stopping = False
        self._shut = False

    @property
    def queue_size(self) -> int:
        return self._queue.size() if self._queue is not None else 0

    async def start(self, host: Host) -> None:
        await self.exporter.start(host)
        if self._queue is not None:
            await self._queue.start()

    async def consume(self, payload: Payload) -> None:
        if self._stopping:
            self._obs.enqueue_failed(payload.items, "shutting_down")
            raise RetryableError(f"exporter {self.settings.id} is shutting down", retry_after=1.0)
        if self._queue is None:
            await self._send(payload)
        else:
            self._queue.offer(payload)

    async def shutdown(self) -> None:
        """Stop intake, stop retrying (at once without a queue, at the deadline with one), drain, stop the exporter."""
        if self._shut:
            return
        self._shut = True
        self._stopping = True
        if self._queue is None:
            await self._stop_retry()
            await self._stop_exporter()
            return
        try:
            await self._queue.shutdown()
        except asyncio.CancelledError:
            await self._stop_retry()
            await self._queue.abandon()
            await self._stop_exporter()
            raise
        await self._stop_retry()
        await self._stop_exporter()

    async def _stop_retry(self) -> None:
        if self._retry is not None:
            await self._retry.shutdown()

    async def _stop_exporter(self) -> None:
        await self.exporter.shutdown()
