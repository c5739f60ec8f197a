"""The memory limiter: refuse data while the process uses too much memory.

Behaves like the Collector's memory_limiter. A background task samples the
process's resident memory every `check_interval` (one read of
/proc/self/statm, so checks are cheap) and compares it with two limits: the
hard limit (`limit_mib`, or `limit_percentage` of the machine's or cgroup's
memory) and the soft limit, which is the hard limit minus `spike_limit_mib`.
At or above the soft limit, `consume()` raises `DataRefusedError`, which
receivers answer with RESOURCE_EXHAUSTED / HTTP 429 and a retry delay, so
senders back off and retry instead of the process being OOM-killed. The
refusal is counted once, by the receiver, as refused with reason
`memory_limit`; the processor drops nothing. At the hard limit (and, rate
limited, when refusal starts) it also runs `gc.collect()` to free
unreachable cycles. Refusal stops as soon as a check finds memory below the
soft limit again. The check never runs per payload: `consume()` reads one
boolean.

RSS alone overstates what the process holds: after a burst, the freed request
buffers stay resident inside malloc's heaps (measured: 405 MiB resident, 220
MiB after a trim), and a limiter that only reads RSS would refuse every
request long after the burst has ended. So whenever a check finds memory at
or above the soft limit, the limiter first gives free heap memory back to the
OS (glibc `malloc_trim(0)`, `pipeline.memtune.release_free_memory`) and
decides on the RSS read after that: what the process actually holds.

Put it first in every pipeline, as in the Collector.
"""
from __future__ import annotations

import asyncio
import gc
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.component import (
    Consumer,
    Host,
    ProcessorFactory,
    Settings,
    Stability,
    acknowledges,
)
from pipeline.config.types import Duration, Issue
from pipeline.errors import DataRefusedError
from pipeline.logutil import RateLimitedLog
from pipeline.memtune import release_free_memory
from pipeline.model import Payload, Signal

MIB = 1024 * 1024
DEFAULT_SPIKE_PERCENT = 20  # of the hard limit, when no spike limit is set (the Collector's default)
_CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryLimiterConfig:
    """The Collector's memory_limiter settings.

    `limit_mib` wins over `limit_percentage` when both are set (as in the
    Collector); a spike limit of 0 means 20% of the hard limit.
    """

    check_interval: Duration = Duration(1.0)
    limit_mib: int = 0
    spike_limit_mib: int = 0
    limit_percentage: int = 0
    spike_limit_percentage: int = 0
    min_gc_interval_when_soft_limited: Duration = Duration(10.0)
    min_gc_interval_when_hard_limited: Duration = Duration(0.0)

    def validate(self) -> list[Issue]:
        issues: list[Issue] = []
        if self.check_interval <= 0:
            issues.append(Issue("check_interval", "must be greater than 0, e.g. '1s'"))
        for key in ("limit_mib", "spike_limit_mib"):
            if getattr(self, key) < 0:
                issues.append(Issue(key, f"must not be negative, got {getattr(self, key)}"))
        for key in ("limit_percentage", "spike_limit_percentage"):
            if not 0 <= getattr(self, key) <= 100:
                issues.append(Issue(key, f"must be between 0 and 100, got {getattr(self, key)}"))
        if self.limit_mib <= 0 and self.limit_percentage <= 0:
            issues.append(Issue("limit_mib", "is required: set limit_mib (MiB) or limit_percentage (of total memory) "
                                        "to a value greater than 0"))
        elif self.limit_mib > 0 and self.spike_limit_mib >= self.limit_mib:
            issues.append(Issue("spike_limit_mib", f"must be less than limit_mib ({self.limit_mib}), got "
                                              f"{self.spike_limit_mib}; it is the headroom kept below the hard limit"))
        elif self.limit_mib <= 0 and self.spike_limit_percentage >= self.limit_percentage > 0:
            issues.append(Issue("spike_limit_percentage",
                                f"must be less than limit_percentage ({self.limit_percentage}), "
                                f"got {self.spike_limit_percentage}"))
        return issues


@dataclass(frozen=True, slots=True)
class Limits:
    """Resolved limits in bytes."""

    hard: int
    spike: int

    @property
    def soft(self) -> int:
        return self.hard - self.spike


def resolve_limits(cfg: MemoryLimiterConfig, total_memory: Callable[[], int]) -> Limits:
    """Turn the config into byte limits; percentages are of `total_memory()` (read only when used)."""
    if cfg.limit_mib > 0:
        hard, spike = cfg.limit_mib * MIB, cfg.spike_limit_mib * MIB
    elif cfg.limit_percentage > 0:
        total = total_memory()
        hard, spike = total * cfg.limit_percentage // 100, total * cfg.spike_limit_percentage // 100
    else:
        raise ValueError("memory_limiter needs limit_mib or limit_percentage")
    if spike == 0:
        spike = hard * DEFAULT_SPIKE_PERCENT // 100
    if spike >= hard:
        raise ValueError(f"spike limit ({spike} bytes) must be less than the limit ({hard} bytes)")
    return Limits(hard, spike)


