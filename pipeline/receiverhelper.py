"""Shared receiver logic: hand a payload to the pipelines and classify the outcome.

Every receiver (OTLP gRPC, OTLP HTTP, StatsD) calls `deliver`; it counts the
items as accepted or refused (with a reason) and tells the transport what to
answer, so the mapping from pipeline errors to gRPC/HTTP status codes is
written once (the Collector's statusconversion).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from pipeline.component import Consumer
from pipeline.errors import (
    DataRefusedError,
    PermanentError,
    QueueFullError,
    RetryableError,
)
from pipeline.model import Payload
from pipeline.telemetry import ReceiverObs

DEFAULT_RETRY_AFTER = 1.0


class Outcome(enum.Enum):
    OK = "ok"
    THROTTLED = "throttled"      # gRPC RESOURCE_EXHAUSTED + RetryInfo / HTTP 429 + Retry-After
    UNAVAILABLE = "unavailable"  # gRPC UNAVAILABLE / HTTP 503 + Retry-After
    PERMANENT = "permanent"      # gRPC INVALID_ARGUMENT / HTTP 400


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    message: str = ""
    retry_after: float = DEFAULT_RETRY_AFTER

    @property
    def http_status(self) -> int:
        return {Outcome.OK: 200, Outcome.THROTTLED: 429, Outcome.UNAVAILABLE: 503, Outcome.PERMANENT: 400}[self.outcome]


OK = Result(Outcome.OK)


async def deliver(consumer: Consumer, payload: Payload, obs: ReceiverObs) -> Result:
    """Push into the pipelines; count and classify what happened. Never raises for pipeline errors."""
    n = payload.items
    signal = payload.signal
    # Keep only the wire bytes while the data waits in pipelines; stages that need the
    # message re-decode it lazily (cheap in upb), and memory per request drops several-fold.
    payload.compact()
    try:
        await consumer.consume(payload)
    except (DataRefusedError, QueueFullError) as e:
        obs.refused(signal, n, e.reason)
        return Result(Outcome.THROTTLED, str(e), e.retry_after or DEFAULT_RETRY_AFTER)
    except RetryableError as e:
        obs.refused(signal, n, "unavailable")
        return Result(Outcome.UNAVAILABLE, str(e), e.retry_after or DEFAULT_RETRY_AFTER)
    except PermanentError as e:
        obs.refused(signal, n, "permanent_error")
        return Result(Outcome.PERMANENT, str(e))
    except Exception as e:  # a bug downstream must not kill the receiver; the sender may retry
        obs.refused(signal, n, "internal_error")
        return Result(Outcome.UNAVAILABLE, f"internal error: {type(e).__name__}: {e}")
    obs.accepted(signal, n)
    return OK
