"""`retry_on_failure`: its config and the backoff schedule (`retry_sender` does the retrying).

Follows the Collector's defaults (5s initial, 30s max interval, 300s max
elapsed, multiplier 1.5, ±50% randomization). A server's throttle hint
(HTTP Retry-After, gRPC RetryInfo) raises the next wait.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.config.types import Duration, Issue

# The Collector's defaults (configretry.NewDefaultBackOffConfig).
DEFAULT_INITIAL_INTERVAL = Duration(5.0)
DEFAULT_MAX_INTERVAL = Duration(30.0)
DEFAULT_MAX_ELAPSED_TIME = Duration(300.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    enabled: bool = True
    initial_interval: Duration = DEFAULT_INITIAL_INTERVAL
    randomization_factor: float = 0.5
    multiplier: float = 1.5
    max_interval: Duration = DEFAULT_MAX_INTERVAL
    max_elapsed_time: Duration = DEFAULT_MAX_ELAPSED_TIME

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.initial_interval <= 0:
            out.append(Issue("initial_interval", "must be greater than 0"))
        if self.max_interval < self.initial_interval:
            out.append(Issue("max_interval", "must be at least initial_interval"))
        if not 0 <= self.randomization_factor < 1:
            out.append(Issue("randomization_factor", "must be in [0, 1)"))
        if self.multiplier < 1:
            out.append(Issue("multiplier", "must be at least 1"))
        if self.max_elapsed_time < 0:
            out.append(Issue("max_elapsed_time", "must be 0 (retry until shutdown) or more"))
        return out


class Backoff:
    """The wait before each retry of one request."""

    def __init__(self, cfg: RetryConfig, rng: random.Random | None = None) -> None:
        self._cfg = cfg
        self._interval = float(cfg.initial_interval)
        self._rng = rng or random.Random()

    def next_delay(self, retry_after: float | None = None) -> float:
        f = self._cfg.randomization_factor
        delay = self._interval * (1 + self._rng.uniform(-f, f))
        self._interval = min(self._interval * self._cfg.multiplier, float(self._cfg.max_interval))
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return delay
