"""The retry wrapper alone, on a FakeClock: the waits it asks for, when it gives up, how shutdown ends it."""
from __future__ import annotations

import asyncio
import random

import pytest

from pipeline.config.types import Duration
from pipeline.errors import PartialSuccessError, PermanentError, RetryableError
from pipeline.exporterhelper.errors import RetriesExhaustedError, ShutdownError
from pipeline.exporterhelper.retry import Backoff, RetryConfig
from pipeline.exporterhelper.retry_sender import RetrySender
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.testing import FakeClock, nop_settings, payload


class Flaky:
    """A push that raises `errors` in turn, then succeeds; each attempt takes `took` seconds of `clock`."""

    def __init__(self, *errors: BaseException, clock: FakeClock | None = None, took: float = 0.0,
                 forever: BaseException | None = None) -> None:
        self.errors = list(errors)
        self.forever = forever
        self.clock, self.took = clock, took
        self.attempts = 0
        self.delivered: list[Payload] = []

    async def push(self, p: Payload) -> None:
        self.attempts += 1
        if self.clock is not None:
            self.clock.advance(self.took)
        if self.errors:
            raise self.errors.pop(0)
        if self.forever is not None:
            raise self.forever
        self.delivered.append(p)


def retry_sender(cfg: RetryConfig, clock: FakeClock, push: Flaky, rng: random.Random | None = None) -> RetrySender:
    return RetrySender(cfg, clock, RateLimitedLog(nop_settings().logger), push.push, rng=rng)


async def let_waits_pass(clock: FakeClock, count: int) -> None:
    """Let `count` waits end, one after the other, each after exactly the delay it asked for."""
    for _ in range(count):
        await clock.wait_for_waiters()
        clock.advance(clock.waits[-1])


def down(retry_after: float | None = None) -> RetryableError:
    return RetryableError("backend unavailable", retry_after)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    b = Backoff(RetryConfig(initial_interval=Duration(1), max_interval=Duration(4), randomization_factor=0.5))
    d = [b.next_delay() for _ in range(6)]
    assert 0.5 <= d[0] <= 1.5 and all(x <= 6 for x in d)
    assert b.next_delay(retry_after=30) == 30


async def test_three_failures_then_success_wait_as_the_backoff_says() -> None:
    cfg = RetryConfig(initial_interval=Duration(1), multiplier=2, randomization_factor=0.5, max_interval=Duration(3))
    clock, push = FakeClock(), Flaky(down(), down(), down())
    task = asyncio.ensure_future(retry_sender(cfg, clock, push, rng=random.Random(7)).send(payload(Signal.TRACES)))
    await let_waits_pass(clock, 3)
    async with asyncio.timeout(5):
        await task
    assert push.attempts == 4 and len(push.delivered) == 1
    # interval 1, x2, then capped at max_interval 3; each randomized by ±50% with the injected rng
    draws = random.Random(7)
    expected = [interval * (1 + draws.uniform(-0.5, 0.5)) for interval in (1, 2, 3)]
    assert clock.waits == pytest.approx(expected)
    assert all(0.5 * i <= w <= 1.5 * i for w, i in zip(clock.waits, (1, 2, 3), strict=True))


async def test_without_randomization_the_waits_are_exact_and_capped() -> None:
    cfg = RetryConfig(initial_interval=Duration(1), multiplier=2, randomization_factor=0, max_interval=Duration(3))
    clock, push = FakeClock(), Flaky(down(), down(), down(), down())
    task = asyncio.ensure_future(retry_sender(cfg, clock, push).send(payload(Signal.TRACES)))
    await let_waits_pass(clock, 4)
    async with asyncio.timeout(5):
        await task
    assert clock.waits == [1.0, 2.0, 3.0, 3.0]


async def test_retry_after_raises_the_wait_and_never_lowers_it() -> None:
    cfg = RetryConfig(initial_interval=Duration(1), multiplier=2, randomization_factor=0, max_interval=Duration(30))
    clock, push = FakeClock(), Flaky(down(retry_after=20), down(retry_after=0.1))
    task = asyncio.ensure_future(retry_sender(cfg, clock, push).send(payload(Signal.TRACES)))
    await let_waits_pass(clock, 2)
    async with asyncio.timeout(5):
        await task
    assert clock.waits == [20.0, 2.0]


async def test_max_elapsed_time_on_the_injected_clock_gives_up() -> None:
    cfg = RetryConfig(initial_interval=Duration(10), multiplier=1, randomization_factor=0,
                      max_interval=Duration(10), max_elapsed_time=Duration(30))
    clock = FakeClock()
    last = down(retry_after=2)
    push = Flaky(down(), down(), last, clock=clock, took=4)
    task = asyncio.ensure_future(retry_sender(cfg, clock, push).send(payload(Signal.TRACES)))
    await let_waits_pass(clock, 2)          # t=4 -> wait to 14; t=18 -> wait to 28; t=32: 32+10 > 30
    with pytest.raises(RetriesExhaustedError) as ei:
        async with asyncio.timeout(5):
            await task
    assert clock.waits == [10.0, 10.0] and push.attempts == 3
    err = ei.value
    assert isinstance(err, RetryableError) and err.reason == "retries_exhausted"
    assert err.attempts == 3 and err.__cause__ is last and err.retry_after == 2


async def test_shutdown_ends_a_retry_wait_at_once_and_stops_retrying() -> None:
    cfg = RetryConfig(initial_interval=Duration(60), max_interval=Duration(60), max_elapsed_time=Duration(0))
    clock, push = FakeClock(), Flaky(forever=down())
    sender = retry_sender(cfg, clock, push)
    task = asyncio.ensure_future(sender.send(payload(Signal.TRACES)))
    await let_waits_pass(clock, 3)          # max_elapsed_time 0: retries until shutdown
    await clock.wait_for_waiters()
    start = clock()
    await sender.shutdown()
    with pytest.raises(ShutdownError) as ei:
        async with asyncio.timeout(5):
            await task
    assert clock() == start and push.attempts == 4
    assert isinstance(ei.value, RetryableError) and ei.value.reason == "shutdown"
    # after shutdown a failure is tried once and not waited on
    with pytest.raises(ShutdownError):
        async with asyncio.timeout(5):
            await sender.send(payload(Signal.TRACES))
    assert push.attempts == 5 and clock.waiting == 0


@pytest.mark.parametrize("error", [PermanentError("bad request"), PartialSuccessError(2, "two bad spans")])
async def test_permanent_and_partial_outcomes_are_never_retried(error: Exception) -> None:
    clock, push = FakeClock(), Flaky(error)
    with pytest.raises(type(error)) as ei:
        await retry_sender(RetryConfig(), clock, push).send(payload(Signal.TRACES))
    assert ei.value is error and push.attempts == 1 and clock.waits == []


async def test_a_cancelled_retry_wait_is_not_swallowed() -> None:
    clock, push = FakeClock(), Flaky(forever=down())
    task = asyncio.ensure_future(retry_sender(RetryConfig(), clock, push).send(payload(Signal.TRACES)))
    await clock.wait_for_waiters()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.waiting == 0
