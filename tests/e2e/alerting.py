"""Helpers for end-to-end alerting tests: pace a data source by the exporter's evaluations, scale rule windows.

Alert rules work on windows of real time, so a test feeds data over time. It never sleeps to pace
itself: each round sends one batch and then waits (on a condition) for the exporter's next
evaluation, and the number of rounds is bounded.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.config.types import parse_duration
from pipeline.testing import wait_until

DURATION_KEYS = ("window", "for", "offset")


async def drive(exporter: Any, step: Callable[[int], Awaitable[None]], done: Callable[[], bool], *,
                max_rounds: int = 600, what: str = "the condition") -> int:
    """Run `step(round)` once per evaluation of `exporter` until `done()`; returns the rounds it took."""
    for i in range(max_rounds):
        if done():
            return i
        await step(i)
        n = exporter.evaluations
        await wait_until(lambda n=n: exporter.evaluations > n, timeout=10, what="an evaluation")
    raise AssertionError(f"{what} not reached after {max_rounds} evaluation rounds")


def _scaled(value: str, factor: float) -> str:
    return f"{float(parse_duration(value)) * factor * 1000:g}ms"


def scale_rules(rules: list[dict[str, Any]], factor: float) -> list[dict[str, Any]]:
    """The rules with every window, `for` and offset multiplied by `factor` (thresholds unchanged)."""
    out = []
    for rule in rules:
        r = dict(rule)
        for key in DURATION_KEYS:
            if key in r:
                r[key] = _scaled(r[key], factor)
        for block in ("ratio_to", "min_volume"):
            if isinstance(r.get(block), dict):
                r[block] = {k: _scaled(v, factor) if k in DURATION_KEYS else v for k, v in r[block].items()}
        out.append(r)
    return out
