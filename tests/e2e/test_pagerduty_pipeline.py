"""End to end: DogStatsD lines in (a real client), alert rules evaluated in the pipeline, events out to a
fake Events API v2 that checks every event against the documented shape. Trigger then resolve with
the same dedup_key; the alert on /status and /metrics; a 429 retried; a 400 that blocks nothing; an
alert that survives a SIGHUP-style reload.

Windows are short (a second) so the tests run in seconds; data is paced by the exporter's
evaluations, never by sleeping.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from datadog.dogstatsd import DogStatsd
from prometheus_client.parser import text_string_to_metric_families

from otelpipe import components
from pipeline.config.confmap import load_texts
from pipeline.config.loader import build
from pipeline.config.schema import Config
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from pipeline.testing import wait_until
from tests.e2e.alerting import drive
from tests.e2e.pagerduty_intake import ROUTING_KEY, THROTTLE, PagerDutyIntake

pytestmark = pytest.mark.usefixtures("pagerduty_ingest")  # both ingest paths: C and Python

RULES = """
      - name: checkout-errors
        metric: agent.requests
        filter: {status: error}
        aggregation: increase
        window: 1s
        ratio_to: {filter: {}}
        min_volume: {filter: {}, threshold: 20}
        group_by: [service.name]
        condition: ">"
        threshold: 0.05
        for: 200ms
        severity: critical
        summary: "{service.name}: {value:.0%} of requests failed"
"""

CONFIG = """
receivers:
  statsd: {endpoint: "127.0.0.1:0", aggregation_interval: 50ms}
exporters:
  pagerduty:
    routing_key: ${env:PAGERDUTY_ROUTING_KEY}
    endpoint: ENDPOINT
    evaluation_interval: 50ms
    source: e2e-host
    retry_on_failure: {initial_interval: 100ms, max_interval: 200ms}
    rules:
RULES
service:
  pipelines:
    metrics: {receivers: [statsd], exporters: [pagerduty]}
  telemetry: {metrics: {address: "127.0.0.1:0"}}
