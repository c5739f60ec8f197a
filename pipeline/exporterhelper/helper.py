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

A reload that changes an exporter's settings replaces it with a successor of
the same id and signal (`hand_over`): what the old one's queue holds moves to
the successor's queue, a request waiting to be retried moves when its wait
ends (at once), stragglers sent to the old one are passed on, and only attempts
already under way finish against the old backend. Nothing acknowledged is
dropped or counted twice: the successor sends and counts it.

With a persistent queue (`sending_queue.storage`), `consume()` returns only
once the payload is on disk (end-to-end acknowledgement: `acknowledges` tells
the stages upstream, `batch` included, to wait for it), a request is retried
until it is delivered or refused for good (`max_elapsed_time` does not apply:
what is on disk is never given up because an outage lasts; `max_size` bounds
it instead), and shutdown stops retrying first: the queue drains while the
backend takes data at once, and everything else stays on disk for the next start.
"""
from __future__ import annotations

import asyncio
import dataclasses

from pipeline.component import Exporter, Host, Settings
from pipeline.config.types import Duration
from pipeline.errors import RetryableError
from pipeline.exporterhelper.config import ExporterConfig
from pipeline.exporterhelper.errors import HandedOverError
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
        q = cfg.sending_queue
        self._durable = q.enabled and q.storage is not None
        send: Send = exporter.push
        if cfg.timeout > 0:
            send = TimeoutSender(cfg.timeout, send).send
        send = PushTimer(self._obs, settings.clock, send).send
        self._retry: RetrySender | None = None
        if cfg.retry_on_failure.enabled:
            retry = cfg.retry_on_failure
            if self._durable:
                retry = dataclasses.replace(retry, max_elapsed_time=Duration(0))
            self._retry = RetrySender(retry, settings.clock, log, send)
            send = self._retry.send
        self._send = ObsSender(self._obs, log, send, keeps_unsent=self._durable).send
        self._queue: QueueSender | None = (
            QueueSender(str(settings.id), q, new_queue(q, settings), self._send, obs=self._obs, log=log,
                        logger=settings.logger)
            if q.enabled else None)
        self._started = False
        self._stopping = False
        self._shut = False
        self._successor: ExporterHelper | None = None
        self._adopting: set[asyncio.Task[None]] = set()

    @property
    def acknowledges(self) -> bool:
        """`consume()` returns only once the data is on disk (a persistent queue): see `component.acknowledges`."""
        return self._durable

    @property
    def queue_size(self) -> int:
        return self._queue.size() if self._queue is not None else 0

    async def start(self, host: Host) -> None:
        await self.exporter.start(host)
        if self._queue is not None:
            await self._queue.start(host)
        self._started = True

    async def consume(self, payload: Payload) -> None:
        if self._successor is not None:
            await self._successor.consume(payload)
            return
        if self._stopping:
            self._obs.enqueue_failed(payload.items, "shutting_down")
            raise RetryableError(f"exporter {self.settings.id} is shutting down", retry_after=1.0)
        if self._queue is None:
            try:
                await self._send(payload)
            except HandedOverError as e:  # replaced mid-retry; the caller still holds the data
                raise RetryableError(f"exporter {self.settings.id} was replaced by a reload", 0.0) from e
        else:
            self._queue.offer(payload)
            if self._durable:
                await self._queue.written(payload)

    def hand_over(self, successor: ExporterHelper) -> None:
        """A reload replaced this exporter: everything queued or waiting to be retried goes to `successor`."""
        self._successor = successor
        if self._retry is not None:
            self._retry.hand_over()
        if self._queue is None:
            return
        if self.shares_storage(successor):
            self._queue.leave()  # the successor replays the same log once this one has closed it
        else:
            # Forgotten here once the successor has them on disk; not when it is yet to start (it opens its
            # storage after this one stopped: the Service stops first an exporter whose port it needs).
            durable = successor.acknowledges and successor._started
            self._queue.hand_over(successor.adopt, successor.synced if durable else None)

    def shares_storage(self, successor: ExporterHelper) -> bool:
        """Both queues are persistent in the same `storage`: the successor must open it after this one closed
        it (the Service then stops this one first), and takes what is on disk from there."""
        return self._durable and successor._durable and (
            self.cfg.sending_queue.storage == successor.cfg.sending_queue.storage)

    async def synced(self) -> None:
        """Return once everything queued so far (adopted payloads included) is on disk."""
        if self._queue is not None:
            await self._queue.synced()

    def adopt(self, payloads: list[Payload]) -> None:
        """Take payloads a predecessor had acknowledged: queued past capacity, or sent now without a queue."""
        if self._queue is not None:
            self._queue.force(payloads)
            return
        for payload in payloads:
            task = asyncio.create_task(self._send_adopted(payload), name=f"{self.settings.id}-adopted")
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _send_adopted(self, payload: Payload) -> None:
        try:
            await self._send(payload)
        except HandedOverError:  # replaced again meanwhile
            if self._successor is not None:
                self._successor.adopt([payload])
        except Exception:  # the obs wrapper has counted and logged the failure
            return

    async def shutdown(self) -> None:
        """Stop intake, stop retrying (at once without a queue, at the deadline with one), drain, stop the exporter."""
        if self._shut:
            return
        self._shut = True
        self._stopping = True
        if self._queue is None:
            await self._stop_retry()
            if self._adopting:
                await asyncio.gather(*self._adopting, return_exceptions=True)
            await self._stop_exporter()
            return
        if self._durable:
            await self._stop_retry()  # drain only what the backend takes now; the rest waits on disk
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
