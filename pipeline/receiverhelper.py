"""Shared receiver logic: hand a payload to the pipelines and classify the outcome.

Every receiver (OTLP gRPC, OTLP HTTP, StatsD) calls `deliver`; it counts the
items as accepted or refused (with a reason) and tells the transport what to
answer, so the mapping from pipeline errors to gRPC/HTTP status codes is
written once (the Collector's statusconversion).

When the pipelines acknowledge end to end (a persistent sending queue, see
`pipeline.component.acknowledges`), `consume()` returns only once the data is
on disk, which can take a batch's timeout; `deliver(..., wait=seconds)` then
bounds the wait by the client's deadline, and past it answers a retryable
error (counted `refused{reason="timeout"}`; the data may still be written, so
the client's retry can make a duplicate, never a loss).
"""
from __future__ import annotations

import asyncio
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
# How long a request waits for its data to be durable when the client sent no deadline (OTLP/HTTP
# never does): a little under the OTLP exporters' default timeout of 10 s, so the answer arrives.
DEFAULT_ACK_WAIT = 9.0
# How much sooner than the client's own deadline the answer is sent, so that it arrives in time.
DEADLINE_MARGIN = 0.1


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


def ack_wait(time_remaining: float | None) -> float:
    """How long to wait for durability given the client's time left (None: it set no deadline)."""
    if time_remaining is None:
        return DEFAULT_ACK_WAIT
    return max(time_remaining - DEADLINE_MARGIN, time_remaining / 2, 0.0)


async def deliver(consumer: Consumer, payload: Payload, obs: ReceiverObs, wait: float | None = None) -> Result:
    """Push into the pipelines; count and classify what happened. Never raises for pipeline errors.

    `wait` bounds how long the pipelines may take (the client's deadline; see the module docstring)."""
    n = payload.items
    signal = payload.signal
    # Keep only the wire bytes while the data waits in pipelines; stages that need the
    # message re-decode it lazily (cheap in upb), and memory per request drops several-fold.
    payload.compact()
    deadline = asyncio.timeout(wait) if wait is not None else None
    try:
        if deadline is None:
            await consumer.consume(payload)
        else:
            async with deadline:
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
    except TimeoutError as e:
        if deadline is None or not deadline.expired():
            obs.refused(signal, n, "internal_error")
            return Result(Outcome.UNAVAILABLE, f"internal error: {type(e).__name__}: {e}")
        obs.refused(signal, n, "timeout")
        return Result(Outcome.UNAVAILABLE, f"the data was not written to disk within {wait:.3g}s; send it again")
    except Exception as e:  # a bug downstream must not kill the receiver; the sender may retry
        obs.refused(signal, n, "internal_error")
        return Result(Outcome.UNAVAILABLE, f"internal error: {type(e).__name__}: {e}")
    obs.accepted(signal, n)
    return OK