"""

ENV = {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY}


def load(intake: PagerDutyIntake, rules: str = RULES) -> Config:
    text = CONFIG.replace("ENDPOINT", intake.url).replace("RULES\n", rules.lstrip("\n"))
    raw, issues = load_texts([("<e2e>", text)])
    return build(raw, issues, components.factories(), ENV)


@pytest.fixture
async def intake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PagerDutyIntake]:
    for var in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_TAGS", "DD_ENTITY_ID", "DD_EXTERNAL_ENV"):
        monkeypatch.delenv(var, raising=False)  # the DogStatsD client would tag every metric with them
    pd = PagerDutyIntake()
    await pd.start()
    yield pd
    await pd.stop()


class Agents:
    """A DogStatsD client (the real `datadog` package) sending agent request counts."""

    def __init__(self, svc: Service) -> None:
        host, port = svc.endpoint("receiver", "statsd", "udp").rsplit(":", 1)
        self.client = DogStatsd(host=host, port=int(port), disable_telemetry=True, disable_buffering=True,
                                origin_detection_enabled=False)

    def requests(self, service: str, ok: int, errors: int) -> None:
        self.client.increment("agent.requests", ok, tags=["status:ok", f"service.name:{service}"])
        if errors:
            self.client.increment("agent.requests", errors, tags=["status:error", f"service.name:{service}"])

    def close(self) -> None:
        self.client.close_socket()


async def admin_get(svc: Service, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"http://{svc.endpoint('admin', '', 'http')}{path}") as r:
        assert r.status == 200
        return await (r.json() if path == "/status" else r.text())


def firing_gauge(text: str, rule: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "otelpipe_alerts_firing":
            for s in family.samples:
                if s.labels.get("rule") == rule:
                    return s.value
    raise AssertionError(f"no otelpipe_alerts_firing{{rule={rule!r}}} in /metrics")


async def test_statsd_errors_trigger_then_resolve_with_the_same_dedup_key(intake: PagerDutyIntake) -> None:
    svc = Service(load(intake), components.factories(), telemetry=Telemetry(process_metrics=False))
    await svc.start()
    agents = Agents(svc)
    exporter = svc.component("exporter", "pagerduty")
    key = "checkout-errors/service.name=checkout"
    try:
        # 20% of checkout's requests fail, 1% of search's (below the threshold)
        async def failing(_: int) -> None:
            agents.requests("checkout", ok=40, errors=10)
            agents.requests("search", ok=99, errors=1)

        await drive(exporter, failing, lambda: intake.of(key) == ["trigger"], what="the trigger")
        (trigger,) = intake.events
        assert trigger["payload"]["summary"] == "checkout: 20% of requests failed"
        assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "e2e-host"
        assert trigger["payload"]["custom_details"]["group"] == {"service.name": "checkout"}

        status = await admin_get(svc, "/status")
        (component,) = [c for c in status["components"] if c["id"] == "pagerduty"]
        (alert,) = component["status"]["alerts"]
        assert (alert["rule"], alert["state"], alert["dedup_key"]) == ("checkout-errors", "firing", key)
        assert ROUTING_KEY not in str(status)
        assert firing_gauge(await admin_get(svc, "/metrics"), "checkout-errors") == 1

        async def recovered(_: int) -> None:
            agents.requests("checkout", ok=50, errors=0)
            agents.requests("search", ok=100, errors=0)

        await drive(exporter, recovered, lambda: intake.of(key) == ["trigger", "resolve"], what="the resolve")
        assert [e["dedup_key"] for e in intake.events] == [key, key]  # search never paged
        assert firing_gauge(await admin_get(svc, "/metrics"), "checkout-errors") == 0
        assert intake.violations == []
    finally:
        agents.close()
        await svc.shutdown()


async def test_a_429_is_retried_and_a_400_does_not_block_other_rules(
        intake: PagerDutyIntake, caplog: pytest.LogCaptureFixture) -> None:
    rules = RULES + """
      - name: refused-by-pagerduty
        metric: agent.requests
        aggregation: increase
        window: 1s
        condition: ">"
        threshold: 0
