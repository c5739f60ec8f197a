from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from pipeline.component import make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError, DataRefusedError
from pipeline.model import Signal
from pipeline.receiverhelper import Outcome, deliver
from pipeline.testing import Sink, nop_host, nop_settings, payload
from processors.memory_limiter import (
    FACTORY,
    MIB,
    MemoryLimiterConfig,
    MemoryLimiterProcessor,
    read_rss,
    read_total_memory,
    resolve_limits,
)

GAUGE = "otelpipe_memory_limiter_refusing"


def issues_of(raw: dict[str, object]) -> list[str]:
    issues: list = []
    decode_dataclass(MemoryLimiterConfig, raw, "processors.memory_limiter", issues)
    return [str(i) for i in issues]


class FakeMemory:
    """An injectable RSS reader (bytes) that tells a waiting test when it was read."""

    def __init__(self, mib: float) -> None:
        self.rss = int(mib * MIB)
        self.reads = 0
        self.read = asyncio.Event()
        self.gc_calls = 0
        self.after_gc: int | None = None

    def __call__(self) -> int:
        self.reads += 1
        self.read.set()
        return self.rss

    def collect(self) -> int:
        self.gc_calls += 1
        if self.after_gc is not None:
            self.rss = self.after_gc
        return 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(mem: FakeMemory, sink: Sink | None = None, clock: FakeClock | None = None,
         **cfg: object) -> tuple[MemoryLimiterProcessor, Sink]:
    cfg.setdefault("limit_mib", 100)
    cfg.setdefault("spike_limit_mib", 20)  # soft limit 80 MiB
    settings = nop_settings("memory_limiter", signal=Signal.TRACES)
    if clock is not None:
        settings = dataclasses.replace(settings, clock=clock)
    sink = sink or Sink(Signal.TRACES)
    proc = MemoryLimiterProcessor(settings, MemoryLimiterConfig(**cfg), sink,  # type: ignore[arg-type]
                                  read_rss=mem, collect=mem.collect)
    return proc, sink


def gauge(proc: MemoryLimiterProcessor) -> float:
    return proc.settings.telemetry.value(GAUGE, processor="memory_limiter")


# -- config ------------------------------------------------------------------

def test_valid_config_and_defaults() -> None:
    assert issues_of({"limit_mib": 512, "spike_limit_mib": 128, "check_interval": "1s"}) == []
    cfg = MemoryLimiterConfig(limit_mib=512)
    assert cfg.check_interval == 1.0
    limits = resolve_limits(cfg, lambda: 0)
    assert limits.hard == 512 * MIB and limits.spike == 512 * MIB * 20 // 100  # spike defaults to 20%
    assert FACTORY.type == "memory_limiter" and set(FACTORY.signals) == set(Signal)


def test_default_config_needs_a_limit() -> None:
    assert issues_of({}) == [
        "error: processors.memory_limiter.limit_mib: is required: set limit_mib (MiB) or limit_percentage "
        "(of total memory) to a value greater than 0"]


def test_spike_at_or_above_limit_is_rejected() -> None:
    found = issues_of({"limit_mib": 100, "spike_limit_mib": 100})
    assert len(found) == 1 and found[0].startswith("error: processors.memory_limiter.spike_limit_mib: "
                                                   "must be less than limit_mib (100)"), found
    found = issues_of({"limit_percentage": 50, "spike_limit_percentage": 60})
    assert len(found) == 1 and "processors.memory_limiter.spike_limit_percentage" in found[0]


@pytest.mark.parametrize("raw, key", [
    ({"limit_mib": 100, "check_interval": "0s"}, "check_interval"),
    ({"limit_percentage": 120}, "limit_percentage"),
    ({"limit_mib": -1}, "limit_mib"),
])
def test_bad_values_are_rejected(raw: dict[str, object], key: str) -> None:
    found = issues_of(raw)
    assert any(i.startswith(f"error: processors.memory_limiter.{key}: ") for i in found), found


def test_typo_key_is_rejected_with_suggestion() -> None:
    with pytest.raises(ConfigError) as ei:
        load_text("processors:\n  memory_limiter: {limit_mb: 100}\n", make_factory_map([FACTORY]))
    assert ("processors.memory_limiter.limit_mb: unknown key 'limit_mb'; did you mean 'limit_mib'?"
            in str(ei.value))


def test_percentage_limits_use_total_memory() -> None:
    total = 1000 * MIB
    limits = resolve_limits(MemoryLimiterConfig(limit_percentage=80, spike_limit_percentage=25), lambda: total)
    assert (limits.hard, limits.spike, limits.soft) == (800 * MIB, 250 * MIB, 550 * MIB)
    limits = resolve_limits(MemoryLimiterConfig(limit_percentage=50), lambda: total)
    assert limits.spike == limits.hard // 5
    # limit_mib wins when both are set, as in the Collector
    assert resolve_limits(MemoryLimiterConfig(limit_mib=10, limit_percentage=50), lambda: total).hard == 10 * MIB


def test_real_readers_return_plausible_values() -> None:
    rss, total = read_rss(), read_total_memory()
    assert 1 * MIB < rss < total


# -- behaviour ---------------------------------------------------------------

async def test_below_soft_limit_passes_data() -> None:
    mem = FakeMemory(50)
    proc, sink = make(mem)
    await proc.start(nop_host())
    assert mem.reads == 1 and not proc.refusing and gauge(proc) == 0
    await proc.consume(payload(Signal.TRACES, n=4))
    assert sink.items == 4
    await proc.shutdown()


