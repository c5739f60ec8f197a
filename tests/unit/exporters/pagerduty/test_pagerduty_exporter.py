"""The exporter on a fake clock against a fake Events API: events, delivery, status, gauges, reload hand-over.

Time is a `FakeClock`: the evaluation loop and the retry backoff wait on it, and samples are
stamped with it, so `for`, windows and retries are exact and nothing sleeps.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from exporters.pagerduty import PagerDutyExporter, PagerDutyExporterConfig
from exporters.pagerduty.events import MAX_DEDUP_KEY, build_event, dedup_key, to_payload
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import FakeClock, NopHost, nop_settings, wait_until
from tests.e2e.pagerduty_intake import ROUTING_KEY, THROTTLE, PagerDutyIntake
from tests.unit.exporters.pagerduty.pdhelpers import counter, gauge, request

INTERVAL = 10.0


@pytest.fixture
async def intake() -> AsyncIterator[PagerDutyIntake]:
    pd = PagerDutyIntake()
    await pd.start()
    yield pd
    await pd.stop()
    assert pd.violations == []


def config(intake: PagerDutyIntake, rules: list[dict[str, Any]], **extra: Any) -> PagerDutyExporterConfig:
    raw = {"routing_key": ROUTING_KEY, "endpoint": intake.url, "evaluation_interval": f"{INTERVAL:g}s",
           "source": "otelpipe-test", "retry_on_failure": {"initial_interval": "1s", "randomization_factor": 0},
           "rules": rules, **extra}
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(PagerDutyExporterConfig, raw, "exporters.pagerduty", issues)
    assert not issues, issues
    return cfg  # type: ignore[no-any-return]


class Harness:
    """One exporter on a fake clock, its telemetry, and helpers to feed it and step its evaluation loop."""

    def __init__(self, cfg: PagerDutyExporterConfig, clock: FakeClock | None = None,
                 telemetry: Telemetry | None = None) -> None:
        self.clock = clock or FakeClock()
        self.tel = telemetry or Telemetry(process_metrics=False)
        settings = dataclasses.replace(nop_settings("pagerduty", Kind.EXPORTER, Signal.METRICS, telemetry=self.tel),
                                       clock=self.clock)
        self.exp = PagerDutyExporter(settings, cfg, wall_clock=lambda: 1_700_000_000.0 + self.clock())

    async def push(self, *metrics: Any, resource: dict[str, object] | None = None) -> None:
        await self.exp.push(Payload(Signal.METRICS, raw=request(*metrics, resource=resource)))

    async def tick(self, seconds: float = INTERVAL) -> None:
        """Move time on by `seconds` (a multiple of the interval) and wait for the evaluations it causes."""
        for _ in range(round(seconds / INTERVAL)):
            n = self.exp.evaluations
            await self.clock.wait_for_waiters(1)
            self.clock.advance(INTERVAL)
            await wait_until(lambda n=n: self.exp.evaluations > n, what="an evaluation")

    def value(self, name: str, **labels: str) -> float:
        return self.tel.value(name, **labels)

    async def close(self) -> None:
        """Shut down; a retry still waiting on the fake clock would wait forever, so this is bounded."""
        async with asyncio.timeout(5):
            await self.exp.shutdown()


ERRORS = {"name": "errors", "metric": "req", "filter": {"status": "error"}, "aggregation": "increase",
          "window": "1m", "ratio_to": {"filter": {}}, "group_by": ["service.name"], "condition": ">",
          "threshold": 0.05, "for": "20s", "severity": "critical",
          "summary": "{service.name}: {value:.0%} of requests failed",
          "links": [{"href": "http://traces/search?service={service.name}", "text": "traces of {service.name}"}]}


async def traffic(h: Harness, service: str, ok: int, errors: int) -> None:
    await h.push(counter("req", [({"status": "ok"}, ok), ({"status": "error"}, errors)], delta=True),
                 resource={"service.name": service})


async def test_trigger_after_for_then_resolve_with_the_same_dedup_key(intake: PagerDutyIntake) -> None:
    h = Harness(config(intake, [ERRORS], component="agents", group="prod", **{"class": "availability"},
                       client_url="http://grafana/d/agents"))
    await h.exp.start(NopHost())
    try:
        await traffic(h, "check out&pay", ok=80, errors=20)  # 20% errors
        await h.tick()  # condition holds: pending
        assert h.exp.status()["alerts"][0]["state"] == "pending"
        await traffic(h, "check out&pay", ok=80, errors=20)
        await h.tick()  # held 10 s
        assert intake.events == []
        await traffic(h, "check out&pay", ok=80, errors=20)
        await h.tick()  # held 20 s = for: fires
        (trigger,) = await intake.wait_for(lambda ev: len(ev) == 1, what="the trigger")
        key = "errors/service.name=check out%26pay"
        assert trigger["dedup_key"] == key and trigger["event_action"] == "trigger"
        assert trigger["routing_key"] == ROUTING_KEY
        p = trigger["payload"]
        assert p["summary"] == "check out&pay: 20% of requests failed"
        assert (p["source"], p["severity"], p["component"], p["group"], p["class"]) == (
            "otelpipe-test", "critical", "agents", "prod", "availability")
        assert p["timestamp"].endswith("Z")
        d = p["custom_details"]
        assert d["value"] == pytest.approx(0.2) and d["threshold"] == 0.05 and d["window"] == "1m"
        assert d["group"] == {"service.name": "check out&pay"}
        assert (d["numerator"], d["denominator"]) == (60.0, 300.0)
        assert trigger["client"] == "otelpipe" and trigger["client_url"] == "http://grafana/d/agents"
        assert trigger["links"] == [{"href": "http://traces/search?service=check%20out%26pay",
                                     "text": "traces of check out&pay"}]
        assert h.value("otelpipe_alerts_firing", rule="errors") == 1

        for _ in range(3):  # still failing: no second trigger
            await traffic(h, "check out&pay", ok=80, errors=20)
            await h.tick()
        for _ in range(7):  # recovered: the 1 m window slides past the failures
            await traffic(h, "check out&pay", ok=100, errors=0)
            await h.tick()
        events = await intake.wait_for(lambda ev: len(ev) == 2, what="the resolve")
        assert [e["event_action"] for e in events] == ["trigger", "resolve"]
        assert events[1]["dedup_key"] == key
        assert "resolved_at" in events[1]["payload"]["custom_details"]
        assert h.value("otelpipe_alerts_firing", rule="errors") == 0
        await wait_until(lambda: h.value("otelpipe_exporter_sent_log_records_total", exporter="pagerduty") == 2)
    finally:
        await h.close()
    assert h.tel.snapshot().get("otelpipe_alerts_firing") in (None, [])


async def test_429_is_retried_with_backoff(intake: PagerDutyIntake) -> None:
    rule = {"name": "up", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1}
    h = Harness(config(intake, [rule]))
    await h.exp.start(NopHost())
    try:
        intake.script = [THROTTLE, THROTTLE]
        await h.push(gauge("g", [({}, 5.0)]))
        await h.tick()
        await intake.wait_for_answers(1)
        for delay in (1.0, 1.5):  # the retry waits (initial_interval 1s, x1.5, no jitter) on the clock
            await h.clock.wait_for_waiters(2)  # the evaluation loop and the retry
            assert h.clock.waits[-1] == delay
            h.clock.advance(delay)
        (event,) = await intake.wait_for(lambda ev: len(ev) == 1)
        assert intake.answers == [429, 429, 202] and event["event_action"] == "trigger"
        await wait_until(lambda: h.value("otelpipe_exporter_sent_log_records_total", exporter="pagerduty") == 1)
        assert h.value("otelpipe_exporter_send_duration_seconds_count", outcome="retryable_error") == 2
    finally:
        await h.close()


async def test_a_400_is_logged_with_pagerdutys_message_and_does_not_block_other_rules(
        intake: PagerDutyIntake, caplog: pytest.LogCaptureFixture) -> None:
    rules = [{"name": "bad", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1},
             {"name": "good", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 2}]
    h = Harness(config(intake, rules))
    intake.refuse = lambda event: event["dedup_key"] == "bad"
    await h.exp.start(NopHost())
    try:
        with caplog.at_level(logging.ERROR, logger="otelpipe.exporter"):
            await h.push(gauge("g", [({}, 5.0)]))
            await h.tick()
            (event,) = await intake.wait_for(lambda ev: len(ev) == 1)
            assert event["dedup_key"] == "good"
            await wait_until(lambda: h.value("otelpipe_exporter_send_failed_log_records_total",
                                              reason="permanent_error") == 1)
        assert intake.answers == [400, 202]
        logged = [r for r in caplog.records if "permanently" in r.getMessage()]
        assert logged and "Event object is invalid: refused by the test" in str(logged[0].__dict__.get("error"))
        assert all(ROUTING_KEY not in str(r.__dict__) for r in caplog.records)
    finally:
        await h.close()


async def test_an_event_the_full_queue_refuses_is_queued_at_a_later_evaluation(intake: PagerDutyIntake) -> None:
    rules = [{"name": f"r{i}", "metric": "g", "aggregation": "last", "condition": ">", "threshold": i}
             for i in range(3)]
    h = Harness(config(intake, rules, sending_queue={"queue_size": 1}))
    await h.exp.start(NopHost())
    try:
        intake.script = [THROTTLE]  # the first event waits for its retry: the sender is busy with it
        await h.push(gauge("g", [({}, 5.0)]))
        await h.tick()  # r0 fills the queue; r1 and r2 are refused
        assert h.value("otelpipe_exporter_enqueue_failed_log_records_total", reason="queue_full") == 2
        assert [a["trigger_sent"] for a in h.exp.status()["alerts"]] == [True, False, False]
        await h.clock.wait_for_waiters(2)  # the sender holds r0 for its retry: the queue is free again
        await h.push(gauge("g", [({}, 5.0)]))
        await h.tick()  # r1 is queued, r2 refused again
        assert [a["trigger_sent"] for a in h.exp.status()["alerts"]] == [True, True, False]
        h.clock.advance(1.0)  # r0's retry goes through, then r1
        await intake.wait_for(lambda ev: len(ev) == 2)
        await h.push(gauge("g", [({}, 5.0)]))
        await h.tick()
        events = await intake.wait_for(lambda ev: len(ev) == 3)
        assert [e["dedup_key"] for e in events] == ["r0", "r1", "r2"]
        assert all(e["event_action"] == "trigger" for e in events)
        assert h.value("otelpipe_exporter_enqueue_failed_log_records_total", reason="queue_full") == 3
    finally:
        await h.close()


async def test_status_lists_active_alerts_without_secrets(intake: PagerDutyIntake) -> None:
    rule = {"name": "slow", "metric": "g", "aggregation": "max", "condition": ">", "threshold": 1, "for": "1h",
            "group_by": ["pod"]}
    h = Harness(config(intake, [rule]))
    await h.exp.start(NopHost())
    try:
        await h.push(gauge("g", [({"pod": "a"}, 5.0), ({"pod": "b"}, 0.5)]))
        await h.tick()
        status = h.exp.status()
        assert status["rules"] == 1 and status["series"] == 2 and status["evaluations"] == 1
        (alert,) = status["alerts"]
        assert alert["rule"] == "slow" and alert["state"] == "pending" and alert["group"] == {"pod": "a"}
        assert alert["value"] == 5.0 and alert["dedup_key"] == "slow/pod=a" and alert["trigger_sent"] is False
        assert ROUTING_KEY not in orjson.dumps(status).decode()
    finally:
        await h.close()


async def test_points_beyond_max_series_are_counted(intake: PagerDutyIntake) -> None:
    rule = {"name": "r", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1}
    h = Harness(config(intake, [rule], max_series=1))
    await h.push(gauge("g", [({"k": "1"}, 1.0), ({"k": "2"}, 1.0), ({"k": "3"}, 1.0)]), gauge("x", [({}, 1.0)]))
    assert h.value("otelpipe_exporter_pagerduty_skipped_points_total", reason="series_limit") == 2
    await h.close()


async def test_limit_suppresses_alerts_beyond_it_and_counts_them(intake: PagerDutyIntake) -> None:
    rule = {"name": "r", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1, "limit": 2,
            "group_by": ["k"], "for": "1h"}
    h = Harness(config(intake, [rule]))
    await h.exp.start(NopHost())
    try:
        await h.push(gauge("g", [({"k": str(i)}, 5.0) for i in range(5)]))
        await h.tick()
        assert len(h.exp.status()["alerts"]) == 2 and h.exp.status()["suppressed"] == {"r": 3}
        assert h.value("otelpipe_exporter_pagerduty_alerts_suppressed_total", rule="r", reason="limit") == 3
    finally:
        await h.close()


# -- reload hand-over ------------------------------------------------------------------------------

async def _firing(h: Harness, intake: PagerDutyIntake, n: int) -> None:
    await h.tick()
    await intake.wait_for(lambda ev: len(ev) == n)


async def test_state_survives_a_reload_of_an_unchanged_rule(intake: PagerDutyIntake) -> None:
    firing = {"name": "firing", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1}
    pending = {"name": "pending", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1,
               "for": "30s"}
    rate = {"name": "rate", "metric": "c", "aggregation": "increase", "window": "1m", "condition": ">",
            "threshold": 1000}
    clock = FakeClock()
    old = Harness(config(intake, [firing, pending, rate]), clock)
    await old.exp.start(NopHost())
    await old.push(gauge("g", [({}, 5.0)]), counter("c", [({}, 7)], delta=True))
    await _firing(old, intake, 1)  # `firing` fires; `pending` has held 0 of 30 s
    await old.tick()  # held 10 s
    await old.close()
    state = old.exp.handover_state()

    new = Harness(config(intake, [firing, pending, rate]), clock, old.tel)
    new.exp.takeover_state(state)
    await new.exp.start(NopHost())
    try:
        assert new.value("otelpipe_alerts_firing", rule="firing") == 1  # known at once, before any evaluation
        await new.push(gauge("g", [({}, 5.0)]))
        await new.tick()  # held 20 s
        await new.tick()  # held 30 s: `pending` fires now, not 30 s after the reload
        events = await intake.wait_for(lambda ev: len(ev) == 2)
        assert [e["dedup_key"] for e in events] == ["firing", "pending"]  # no second trigger for `firing`
        # the history came along: the counter's increase still sees the point pushed before the reload
        obs = new.exp.evaluator.evaluate(new.exp.rules[2], clock())
        assert obs[()].value == 7.0
    finally:
        await new.close()


async def test_a_changed_rule_keeps_its_open_incidents_and_a_removed_rule_resolves_them(
        intake: PagerDutyIntake) -> None:
    kept = {"name": "kept", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1,
            "group_by": ["k"]}
    gone = {"name": "gone", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1}
    clock = FakeClock()
    old = Harness(config(intake, [kept, gone]), clock)
    await old.exp.start(NopHost())
    await old.push(gauge("g", [({"k": "a"}, 5.0)]))
    await _firing(old, intake, 2)
    await old.close()

    changed = {**kept, "threshold": 10, "severity": "warning"}
    new = Harness(config(intake, [changed]), clock, old.tel)
    new.exp.takeover_state(old.exp.handover_state())
    await new.exp.start(NopHost())
    try:
        # `gone` is resolved at start; `kept` (now above 10) is resolved when evaluated, same dedup_key
        await intake.wait_for(lambda ev: "resolve" in [e["event_action"] for e in ev if e["dedup_key"] == "gone"])
        await new.push(gauge("g", [({"k": "a"}, 5.0)]))
        await new.tick()
        await intake.wait_for(lambda ev: len(ev) == 4)
        assert intake.of("kept/k=a") == ["trigger", "resolve"]
        assert intake.of("gone") == ["trigger", "resolve"]
    finally:
        await new.close()


async def test_the_predecessor_still_running_after_the_hand_over_sends_nothing(intake: PagerDutyIntake) -> None:
    """Live reload takes the state over while the old instance runs; it is stopped afterwards."""
    rule = {"name": "high", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1}
    clock = FakeClock()
    old = Harness(config(intake, [rule]), clock)
    await old.exp.start(NopHost())
    await old.push(gauge("g", [({}, 5.0)]))
    await _firing(old, intake, 1)
    new = Harness(config(intake, [rule], source="elsewhere"), clock, old.tel)
    new.exp.takeover_state(old.exp.handover_state())
    await new.exp.start(NopHost())
    try:
        await old.push(gauge("g", [({}, 0.0)]))  # data still reaching the old graph lands in the shared history
        await clock.wait_for_waiters(2)  # both evaluation loops wait for the next round
        clock.advance(INTERVAL)
        await wait_until(lambda: new.exp.evaluations == 1, what="the successor's evaluation")
        await intake.wait_for(lambda ev: len(ev) == 2)
        assert intake.of("high") == ["trigger", "resolve"]
        await clock.wait_for_waiters(2)  # both loops are done with the round
        assert old.exp.evaluations == 1 and new.exp.evaluations == 1
        await old.close()  # the old one stopping leaves the successor's gauges alone
        assert new.value("otelpipe_exporter_pagerduty_series", exporter="pagerduty") == 1
        assert new.value("otelpipe_alerts_firing", exporter="pagerduty", rule="high") == 0
    finally:
        await new.close()
    assert len(intake.events) == 2


async def test_a_rolled_back_reload_gives_the_state_back_to_the_running_predecessor(
        intake: PagerDutyIntake) -> None:
    rule = {"name": "high", "metric": "g", "aggregation": "last", "condition": ">", "threshold": 1}
    clock = FakeClock()
    old = Harness(config(intake, [rule]), clock)
    await old.exp.start(NopHost())
    await old.push(gauge("g", [({}, 5.0)]))
    await _firing(old, intake, 1)
    new = Harness(config(intake, [rule, {**rule, "name": "other", "metric": "h"}]), clock, old.tel)
    new.exp.takeover_state(old.exp.handover_state())
    await new.exp.start(NopHost())
    await new.close()  # the rest of the new config failed to start: the reload is rolled back
    try:
        assert old.value("otelpipe_exporter_pagerduty_series", exporter="pagerduty") == 1
        assert sorted(old.exp.store.tables) == ["g"]  # back to the old rules' metrics
        await old.push(gauge("g", [({}, 0.0)]))
        await old.tick()
        await intake.wait_for(lambda ev: len(ev) == 2)
        assert intake.of("high") == ["trigger", "resolve"]  # the old instance alerts again
    finally:
        await old.close()


# -- events ----------------------------------------------------------------------------------------

def test_dedup_keys_are_stable_escaped_and_at_most_255_characters() -> None:
    assert dedup_key("r", (), ()) == "r"
    assert dedup_key("r", ("a", "b"), ("x=1", "y&z")) == "r/a=x%3D1&b=y%26z"
    long = dedup_key("r", ("prompt",), ("p" * 1000,))
    assert len(long) == MAX_DEDUP_KEY and long == dedup_key("r", ("prompt",), ("p" * 1000,))
    assert long != dedup_key("r", ("prompt",), ("p" * 999 + "q",))


def test_summaries_are_cut_at_1024_characters_and_huge_details_are_dropped() -> None:
    event = build_event("trigger", "k", summary="s" * 5000, source="h", severity="info", timestamp=0.0,
                        custom_details={"group": {"prompt": "x" * 600_000}}, links=[{"href": "", "text": "none"}])
    summary = event["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…")
    assert event["payload"]["custom_details"] == {
        "error": "Custom details have been removed because the original event exceeds the maximum size of 512kB"}
    assert "links" not in event  # a link whose href rendered empty is left out, as Alertmanager does
    assert event["payload"]["timestamp"] == "1970-01-01T00:00:00.000Z"


def test_an_event_travels_as_one_log_record_without_its_routing_key() -> None:
    event = build_event("resolve", "k", summary="s", source="h", severity="error", timestamp=0.0, custom_details={})
    payload = to_payload(event, 0.0)
    assert payload.signal is Signal.LOGS and payload.items == 1
    body = payload.message.resource_logs[0].scope_logs[0].log_records[0].body.string_value  # type: ignore[union-attr]
    assert orjson.loads(body) == event and "routing_key" not in body
