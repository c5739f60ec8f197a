"""Error classes that decide what happens to data.

Exporters raise them from `push`, processors from `consume`; the retry sender and
the receivers map them onto retry decisions and gRPC/HTTP status codes in one
place each, the way the Collector's `consumererror` package does.
"""
from __future__ import annotations

from dataclasses import dataclass


class PermanentError(Exception):
    """Data that will never be accepted (bad encoding, 4xx other than 429). Never retried.

    `counted` is set by the stage that already counted the loss (the exporter
    helper counts `send_failed`), so a stage upstream that sees the error (the
    batch processor) does not count the same items as dropped a second time.
    `logged` is set by an exporter that has logged the failure itself, in words
    and at a rate of its own (a rejected API key, once a minute): the exporter
    helper then still counts the loss but adds no log line of its own.
    """

    counted = False
    logged = False


class TooLargeError(PermanentError):
    """The backend refused the request as too large (HTTP 413): resending it whole never works,
    but its halves may, so a caller that can split a request catches this one before PermanentError."""


class RetryableError(Exception):
    """A transient failure; `retry_after` (seconds) is the server's throttle hint, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFullError(RetryableError):
    """An exporter's sending queue is full: push back to the sender."""

    reason = "queue_full"


class DataRefusedError(RetryableError):
    """The memory limiter (or another guard) refuses new data until pressure drops."""

    reason = "memory_limit"


class PartialSuccessError(Exception):
    """A backend accepted the request but rejected `rejected` items. Never retried."""

    def __init__(self, rejected: int, message: str = "") -> None:
        super().__init__(message or f"backend rejected {rejected} items")
        self.rejected = rejected


class StartError(Exception):
    """A component or extension failed to start (port in use, unreadable file...): the Service exits."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One configuration problem: where (dotted key path), what, and whether it stops the run."""

    path: str
    message: str
    warning: bool = False
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        level = "warning" if self.warning else "error"
        key = f"{self.path}: " if self.path else ""
        return f"{where}{level}: {key}{self.message}"


class ConfigError(Exception):
    """Every problem found in a configuration, reported together."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))