async def test_above_soft_limit_refuses_then_recovers() -> None:
    mem = FakeMemory(50)
    proc, sink = make(mem, check_interval=5.0)
    mem.rss = 85 * MIB                               # above soft (80), below hard (100)
    assert proc.check() is True
    assert proc.refusing and gauge(proc) == 1
    with pytest.raises(DataRefusedError) as ei:
        await proc.consume(payload(Signal.TRACES, n=3))
    assert ei.value.retry_after == 5.0
    assert sink.items == 0
    tel = proc.settings.telemetry
    assert tel.value("otelpipe_processor_dropped_spans_total") == 0   # the receiver counts the refusal
    mem.rss = 79 * MIB
    assert proc.check() is False
    assert not proc.refusing and gauge(proc) == 0
    await proc.consume(payload(Signal.TRACES, n=3))
    assert sink.items == 3


async def test_state_changes_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    mem = FakeMemory(90)
    proc, _ = make(mem)
    with caplog.at_level(logging.INFO, logger="otelpipe"):
        proc.check()
        proc.check()
        mem.rss = 10 * MIB
        proc.check()
        proc.check()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("otelpipe")]
    assert lines == [(logging.WARNING, "memory usage is above the soft limit; refusing data"),
                     (logging.INFO, "memory usage is back within limits; accepting data")]


async def test_hard_limit_forces_gc_which_may_avoid_refusal() -> None:
    mem = FakeMemory(120)
    mem.after_gc = 60 * MIB
    proc, _ = make(mem)
    assert proc.check() is False
    assert mem.gc_calls == 1 and proc.last_rss == 60 * MIB


async def test_soft_limit_gc_is_rate_limited() -> None:
    clock = FakeClock()
    mem = FakeMemory(85)
    proc, _ = make(mem, clock=clock, min_gc_interval_when_soft_limited=10.0)
    assert proc.check() is True and mem.gc_calls == 1      # entering refusal: one GC first
    mem.rss = 10 * MIB
    proc.check()
    mem.rss = 85 * MIB
    clock.now += 5
    assert proc.check() is True and mem.gc_calls == 1      # within 10s of the last GC: no GC
    mem.rss = 10 * MIB
    proc.check()
    mem.rss = 85 * MIB
    clock.now += 6
    assert proc.check() is True and mem.gc_calls == 2


async def test_background_checks_follow_memory() -> None:
    mem = FakeMemory(95)
    proc, sink = make(mem, check_interval=0.005)
    await proc.start(nop_host())
    assert proc.refusing                                 # the first check runs in start()
    mem.rss = 10 * MIB
    mem.read.clear()
    async with asyncio.timeout(5):
        await mem.read.wait()                            # the next periodic check has run
    assert not proc.refusing
    await proc.consume(payload(Signal.TRACES, n=2))
    assert sink.items == 2
    await proc.shutdown()
    reads = mem.reads
    for _ in range(5):
        await asyncio.sleep(0)
    assert mem.reads == reads                            # no checks after shutdown


async def test_refusal_reaches_the_receiver_as_throttled() -> None:
    mem = FakeMemory(90)
    proc, _ = make(mem)
    proc.check()
    obs = proc.settings.telemetry.receiver("otlp", "grpc")
    result = await deliver(proc, payload(Signal.TRACES, n=6), obs)
    assert result.outcome is Outcome.THROTTLED and result.http_status == 429
    assert proc.settings.telemetry.value("otelpipe_receiver_refused_spans_total", reason="memory_limit") == 6


async def test_shutdown_without_start_twice_and_gauge_reset() -> None:
    mem = FakeMemory(90)
    proc, _ = make(mem)
    await proc.shutdown()
    proc2, _ = make(mem)
    await proc2.start(nop_host())
    assert gauge(proc2) == 1
    await proc2.shutdown()
    await proc2.shutdown()
    assert gauge(proc2) == 0


async def test_factory_creates_a_processor() -> None:
    cfg = MemoryLimiterConfig(limit_mib=1 << 20)  # 1 TiB: this test process is far below it
    sink = Sink(Signal.LOGS)
    proc = FACTORY.create(nop_settings("memory_limiter", signal=Signal.LOGS), cfg, sink)
    await proc.start(nop_host())
    await proc.consume(payload(Signal.LOGS, n=2))
    await proc.shutdown()
    assert sink.items == 2 and proc.mutates_data is False


async def test_limiter_recovers_after_a_burst_whose_memory_was_freed() -> None:
    """Real memory: a burst leaves freed buffers resident in malloc's heaps (a live allocation above
    them keeps the heap from shrinking). Once the burst's data is gone the limiter must accept
    again, deciding on what the process holds rather than on the stale RSS."""
    base = read_rss()
    settings = nop_settings("memory_limiter", signal=Signal.TRACES)
    cfg = MemoryLimiterConfig(limit_mib=base // MIB + 160, spike_limit_mib=40)   # soft: base + 120 MiB
    sink = Sink(Signal.TRACES)
    proc = MemoryLimiterProcessor(settings, cfg, sink)  # type: ignore[arg-type]
    burst: list[bytearray] = []
    keep: list[bytearray] = []
    for _ in range(3200):                            # ~200 MiB of 64 KiB request-sized buffers
        burst.append(bytearray(64 * 1024))
        keep.append(bytearray(600))                  # small live allocations interleaved, as in a real heap
    assert proc.check() is True                      # during the burst: refuse
    del burst                                        # the burst is over and its data freed
    assert proc.check() is False, f"still refusing at {proc.last_rss // MIB} MiB (soft {proc.limits.soft // MIB})"
    await proc.consume(payload(Signal.TRACES, n=3))
    assert sink.items == 3
    del keep