"""
    intake.refuse = lambda event: event["dedup_key"] == "refused-by-pagerduty"
    intake.script = [THROTTLE]  # the first event PagerDuty sees is throttled
    svc = Service(load(intake, rules), components.factories(), telemetry=Telemetry(process_metrics=False))
    await svc.start()
    agents = Agents(svc)
    exporter = svc.component("exporter", "pagerduty")
    key = "checkout-errors/service.name=checkout"
    try:
        async def failing(_: int) -> None:
            agents.requests("checkout", ok=40, errors=10)

        with caplog.at_level(logging.WARNING, logger="otelpipe"):
            await drive(exporter, failing, lambda: intake.of(key) == ["trigger"], what="the trigger")
            tel = svc.telemetry
            await wait_until(lambda: tel.value("otelpipe_exporter_send_failed_log_records_total",
                                               exporter="pagerduty", reason="permanent_error") == 1)
        assert intake.answers[0] == 429 and 400 in intake.answers and intake.answers.count(202) == 1
        assert any(r.getMessage() == "export failed; will retry" for r in caplog.records)
        refused = [r for r in caplog.records if "permanently" in r.getMessage()]
        assert refused and "Event object is invalid: refused by the test" in str(refused[0].__dict__["error"])
        assert all(ROUTING_KEY not in r.getMessage() + str(r.__dict__) for r in caplog.records)
        assert intake.violations == []
    finally:
        agents.close()
        await svc.shutdown()


async def post_reload(svc: Service) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"http://{svc.endpoint('admin', '', 'http')}/-/reload") as r:
        assert r.status == 200, await r.text()
    await svc.settled()  # what the reload replaced has stopped


def gauge(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


async def test_a_firing_alert_survives_reloads_that_keep_or_replace_the_exporter(intake: PagerDutyIntake) -> None:
    texts = [load(intake)]
    svc = Service(texts[0], components.factories(), telemetry=Telemetry(process_metrics=False),
                  reload_config=lambda: texts[0])
    await svc.start()
    agents = Agents(svc)
    key = "checkout-errors/service.name=checkout"
    try:
        async def failing(_: int) -> None:
            agents.requests("checkout", ok=40, errors=10)

        first = svc.component("exporter", "pagerduty")
        await drive(first, failing, lambda: intake.of(key) == ["trigger"])
        # 1. only the receiver changes: the exporter is kept running, alerts and all
        texts[0] = load(intake)
        texts[0] = build(*load_texts([("<e2e>", CONFIG.replace("ENDPOINT", intake.url).replace(
            "RULES\n", RULES.lstrip("\n")).replace("aggregation_interval: 50ms", "aggregation_interval: 40ms"))]),
            components.factories(), ENV)
        await post_reload(svc)
        assert svc.component("exporter", "pagerduty") is first
        # 2. the exporter's settings change (one more rule): a new instance takes the history and alerts
        texts[0] = load(intake, RULES + RULES.replace("checkout-errors", "other-rule").replace("0.05", "0.5"))
        await post_reload(svc)
        exporter = svc.component("exporter", "pagerduty")
        assert exporter is not first
        (alert,) = exporter.status()["alerts"]
        assert (alert["rule"], alert["state"], alert["trigger_sent"]) == ("checkout-errors", "firing", True)
        old_rounds = first.evaluations
        await drive(exporter, failing, lambda: exporter.evaluations >= 10)
        assert intake.of(key) == ["trigger"]  # no second trigger after the reloads
        assert first.evaluations == old_rounds  # the replaced instance evaluates nothing any more
        metrics = await admin_get(svc, "/metrics")
        assert firing_gauge(metrics, "checkout-errors") == 1
        # the replaced instance stopping left the successor's gauges alone
        assert gauge(metrics, "otelpipe_exporter_pagerduty_series", exporter="pagerduty") == 2

        async def recovered(_: int) -> None:
            agents.requests("checkout", ok=50, errors=0)

        await drive(exporter, recovered, lambda: intake.of(key) == ["trigger", "resolve"], what="the resolve")
        await drive(exporter, recovered, lambda: exporter.evaluations >= 30)
        assert intake.of(key) == ["trigger", "resolve"]  # resolved once, by the successor only
        assert intake.violations == []
    finally:
        agents.close()
        await svc.shutdown()


async def test_a_rule_removed_by_a_reload_resolves_its_open_incident(intake: PagerDutyIntake) -> None:
    other = RULES.replace("checkout-errors", "other-rule").replace("0.05", "0.1")
    texts = [load(intake, RULES + other)]
    svc = Service(texts[0], components.factories(), telemetry=Telemetry(process_metrics=False),
                  reload_config=lambda: texts[0])
    await svc.start()
    agents = Agents(svc)
    key, other_key = "checkout-errors/service.name=checkout", "other-rule/service.name=checkout"
    try:
        async def failing(_: int) -> None:
            agents.requests("checkout", ok=40, errors=10)

        await drive(svc.component("exporter", "pagerduty"), failing,
                    lambda: intake.of(key) == ["trigger"] and intake.of(other_key) == ["trigger"])
        texts[0] = load(intake, other)  # checkout-errors is gone; other-rule is unchanged
        await post_reload(svc)
        exporter = svc.component("exporter", "pagerduty")
        await intake.wait_for(lambda _: intake.of(key) == ["trigger", "resolve"], what="the removed rule's resolve")
        (resolve,) = [e for e in intake.events if e["dedup_key"] == key and e["event_action"] == "resolve"]
        assert resolve["payload"]["severity"] == "critical"
        await drive(exporter, failing, lambda: exporter.evaluations >= 10)
        assert intake.of(other_key) == ["trigger"]  # still firing, not triggered again
        assert [a["rule"] for a in exporter.status()["alerts"]] == ["other-rule"]
        assert intake.violations == []
    finally:
        agents.close()
        await svc.shutdown()
