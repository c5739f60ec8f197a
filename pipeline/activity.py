"""What each component is doing now: item totals and rates from the self-metrics, and its last errors.

The status page (`/` on the admin server), `/status` and `otelpipe top` show,
per component, the items per second over the last minute, the totals, the
refusals and drops by reason, the queue fill and the last warnings and
errors. The numbers come from the self-metrics (nothing is counted twice):
`ActivitySampler` reads the Service's registry every few seconds into a
bounded window, so a rate is "what moved in the last minute", not since start.
`RecentErrors` is a logging handler that keeps the last few warning and error
lines of each component (their loggers carry the component id).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.clock import SYSTEM_CLOCK, Clock
from pipeline.redact import redact_text
from pipeline.telemetry import Telemetry

# (kind, label that names the component, metric families that count what it did) — the families'
# samples, summed, are the component's items; the first family is the one its rate follows.
_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "receiver": ("receiver", ("accepted", "refused")),
    "processor": ("processor", ("incoming", "outgoing", "dropped")),
    "exporter": ("exporter", ("sent", "send_failed", "enqueue_failed")),
}
_ITEMS = ("spans", "metric_points", "log_records")
Key = tuple[str, str, str]  # (kind, component id, pipeline — "" when the component is not per pipeline)


def component_totals(snapshot: Mapping[str, list[dict[str, Any]]]) -> dict[Key, dict[str, Any]]:
    """Per component: each count (summed over signals) and the reasons of refusals, drops and failures."""
    out: dict[Key, dict[str, Any]] = {}
    for kind, (label, counts) in _FAMILIES.items():
        for count in counts:
            for item in _ITEMS:
                prefix = "send_failed" if count == "send_failed" else count
                for sample in snapshot.get(f"otelpipe_{kind}_{prefix}_{item}_total", []):
                    labels = sample["labels"]
                    key = (kind, str(labels.get(label, "")), str(labels.get("pipeline", "")))
                    entry = out.setdefault(key, {})
                    entry[count] = entry.get(count, 0) + float(sample["value"])
                    reason = labels.get("reason")
                    if reason:
                        reasons = entry.setdefault(f"{count}_reasons", {})
                        reasons[reason] = reasons.get(reason, 0) + float(sample["value"])
    for sample in snapshot.get("otelpipe_exporter_queue_size", []):
        entry = out.setdefault(("exporter", str(sample["labels"].get("exporter", "")), ""), {})
        entry["queue_size"] = entry.get("queue_size", 0) + float(sample["value"])
    for sample in snapshot.get("otelpipe_exporter_queue_capacity", []):
        entry = out.setdefault(("exporter", str(sample["labels"].get("exporter", "")), ""), {})
        entry["queue_capacity"] = entry.get("queue_capacity", 0) + float(sample["value"])
    return out


def _moved(kind: str, totals: Mapping[str, Any]) -> float:
    """The count a component's rate follows: what it took in (receivers, processors) or sent (exporters)."""
    first = _FAMILIES[kind][1][0]
    return float(totals.get(first, 0.0))


class ActivitySampler:
    """Samples the component totals every `interval` seconds, keeping `window` seconds of them."""

    def __init__(self, telemetry: Telemetry, *, interval: float = 5.0, window: float = 60.0,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._telemetry = telemetry
        self._interval = interval
        self._clock = clock
        self._samples: deque[tuple[float, dict[Key, dict[str, Any]]]] = deque(
            maxlen=max(2, int(window / interval) + 1))
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def sample(self) -> dict[Key, dict[str, Any]]:
        totals = component_totals(self._telemetry.snapshot())
        self._samples.append((self._clock(), totals))
        return totals

    def start(self) -> None:
        if self._task is None:
            self.sample()
            self._task = asyncio.create_task(self._run(), name="activity-sampler")

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def _run(self) -> None:
        while not await self._clock.wait(self._interval, self._stop):
            self.sample()

    def activity(self) -> dict[Key, dict[str, Any]]:
        """Totals now and items per second over the sampled window (up to the last minute)."""
        now = self._clock()
        current = component_totals(self._telemetry.snapshot())
        oldest = self._samples[0] if self._samples else (now, {})
        span = now - oldest[0]
        out: dict[Key, dict[str, Any]] = {}
        for key, totals in current.items():
            before = oldest[1].get(key, {})
            rate = (_moved(key[0], totals) - _moved(key[0], before)) / span if span > 0 else 0.0
            out[key] = {**totals, "rate": round(max(rate, 0.0), 3)}
        return out


class RecentErrors(logging.Handler):
    """Keeps the last `per_component` warning/error lines of each component (from its logger's fields)."""

    def __init__(self, per_component: int = 5, *, now: Callable[[], float] = time.time) -> None:
        super().__init__(level=logging.WARNING)
        self._per = per_component
        self._now = now
        self._lines: dict[str, deque[dict[str, Any]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        component = getattr(record, "component", None)
        kind = getattr(record, "kind", None)
        if not component:
            return
        key = f"{kind}/{component}" if kind else str(component)
        # Log lines are redacted when formatted; these bypass the formatters, so redact them here.
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                 "msg": redact_text(record.getMessage())}
        error = getattr(record, "error", None)
        if error:
            entry["error"] = redact_text(str(error)[:300])
        self._lines.setdefault(key, deque(maxlen=self._per)).append(entry)

    def last(self, kind: str, component: str) -> list[dict[str, Any]]:
        return list(self._lines.get(f"{kind}/{component}", ()))
