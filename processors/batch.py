"""The batch processor: group payloads into bigger requests by size or time.

Behaves like the Collector's batch processor. `consume()` only appends the
payload to a buffer and returns (the sender is answered as soon as the data is
held); one background task per processor instance sends a batch when the
buffered item count reaches `send_batch_size`, or when `timeout` has passed
since the first payload of the batch arrived. Payloads are merged once per
flush with `pipeline.model.merge`, which concatenates cached wire bytes when
no stage upstream changed them, so an unmutated pipeline batches without
decoding or encoding anything. Only a batch above `send_batch_max_size` is
decoded, to be cut with `pipeline.model.split`.

The buffer is a queue, and what it acknowledged it keeps: the sender has been
answered, so a batch that downstream refuses with a retryable error (an
exporter's sending queue is full, a memory limit) is not dropped, as the
Collector's batch processor does, but put back at the head of the buffer and
offered again with a short exponential backoff. While downstream refuses, the
processor is *blocked*: every new `consume()` is refused at once with the same
kind of retryable error, so back-pressure reaches the receivers (429 /
RESOURCE_EXHAUSTED with a retry delay) instead of data being taken in and lost.
Only a permanent error drops a batch, counted once: when the exporter helper
already counted it as `send_failed`, not again here. Answering each sender
only once its data reached an exporter queue would say the same thing more
strictly, but would make every request wait up to `timeout` and cap an SDK
that exports one batch at a time at a few thousand spans per second.

To keep memory bounded when downstream is slower than intake, a `consume()`
that finds more than `max_buffered_items` buffered waits until the sender has
taken a batch out.

End-to-end acknowledgement: when downstream acknowledges (an exporter with a
persistent queue, `sending_queue.storage`), answering on arrival would tell a
sender its data is safe while it is only in memory. Then `consume()` waits
until the batch holding the payload has been handed on, and so written to
disk: every payload buffered between two sends shares one future, which the
send resolves, or fails with downstream's error (the senders send again:
nothing is held back, nothing blocks). A sender that stops waiting (its
deadline) takes its payload back if it is still buffered. Every send then
takes the whole buffer, so that a payload never waits for two batches.
Pipelines without a persistent queue keep answering on arrival.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from pipeline.component import (
    Consumer,
    Host,
    ProcessorFactory,
    Settings,
    Stability,
    acknowledges,
)
from pipeline.config.types import Duration, Issue
from pipeline.errors import (
    DataRefusedError,
    PermanentError,
    QueueFullError,
    RetryableError,
)
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal, merge, split

DEFAULT_SEND_BATCH_SIZE = 8192
# Default back-pressure threshold, in batches: enough to ride out a short downstream stall.
BUFFERED_BATCHES = 10
# Backoff while downstream refuses: from a few milliseconds (a queue that frees up at once)
# up to the delay the refusal asked for, at most this long.
RETRY_INITIAL = 0.005
RETRY_MAX = 1.0

Trigger = Literal["size", "timeout", "flush", "retry"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchConfig:
    """The Collector's batch settings, plus otelpipe's `max_buffered_items` bound.

    send_batch_size: items that trigger a send (0: only the timeout sends).
    send_batch_max_size: upper bound on the items of one sent request (0: no bound).
    timeout: longest a batch waits for more items (0: send at once).
    max_buffered_items: items held before `consume` waits for the sender
      (0: 10 batches' worth, i.e. 10 x max(send_batch_size, send_batch_max_size)).
    """

    send_batch_size: int = DEFAULT_SEND_BATCH_SIZE
    send_batch_max_size: int = 0
    timeout: Duration = Duration(0.2)
    max_buffered_items: int = 0

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if self.send_batch_size < 0:
            issues.append(Issue("send_batch_size",
                                f"must be 0 (no size trigger) or greater, got {self.send_batch_size}"))
        if self.send_batch_max_size < 0:
            issues.append(Issue("send_batch_max_size",
                                f"must be 0 (no limit) or greater, got {self.send_batch_max_size}"))
        elif 0 < self.send_batch_max_size < self.send_batch_size:
            issues.append(Issue("send_batch_max_size",
                           f"must be 0 (no limit) or at least send_batch_size ({self.send_batch_size}), "
                           f"got {self.send_batch_max_size}"))
        if self.timeout < 0:
            issues.append(Issue("timeout", "must not be negative"))
        if self.max_buffered_items < 0:
            issues.append(Issue("max_buffered_items",
                                f"must be 0 (automatic) or greater, got {self.max_buffered_items}"))
        elif 0 < self.max_buffered_items < max(self.send_batch_size, self.send_batch_max_size):
            issues.append(Issue("max_buffered_items",
                           f"must be 0 (automatic) or at least send_batch_size and send_batch_max_size "
                           f"({max(self.send_batch_size, self.send_batch_max_size)}), got {self.max_buffered_items}"))
        return issues

    def buffer_limit(self) -> int:
        """Items held before `consume` waits for the sender."""
        if self.max_buffered_items > 0:
            return self.max_buffered_items
        return BUFFERED_BATCHES * (max(self.send_batch_size, self.send_batch_max_size) or DEFAULT_SEND_BATCH_SIZE)


class BatchProcessor:
    """One batcher for one pipeline and signal; see the module docstring."""

    mutates_data = False

    def __init__(self, settings: Settings, cfg: BatchConfig, next_consumer: Consumer) -> None:
        self.settings = settings
        self.cfg = cfg
        self._next = next_consumer
        self._size = cfg.send_batch_size
        self._max = cfg.send_batch_max_size
        self._timeout = float(cfg.timeout)
        self._limit = cfg.buffer_limit()
        self._clock = settings.clock
        self._obs = settings.telemetry.processor(settings)
        self._log = RateLimitedLog(settings.logger)
        tel, pid = settings.telemetry, str(settings.id)
        self._size_sends = tel.counter("processor_batch_batch_size_trigger_send").labels(pid)
        self._timeout_sends = tel.counter("processor_batch_timeout_trigger_send").labels(pid)
        self._pending: list[Payload] = []
        self._count = 0            # items in _pending
        self._batch_start = 0.0    # clock() when the first payload of the current batch arrived
        self._wake = asyncio.Event()   # the worker should look at the buffer again
        self._room = asyncio.Event()   # the buffer dropped to the limit (wakes back-pressured consumers)
        self._send_lock = asyncio.Lock()  # one flush at a time keeps batches in arrival order
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._blocked: RetryableError | None = None  # downstream's last refusal, until a send succeeds
        self._retry_delay = RETRY_INITIAL
        self._acked = acknowledges(next_consumer)
        # With acknowledgement: resolved once what is buffered now has been handed on.
        self._sent: asyncio.Future[None] | None = None

    @property
    def acknowledges(self) -> bool:
        """Senders are answered once their batch was written downstream (see the module docstring)."""
        return acknowledges(self._next)

    @property
    def buffered_items(self) -> int:
        return self._count

    async def start(self, host: Host) -> None:
        self._ensure_worker()

    @property
    def blocked(self) -> bool:
        """Downstream refused the last batch; new data is refused until it takes it."""
        return self._blocked is not None

    async def consume(self, payload: Payload) -> None:
        if self._closed:
            raise RetryableError(f"processor {self.settings.id} is shut down", retry_after=1.0)
        if not self._pending and self._blocked is None and not self._send_lock.locked():
            # Nothing held: the moment to follow a reload that made downstream (not) acknowledge, so
            # that one buffer never mixes data whose senders wait with data they were answered for.
            self._acked = acknowledges(self._next)
        if self._acked:
            await self._consume_acknowledged(payload)
            return
        if self._blocked is not None:
            raise _refusal(self._blocked, f"processor {self.settings.id} holds data its downstream refused")
        first = not self._pending
        if first:
            self._batch_start = self._clock()
        self._pending.append(payload.compact())
        self._count += payload.items
        self._ensure_worker()
        if first or self._ready():
            self._wake.set()
        while self._count > self._limit and not self._closed:
            self._room.clear()
            await self._room.wait()

    async def _consume_acknowledged(self, payload: Payload) -> None:
        """Buffer the payload and return once the batch holding it was handed on (or raise why not)."""
        first = not self._pending
        if first:
            self._batch_start = self._clock()
        self._pending.append(payload.compact())
        self._count += payload.items
        sent = self._sent
        if sent is None:
            sent = self._sent = asyncio.get_running_loop().create_future()
        self._ensure_worker()
        if first or self._ready():
            self._wake.set()
        try:
            await asyncio.shield(sent)
        except asyncio.CancelledError:
            if sent is self._sent:  # not cut yet: the sender will send it again, so take it back
                self._withdraw(payload)
            raise
        except RetryableError as e:
            raise _refusal(e, f"processor {self.settings.id}: downstream did not take the batch") from None
        except PermanentError as e:
            refused = PermanentError(f"processor {self.settings.id}: downstream refused the batch: {e}")
            refused.counted = e.counted
            raise refused from None
        except Exception as e:
            raise RetryableError(f"processor {self.settings.id}: the batch was not sent: {type(e).__name__}: {e}",
                                 retry_after=1.0) from None

    def _withdraw(self, payload: Payload) -> None:
        for i, p in enumerate(self._pending):
            if p is payload:
                del self._pending[i]
                self._count -= payload.items
                return

    async def force_flush(self) -> None:
        """Send everything buffered now and wait until downstream has taken it (retrying while it refuses)."""
        while not await self._flush("flush"):
            await asyncio.sleep(self._next_retry_delay())

    async def shutdown(self) -> None:
        """Refuse new data, let an in-flight send finish, flush the buffer downstream."""
        if self._closed:
            return
        self._closed = True
        self._room.set()  # back-pressured producers return: their data is buffered and flushed below
        self._wake.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
            await self.force_flush()
        except asyncio.CancelledError:
            # The Service's shutdown deadline: account for what could not be sent.
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            lost, self._count = self._count, 0
            self._pending = []
            sent, self._sent = self._sent, None
            if sent is not None and not sent.done():  # senders still waiting: they must send it again
                sent.set_exception(RetryableError(f"processor {self.settings.id} shut down", retry_after=1.0))
                sent.exception()
            if lost:
                self._obs.dropped(lost, "shutdown")
                self.settings.logger.error("shutdown deadline reached with batched data not sent; dropped",
                                           extra={"items": lost})
            raise

    # -- internals ---------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"{self.settings.id}-{self.settings.pipeline}-batcher")

    def _ready(self) -> bool:
        """A size-triggered send is due (or the buffer is over its limit)."""
        return (self._size > 0 and self._count >= self._size) or self._count > self._limit

    async def _run(self) -> None:
        """The timer and sender: waits for a full batch or the timeout, then flushes."""
        while not self._closed:
            if self._blocked is not None:
                # Downstream refused: offer the held data again after a backoff (shutdown cuts it short).
                self._wake.clear()
                try:
                    async with asyncio.timeout(self._next_retry_delay()):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                if not self._closed:
                    await self._flush("retry")
                continue
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._ready():
                await self._flush("size")
                continue
            wait = self._batch_start + self._timeout - self._clock()
            if wait <= 0:
                await self._flush("timeout")
                continue
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _flush(self, trigger: Trigger) -> bool:
        """Send what is due; False when downstream refused (the rest is back at the head of the buffer)."""
        async with self._send_lock:
            if self._acked:
                await self._flush_acknowledged(trigger)
                return True
            batches = self._cut(everything=trigger != "size")
            counter = self._size_sends if trigger == "size" else self._timeout_sends if trigger == "timeout" else None
            for i, batch in enumerate(batches):
                if batch.items == 0:
                    continue  # only empty requests were buffered: nothing to send (as in the Collector)
                if counter is not None:
                    counter.inc()
                try:
                    delivered = await self._send(batch)
                except asyncio.CancelledError:
                    self._requeue(batches[i:])  # the shutdown deadline counts it with the rest
                    raise
                if not delivered:
                    self._requeue(batches[i:])
                    return False
            return True

    async def _flush_acknowledged(self, trigger: Trigger) -> None:
        """Send the whole buffer and tell its senders how it went (they hold their data until then)."""
        sent, self._sent = self._sent, None
        batches = self._cut(everything=True)
        counter = self._size_sends if trigger == "size" else self._timeout_sends if trigger == "timeout" else None
        error: BaseException | None = None
        try:
            for batch in batches:
                if batch.items == 0:
                    continue
                if counter is not None:
                    counter.inc()
                try:
                    await self._next.consume(batch)
                except Exception as e:
                    error = e
                    break
        except asyncio.CancelledError:
            error = RetryableError(f"processor {self.settings.id} shut down before the batch was sent", 1.0)
            raise
        finally:
            if sent is not None and not sent.done():
                if error is None:
                    sent.set_result(None)
                else:
                    sent.set_exception(error)
                    sent.exception()  # retrieved: each sender gets it through its own shield
        if error is not None:
            self._log.warning("downstream did not take a batch; its senders are told to send it again",
                              key="not_taken", extra={"error": f"{type(error).__name__}: {error}"})

    def _requeue(self, batches: list[Payload]) -> None:
        """Put batches downstream did not take back at the head of the buffer, in order."""
        back = [b.compact() for b in batches if b.items]
        if back:
            self._pending[:0] = back
            self._count += sum(b.items for b in back)

    def _next_retry_delay(self) -> float:
        delay = self._retry_delay
        cap = min(RETRY_MAX, self._blocked.retry_after or RETRY_MAX) if self._blocked is not None else RETRY_MAX
        self._retry_delay = min(delay * 2, max(cap, RETRY_INITIAL))
        return min(delay, cap)

    def _cut(self, *, everything: bool) -> list[Payload]:
        """Take batches out of the buffer (no awaits: the buffer cannot change meanwhile).

        A size-triggered cut keeps a tail smaller than `send_batch_size` left by
        splitting at `send_batch_max_size`, as the Collector does, so sent
        requests stay full; the tail starts a new batch (and a new timeout).
        """
        if not self._pending or (not everything and not self._ready()):
            return []
        parts, self._pending = self._pending, []
        taken, self._count = self._count, 0
        try:
            merged = merge(parts[0].signal, parts)
            if self._max <= 0 or merged.items <= self._max:
                batches = [merged]
            else:
                batches = split(merged.signal, merged, self._max)
                if not everything and self._size > 0 and len(batches) > 1 and batches[-1].items < self._size:
                    rest = batches.pop()
                    if merged.raw_cached is not None:
                        # Keep the buffer all-bytes so the next merge is a concatenation again.
                        rest.serialize()
                    self._pending.append(rest)
                    self._count = rest.items
                    self._batch_start = self._clock()
        except Exception as e:  # a bug in merge/split must not stop the batcher; never lose data silently
            self._obs.dropped(taken, "internal_error")
            self.settings.logger.exception("could not build a batch; its data is dropped",
                                           extra={"items": taken, "error": f"{type(e).__name__}: {e}"})
            batches = []
        if self._count <= self._limit:
            self._room.set()
        return batches

    async def _send(self, batch: Payload) -> bool:
        """Hand one batch on; False when downstream refused it with a retryable error (nothing is lost)."""
        try:
            await self._next.consume(batch)
        except asyncio.CancelledError:
            raise
        except RetryableError as e:
            if self._blocked is None:
                self._log.warning("downstream refused a batch; holding it and refusing new data until it is taken",
                                  key="blocked", extra={"items": batch.items, "error": f"{type(e).__name__}: {e}"})
            self._blocked = e
            return False
        except Exception as e:
            # Permanent (or a bug downstream): retrying cannot help. Count the loss once, unless the
            # exporter helper already counted these items as send_failed.
            if not (isinstance(e, PermanentError) and e.counted):
                reason = "export_failed" if isinstance(e, PermanentError) else "internal_error"
                self._obs.dropped(batch.items, reason)
            self._log.error("downstream did not take a batch; it is dropped", key="export_failed",
                            extra={"items": batch.items, "error": f"{type(e).__name__}: {e}"})
        if self._blocked is not None:
            self.settings.logger.info("downstream takes data again; accepting new data")
        self._blocked = None
        self._retry_delay = RETRY_INITIAL
        return True


def _refusal(cause: RetryableError, message: str) -> RetryableError:
    """A fresh refusal of the same kind as downstream's, so receivers answer (and count) it alike."""
    text = f"{message}: {cause}"
    if isinstance(cause, QueueFullError):
        return QueueFullError(text, retry_after=cause.retry_after or 1.0)
    if isinstance(cause, DataRefusedError):
        return DataRefusedError(text, retry_after=cause.retry_after or 1.0)
    return RetryableError(text, retry_after=cause.retry_after or 1.0)


def create(settings: Settings, cfg: BatchConfig, next_consumer: Consumer) -> BatchProcessor:
    return BatchProcessor(settings, cfg, next_consumer)


FACTORY = ProcessorFactory(
    type="batch",
    config_type=BatchConfig,
    signals={s: Stability.STABLE for s in Signal},
    create=create,
    description="Groups payloads into larger requests by size or timeout; merges untouched requests as raw bytes.",
)
