"""The exporter object the graph runs: pushes feed the history, a timer evaluates the rules.

`push` only records the referenced metrics' points (see store.py); every `evaluation_interval`
the rules are evaluated (evaluator.py), each rule's alerts step through pending → firing →
resolved (alerts.py), and the events that result are handed to a second exporter helper, which
queues, retries and posts them (events.py).

It offers its active alerts to `/status` (`HasStatus`) and carries its history and alert state
over a config reload (`CarriesState`). An exporter whose settings did not change is kept running by
the reload, so nothing happens to it. One whose settings changed is replaced: the new instance takes
the old one's history and alerts before it starts, while the old one still runs. From that moment
the old one is "handed over": it evaluates nothing and sends no event (its queued events still
drain as it stops, in the background), and it leaves the shared telemetry to its successor. If the
new instance stops without having been handed over in turn while its predecessor still runs (a
reload that failed to start and was rolled back), the predecessor takes its state back. In the new
instance a rule that is unchanged keeps its pending and firing alerts; a rule that changed keeps the
incidents it opened (same name and group_by: same dedup_keys), which it resolves when they stop
holding; a rule that is gone (or regroups) resolves its open incidents when the new instance starts.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from google.protobuf.message import DecodeError

from exporters.pagerduty import templates
from exporters.pagerduty.alerts import Alert, RuleState, State
from exporters.pagerduty.config import PagerDutyExporterConfig, RuleConfig
from exporters.pagerduty.evaluator import CompiledRule, Evaluator, Group, Selector, compile_rule, retention
from exporters.pagerduty.events import EventSender, build_event, dedup_key, iso_time, to_payload
from exporters.pagerduty.store import SeriesStore
from pipeline.component import Host, Settings
from pipeline.errors import RetryableError
from pipeline.exporterhelper import ExporterHelper
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal

FIRING_METRIC = "alerts_firing"
SERIES_METRIC = "exporter_pagerduty_series"
SKIPPED_METRIC = "exporter_pagerduty_skipped_points"
SUPPRESSED_METRIC = "exporter_pagerduty_alerts_suppressed"
MAX_STATUS_ALERTS = 1000


def format_duration(seconds: float) -> str:
    """`300` → `5m`, `5400` → `1h30m`, `0.25` → `250ms` (how the config writes durations)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            n = int(rest // size)
            out.append(f"{n}{unit}")
            rest -= n * size
    if rest or not out:
        out.append(f"{rest:g}s")
    return "".join(out)


def _json_number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


@dataclass
class CarriedState:
    """What a running exporter hands to its successor on a config reload (`owner` is that exporter)."""

    owner: PagerDutyExporter
    store: SeriesStore
    watch_start: float
    rules: dict[str, tuple[CompiledRule, RuleState]]


class _Rendered:
    """A rule's parsed templates and fixed texts."""

    def __init__(self, rule: CompiledRule) -> None:
        cfg = rule.cfg
        self.summary = templates.parse(cfg.summary or default_summary(cfg))
        self.links = [(templates.parse(link.href), templates.parse(link.text)) for link in cfg.links]
        self.fields = {"rule": cfg.name, "metric": cfg.metric, "aggregation": cfg.aggregation,
                       "window": format_duration(cfg.window), "condition": cfg.condition, "severity": cfg.severity}


def default_summary(cfg: RuleConfig) -> str:
    what = "{value}" if cfg.ratio_to is None else "{value} (ratio)"
    head = "{rule}" + (" [{group}]" if cfg.group_by else "")
    return head + ": {aggregation} of {metric} over {window} is " + what + ", {condition} {threshold}"


class PagerDutyExporter:
    """Evaluates alert rules over the metrics it is pushed and opens / resolves PagerDuty incidents."""

    def __init__(self, settings: Settings, cfg: PagerDutyExporterConfig, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cfg = cfg
        self._clock = settings.clock
        self._wall = wall_clock
        self._id = str(settings.id)
        self.rules = [compile_rule(r) for r in cfg.rules]
        self._by_name = {r.cfg.name: r for r in self.rules}
        self._rendered = {r.cfg.name: _Rendered(r) for r in self.rules}
        self.store = SeriesStore(retention(self.rules), resolution=float(cfg.evaluation_interval),
                                 max_series=cfg.max_series, watch_start_ns=int(wall_clock() * 1e9))
        self.evaluator = Evaluator(self.store, watch_start=self._clock())
        self.states: dict[str, RuleState] = {r.cfg.name: RuleState() for r in self.rules}
        self.source = cfg.source or socket.gethostname()
        # One sender, so events leave in the order they were made (a resolve never overtakes its trigger).
        one_sender = dataclasses.replace(cfg, sending_queue=dataclasses.replace(cfg.sending_queue, num_consumers=1))
        self._events = ExporterHelper(dataclasses.replace(settings, signal=Signal.LOGS),
                                      EventSender(settings, cfg.endpoint, cfg.routing_key, cfg.tls), one_sender)
        self._carried_resolves: list[tuple[CompiledRule, Alert]] = []
        self._log = RateLimitedLog(settings.logger)
        tel = settings.telemetry
        self._firing = tel.gauge(FIRING_METRIC)
        self._series = tel.gauge(SERIES_METRIC)
        self._skipped = tel.counter(SKIPPED_METRIC)
        self._suppressed = tel.counter(SUPPRESSED_METRIC)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reported: set[tuple[str, str, str]] = set()
        self.evaluations = 0
        self._last_evaluation: float | None = None
        self._suppressed_now: dict[str, int] = {}
        self._handed_over = False   # a successor owns the history and alerts now (see takeover_state)
        self._shut = False
        self._predecessor: PagerDutyExporter | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        await self._events.start(host)
        self._series.labels(self._id).set_function(lambda: self.store.series_count)
        carried, self._carried_resolves = self._carried_resolves, []
        for rule, alert in carried:
            await self._notify(rule, alert, "resolve")
        self._set_firing()
        self._task = asyncio.create_task(self._run(), name=f"{self._id}-evaluate")
        self.settings.logger.info("pagerduty exporter started", extra={
            "rules": len(self.rules), "evaluation_interval_s": float(self.cfg.evaluation_interval),
            "metrics": sorted(self.store.tables)})

    async def _run(self) -> None:
        interval = float(self.cfg.evaluation_interval)
        while not await self._clock.wait(interval, self._stop):
            if self._predecessor is not None and self._predecessor._shut:
                self._predecessor = None  # the reload is over: nothing to give back to (nor to keep alive)
            if self._handed_over:
                continue
            try:
                await self.evaluate()
            except Exception as e:  # a bug in one round must not stop alerting for good
                self._log.error("rule evaluation failed", key="evaluate", extra={"error": repr(e)})

    async def shutdown(self) -> None:
        self._shut = True
        self._stop.set()
        predecessor, self._predecessor = self._predecessor, None
        task, self._task = self._task, None
        if task is not None:
            await task
        await self._events.shutdown()
        if self._handed_over:
            return  # the gauges (same exporter id) are the successor's now
        for name in self.states:
            try:
                self._firing.remove(self._id, name)
            except KeyError:
                pass
        try:
            self._series.remove(self._id)
        except KeyError:
            pass
        if predecessor is not None and not predecessor._shut:
            predecessor._take_back()  # a reload rolled back: the old instance runs on with its state

    # --- data -------------------------------------------------------------------------------------
    async def push(self, payload: Payload) -> None:
        try:
            result = self.store.ingest(payload.serialize(), self._clock())
        except DecodeError as e:
            self._skipped.labels(self._id, "invalid").inc(payload.items)
            self._log.warning("could not read a metrics request; its points are not used by the rules",
                              key="decode", extra={"error": str(e)})
            return
        for reason, n in result.skipped.items():
            self._skipped.labels(self._id, reason).inc(n)
        if "series_limit" in result.skipped:
            self._log.warning("points of new series not kept: the exporter holds max_series series",
                              key="series_limit", extra={"max_series": self.cfg.max_series})

    # --- evaluation -------------------------------------------------------------------------------
    async def evaluate(self) -> None:
        """One evaluation round of every rule, at the clock's current time."""
        now = self._clock()
        self.store.prune(now)
        cache: dict[Selector, dict[Group, float]] = {}
        for rule in self.rules:
            if self._handed_over:
                return  # handed over while this round waited for the queue: the successor goes on
            cfg = rule.cfg
            state = self.states[cfg.name]
            observations = self.evaluator.evaluate(rule, now, cache)
            triggers, resolves, suppressed = state.step(observations, now, float(cfg.for_), cfg.limit)
            self._suppressed_now[cfg.name] = suppressed
            if suppressed:
                self._suppressed.labels(self._id, cfg.name, "limit").inc(suppressed)
                self._log.warning("groups hold the rule's condition but get no alert: the rule has `limit` alerts",
                                  key=f"limit:{cfg.name}", extra={"rule": cfg.name, "limit": cfg.limit,
                                                                   "suppressed": suppressed})
            for alert in resolves:
                if await self._notify(rule, alert, "resolve"):
                    state.resolved(alert)
            for alert in triggers:
                if await self._notify(rule, alert, "trigger"):
                    alert.triggered = True
        self._set_firing()
        self.evaluations += 1
        self._last_evaluation = now
        new = self.evaluator.unsupported - self._reported
        if new:
            self._reported |= new
            self.settings.logger.warning("some series cannot take their rule's aggregation and are left out",
                                         extra={"cases": [f"{m}: {a} of a {k}" for m, a, k in sorted(new)]})

    def _set_firing(self) -> None:
        for name, state in self.states.items():
            self._firing.labels(self._id, name).set(state.firing())

    def _wall_of(self, t: float) -> float:
        return self._wall() - (self._clock() - t)

    async def _notify(self, rule: CompiledRule, alert: Alert, action: str) -> bool:
        """Queue the rule's event for `alert`; False when the queue cannot take it now (tried again next round)."""
        cfg = rule.cfg
        rendered = self._rendered.get(cfg.name) or _Rendered(rule)
        attrs = dict(zip(cfg.group_by, alert.group))
        obs = alert.observation
        numbers = {"value": obs.value, "threshold": cfg.threshold}
        fields = {**attrs, **rendered.fields, "group": ", ".join(f"{k}={v}" for k, v in attrs.items())}
        url_fields = {k: quote(v, safe="") for k, v in fields.items()} if rendered.links else fields
        key = dedup_key(cfg.name, cfg.group_by, alert.group)
        details: dict[str, Any] = {
            "rule": cfg.name, "metric": cfg.metric, "aggregation": cfg.aggregation,
            "window": format_duration(cfg.window), "condition": cfg.condition, "threshold": cfg.threshold,
            "value": _json_number(obs.value), "group": attrs,
            "firing_since": iso_time(self._wall_of(alert.fired_at if alert.fired_at is not None
                                                   else alert.active_since)),
        }
        if rule.ratio is not None:
            details["numerator"] = _json_number(obs.numerator)
            details["denominator"] = _json_number(obs.denominator)
            details["ratio_to"] = {"metric": rule.ratio.metric, "aggregation": rule.ratio.aggregation,
                                   "window": format_duration(rule.ratio.window),
                                   "offset": format_duration(rule.ratio.offset)}
        if rule.volume is not None and cfg.min_volume is not None:
            details["volume"] = _json_number(obs.volume)
            details["min_volume"] = cfg.min_volume.threshold
        now_wall = self._wall()
        if action == "resolve":
            details["resolved_at"] = iso_time(now_wall)
        event = build_event(
            action, key, summary=templates.render(rendered.summary, numbers, fields), source=self.source,
            severity=cfg.severity, timestamp=now_wall, custom_details=details, component=self.cfg.component,
            group=self.cfg.group, class_=self.cfg.class_, client=self.cfg.client, client_url=self.cfg.client_url,
            links=[{"href": templates.render(h, numbers, url_fields), "text": templates.render(t, numbers, fields)}
                   for h, t in rendered.links] if rendered.links else ())
        try:
            await self._events.consume(to_payload(event, now_wall))
        except RetryableError as e:
            self._log.warning("PagerDuty event not queued; trying again at the next evaluation", key="enqueue",
                              extra={"rule": cfg.name, "dedup_key": key, "event_action": action, "error": str(e)})
            return False
        self.settings.logger.info("alert " + ("firing" if action == "trigger" else "resolved"),
                                  extra={"rule": cfg.name, "dedup_key": key, "value": _json_number(obs.value)})
        return True

    # --- status and reload ------------------------------------------------------------------------
    def status(self) -> Mapping[str, Any]:
        alerts = []
        for name, state in self.states.items():
            rule = self._by_name[name]
            for alert in state.alerts.values():
                alerts.append({
                    "rule": name, "state": alert.state.value, "severity": rule.cfg.severity,
                    "group": dict(zip(rule.cfg.group_by, alert.group)),
                    "value": _json_number(alert.observation.value),
                    "active_since": iso_time(self._wall_of(alert.active_since)),
                    **({"fired_at": iso_time(self._wall_of(alert.fired_at))} if alert.fired_at is not None else {}),
                    "dedup_key": dedup_key(name, rule.cfg.group_by, alert.group),
                    "trigger_sent": alert.triggered,
                })
        return {
            "rules": len(self.rules), "series": self.store.series_count, "evaluations": self.evaluations,
            **({"last_evaluation": iso_time(self._wall_of(self._last_evaluation))}
               if self._last_evaluation is not None else {}),
            "firing": sum(1 for a in alerts if a["state"] == State.FIRING.value),
            "alerts": alerts[:MAX_STATUS_ALERTS],
            **({"alerts_not_shown": len(alerts) - MAX_STATUS_ALERTS} if len(alerts) > MAX_STATUS_ALERTS else {}),
            **({"suppressed": {k: v for k, v in self._suppressed_now.items() if v}}
               if any(self._suppressed_now.values()) else {}),
        }

    def handover_state(self) -> object:
        """The history and alerts, for a successor (no effect until one takes them: see takeover_state)."""
        return CarriedState(self, self.store, self.evaluator.watch_start,
                            {name: (self._by_name[name], state) for name, state in self.states.items()})

    def _take_back(self) -> None:
        """The successor stopped before a reload completed: evaluate and send again, over this config."""
        self._handed_over = False
        self.store.configure(retention(self.rules), resolution=float(self.cfg.evaluation_interval),
                             max_series=self.cfg.max_series)
        self._series.labels(self._id).set_function(lambda: self.store.series_count)
        self._set_firing()

    def takeover_state(self, state: object) -> None:
        """Adopt a predecessor's history and alerts (called after construction, before start, while the
        predecessor still runs): from now on the predecessor evaluates nothing and sends no event."""
        if not isinstance(state, CarriedState) or state.owner is self:
            return
        state.owner._handed_over = True
        self._predecessor = state.owner
        self.store = state.store
        self.store.configure(retention(self.rules), resolution=float(self.cfg.evaluation_interval),
                             max_series=self.cfg.max_series)
        self.evaluator = Evaluator(self.store, watch_start=state.watch_start)
        for name, (old_rule, old_state) in state.rules.items():
            new_rule = self._by_name.get(name)
            if new_rule is not None and new_rule.cfg == old_rule.cfg:
                self.states[name] = old_state
                continue
            opened = [a for a in old_state.alerts.values() if a.triggered and a.state is not State.PENDING]
            if new_rule is not None and new_rule.cfg.group_by == old_rule.cfg.group_by:
                self.states[name].alerts = {a.group: a for a in opened}  # same dedup_keys: resolved when over
            else:
                self._carried_resolves.extend((old_rule, a) for a in opened)
