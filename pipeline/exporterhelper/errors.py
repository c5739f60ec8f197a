"""The failures the exporter helper's own wrappers raise, each naming the `reason` it is counted under.

They are `RetryableError`s, so a caller that still holds the data (a receiver,
the batch processor) backs off and sends again, exactly as for a backend's
transient failure. The obs wrapper counts `send_failed{reason}` from them.
"""
from __future__ import annotations

from pipeline.errors import RetryableError


class SendError(RetryableError):
    """A transient failure decided by the helper rather than the backend."""

    reason = "retryable_error"


class ExportTimeoutError(SendError, TimeoutError):
    """One attempt outlived `timeout` (still a `TimeoutError` for code that asks)."""

    reason = "timeout"


class RetriesExhaustedError(SendError):
    """Retrying would outlast `retry_on_failure.max_elapsed_time`; the last failure is its `__cause__`."""

    reason = "retries_exhausted"

    def __init__(self, message: str, retry_after: float | None = None, *, attempts: int) -> None:
        super().__init__(message, retry_after)
        self.attempts = attempts


class ShutdownError(SendError):
    """The exporter shut down while the request waited to be retried; the last failure is its `__cause__`."""

    reason = "shutdown"


class HandedOverError(Exception):
    """A reload replaced the exporter while this request waited to be retried: its successor sends it.

    Not a failure: the obs wrapper does not count it, and the queue sender gives
    the payload to the successor (`ExporterHelper.hand_over`).
    """


def describe(e: BaseException) -> str:
    """`Type: message` for logs (the message alone is often empty, e.g. for a bare TimeoutError)."""
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
