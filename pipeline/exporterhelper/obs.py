"""The observability wrappers: what happened to each request, and how long each push took.

`ObsSender` sits above the retry wrapper (the Collector's `obs_report_sender.go`),
so a request is counted once whatever the number of attempts:
`otelpipe_exporter_sent_*`, or `otelpipe_exporter_send_failed_*{reason}` with
the reason its final error names (`permanent_error`, `partial_success`,
`timeout`, `retryable_error`, `retries_exhausted`, `shutdown`), plus the
matching rate-limited log line. It hands every error on in a form the caller
understands: a `PermanentError` marked `counted` (so the batch processor does
not count the loss again) or a `RetryableError`; a partial success is final and
raises nothing.

`PushTimer` sits below the retry wrapper and records every attempt in
`otelpipe_exporter_send_duration_seconds{outcome}`, timed on the injected clock.
The names live in `pipeline/telemetry.py`; the queue counts `enqueue_failed`.
"""
from __future__ import annotations

from pipeline.clock import Clock
from pipeline.errors import PartialSuccessError, PermanentError, RetryableError
from pipeline.exporterhelper.errors import HandedOverError, RetriesExhaustedError, SendError, ShutdownError, describe
from pipeline.exporterhelper.sender import Send
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload
from pipeline.telemetry import ExporterObs


def failure_reason(e: Exception) -> str:
    """The `reason` label of a transient failure that reached the top of the chain."""
    if isinstance(e, SendError):
        return e.reason
    return "timeout" if isinstance(e, TimeoutError) else "retryable_error"


class ObsSender:
    """Counts each request once as sent or failed (with a reason) and logs failures, rate-limited.

    With `keeps_unsent` (a persistent queue above), a request whose retrying
    ended because the exporter shut down is not a failure: it stays on disk
    and is sent after the next start, so it is counted then.
    """

    __slots__ = ("_keeps_unsent", "_log", "_next", "_obs")

    def __init__(self, obs: ExporterObs, log: RateLimitedLog, next_send: Send, *, keeps_unsent: bool = False) -> None:
        self._obs = obs
        self._log = log
        self._next = next_send
        self._keeps_unsent = keeps_unsent

    async def send(self, payload: Payload) -> None:
        n = payload.items
        try:
            await self._next(payload)
        except PartialSuccessError as e:
            rejected = min(max(e.rejected, 0), n)
            self._obs.sent(n - rejected)
            if rejected:
                self._obs.failed(rejected, "partial_success")
            self._log.warning("backend accepted the request partially; rejected items are not retried",
                              key="partial", extra={"rejected": rejected, "error_message": str(e)})
            return
        except PermanentError as e:
            self._obs.failed(n, "permanent_error")
            if not e.logged:
                self._log.error("export failed permanently; dropping data", key="permanent",
                                extra={"items": n, "error": str(e)})
            e.counted = True
            raise
        except HandedOverError:
            raise  # not an outcome: the successor exporter sends it and counts it
        except Exception as e:  # transient, and no retry is coming: count it and tell the caller
            if self._keeps_unsent and isinstance(e, ShutdownError):
                raise
            reason = failure_reason(e)
            self._obs.failed(n, reason)
            self._log_dropped(e, reason, n)
            if isinstance(e, SendError):
                raise
            raise RetryableError(str(e), e.retry_after if isinstance(e, RetryableError) else None) from e
        self._obs.sent(n)

    def _log_dropped(self, e: Exception, reason: str, n: int) -> None:
        if isinstance(e, RetriesExhaustedError):
            self._log.error("export failed after retrying for max_elapsed_time; dropping data", key="exhausted",
                            extra={"items": n, "attempts": e.attempts, "error": describe(e.__cause__ or e)})
        elif reason == "shutdown":
            self._log.error("exporter shut down while the export waited to be retried; dropping data",
                            key="shutdown", extra={"items": n, "error": describe(e.__cause__ or e)})
        else:
            self._log.error("export failed and retry_on_failure is disabled; dropping data",
                            key="noretry", extra={"items": n, "error": describe(e)})


class PushTimer:
    """Records the duration of every push attempt, by outcome."""

    __slots__ = ("_clock", "_next", "_obs")

    def __init__(self, obs: ExporterObs, clock: Clock, next_send: Send) -> None:
        self._obs = obs
        self._clock = clock
        self._next = next_send

    async def send(self, payload: Payload) -> None:
        clock = self._clock
        began = clock()
        try:
            await self._next(payload)
        except PartialSuccessError:
            self._obs.observe_push(clock() - began, "partial_success")
            raise
        except PermanentError:
            self._obs.observe_push(clock() - began, "permanent_error")
            raise
        except Exception:  # any other failure: the retry wrapper above decides what follows
            self._obs.observe_push(clock() - began, "retryable_error")
            raise
        self._obs.observe_push(clock() - began, "success")