def read_rss() -> int:
    """Resident memory of this process, in bytes (Linux: /proc/self/statm; elsewhere the peak RSS)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def read_total_memory() -> int:
    """Memory available to this process: the cgroup limit when one is set, else the machine's total."""
    total = _meminfo_total()
    for path in _CGROUP_LIMIT_FILES:
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < (total or math.inf):
            total = int(text)
    if not total:
        raise ValueError("cannot read total memory (/proc/meminfo); set limit_mib instead of limit_percentage")
    return total


def _meminfo_total() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class MemoryLimiterProcessor:
    """Passes payloads on while memory is below the soft limit; refuses them otherwise.

    `read_rss`, `total_memory`, `collect` and `release` are injectable for tests;
    `check()` runs one sample synchronously (the background task calls it).
    """

    mutates_data = False

    def __init__(
        self,
        settings: Settings,
        cfg: MemoryLimiterConfig,
        next_consumer: Consumer,
        *,
        read_rss: Callable[[], int] = read_rss,
        total_memory: Callable[[], int] = read_total_memory,
        collect: Callable[[], object] = gc.collect,
        release: Callable[[], object] = release_free_memory,
    ) -> None:
        self.settings = settings
        self.cfg = cfg
        self._next = next_consumer
        self._read_rss = read_rss
        self._collect = collect
        self._release = release
        self._clock = settings.clock
        self.limits = resolve_limits(cfg, total_memory)
        self._interval = float(cfg.check_interval)
        self._log = RateLimitedLog(settings.logger)
        self._gauge = settings.telemetry.gauge("memory_limiter_refusing").labels(str(settings.id))
        self.refusing = False
        self.last_rss = 0
        self._last_gc = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._shut = False

    @property
    def acknowledges(self) -> bool:
        """Hands data straight on: answers when downstream does (end-to-end acknowledgement)."""
        return acknowledges(self._next)

    async def start(self, host: Host) -> None:
        if self._task is not None or self._shut:
            return
        self.check()  # refuse from the first payload on if memory is already high
        self._task = asyncio.create_task(self._run(), name=f"{self.settings.id}-{self.settings.pipeline}-memcheck")
        self.settings.logger.info("memory limiter started", extra={
            "limit_mib": round(self.limits.hard / MIB, 1), "soft_limit_mib": round(self.limits.soft / MIB, 1),
            "check_interval_s": self._interval})

    async def shutdown(self) -> None:
        if self._shut:
            return
        self._shut = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._gauge.set(0)  # no stale "refusing" series once this instance is gone

    async def consume(self, payload: Payload) -> None:
        if self.refusing:
            raise DataRefusedError("data refused due to high memory usage", retry_after=self._interval)
        await self._next.consume(payload)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.check()
            except Exception as e:  # a failing reader must not stop the checks; keep the last state
                self._log.error("memory check failed", key="check_failed", extra={"error": f"{type(e).__name__}: {e}"})

    def check(self) -> bool:
        """Sample memory once, update the refusing state (logging a change once), and return it."""
        limits = self.limits
        rss = self._read_rss()
        if rss >= limits.hard and self._gc_due(self.cfg.min_gc_interval_when_hard_limited):
            rss = self._gc_and_read()
        was = self.refusing
        refuse = rss >= limits.soft
        if refuse and not was and self._gc_due(self.cfg.min_gc_interval_when_soft_limited):
            # Collecting may be enough to get back under the soft limit without refusing anything.
            rss = self._gc_and_read()
            refuse = rss >= limits.soft
        if refuse:
            # Freed memory still resident in malloc's heaps is not memory the process holds.
            self._release()
            rss = self._read_rss()
            refuse = rss >= limits.soft
        self.last_rss = rss
        if refuse != was:
            fields = {"rss_mib": round(rss / MIB, 1), "soft_limit_mib": round(limits.soft / MIB, 1),
                      "limit_mib": round(limits.hard / MIB, 1)}
            if refuse:
                self.settings.logger.warning("memory usage is above the soft limit; refusing data", extra=fields)
            else:
                self.settings.logger.info("memory usage is back within limits; accepting data", extra=fields)
        self.refusing = refuse
        self._gauge.set(1 if refuse else 0)
        return refuse

    def _gc_due(self, min_interval: float) -> bool:
        return self._clock() - self._last_gc >= min_interval

    def _gc_and_read(self) -> int:
        self._collect()
        self._last_gc = self._clock()
        return self._read_rss()


def create(settings: Settings, cfg: MemoryLimiterConfig, next_consumer: Consumer) -> MemoryLimiterProcessor:
    return MemoryLimiterProcessor(settings, cfg, next_consumer)


FACTORY = ProcessorFactory(
    type="memory_limiter",
    config_type=MemoryLimiterConfig,
    signals={s: Stability.BETA for s in Signal},
    create=create,
    description="Refuses data (retryable) while process memory is above a soft limit, so senders back off.",
)
