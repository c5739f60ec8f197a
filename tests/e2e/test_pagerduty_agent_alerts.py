"""The shipped worked example, `config/examples/agent-alerts.yaml`: each of its five rules fires and resolves.

The example runs as shipped, with a config override (a second file, as `--config a --config b`
merges them) that binds loopback ports, points the exporter at a fake Events API v2 and scales
every window, `for` and offset down by 600 (5 m → 500 ms, 1 h → 6 s, 24 h → 144 s); thresholds
are unchanged. Agents are simulated with the real clients: the OpenTelemetry SDK (cumulative
latency histogram and token counter, over OTLP/HTTP) and DogStatsD (request, tool-call and
hallucination counters). Each round sends one batch and waits for the next evaluation.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from datadog.dogstatsd import DogStatsd
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource

from otelpipe import components
from pipeline.config.confmap import load_texts
from pipeline.config.loader import build
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from tests.e2e.alerting import drive, scale_rules
from tests.e2e.pagerduty_intake import ROUTING_KEY, PagerDutyIntake

pytestmark = pytest.mark.usefixtures("pagerduty_ingest")  # both ingest paths: C and Python

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "agent-alerts.yaml"
SCALE = 1 / 600

KEYS = {
    "agent-error-rate": "agent-error-rate/service.name=checkout",
    "agent-latency-regression": "agent-latency-regression/service.name=support-agent",
    "token-burn": "token-burn/service.name=support-agent",
    "tool-failure-rate": "tool-failure-rate/gen_ai.tool.name=search",
    "hallucination-rate": "hallucination-rate",
}


def override(intake: PagerDutyIntake) -> str:
    example = yaml.safe_load(EXAMPLE.read_text())
    rules = scale_rules(example["exporters"]["pagerduty"]["rules"], SCALE)
    return yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"},
                                             "http": {"endpoint": "127.0.0.1:0"}}},
                      "statsd": {"endpoint": "127.0.0.1:0", "aggregation_interval": "50ms"}},
        "processors": {"batch": {"timeout": "10ms"}},
        "exporters": {"prometheus": {"endpoint": "127.0.0.1:0"},
                      "pagerduty": {"endpoint": intake.url, "evaluation_interval": "50ms", "rules": rules,
                                    "retry_on_failure": {"initial_interval": "100ms"}}},
        "service": {"telemetry": {"metrics": {"address": "127.0.0.1:0"}}},
    })


@pytest.fixture
async def intake() -> AsyncIterator[PagerDutyIntake]:
    pd = PagerDutyIntake()
    await pd.start()
    yield pd
    await pd.stop()


class SdkAgent:
    """An agent instrumented with the OpenTelemetry SDK, exporting cumulative metrics over OTLP/HTTP."""

    def __init__(self, endpoint: str) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(resource=Resource.create({"service.name": "support-agent"}),
                                      metric_readers=[self.reader])
        meter = self.provider.get_meter("agent")
        self.duration = meter.create_histogram("agent.request.duration", unit="s",
                                               explicit_bucket_boundaries_advisory=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5])
        self.tokens = meter.create_counter("agent.tokens", unit="{token}")
        self.exporter = OTLPMetricExporter(endpoint=f"http://{endpoint}/v1/metrics")

    async def send(self, latency: float, tokens: int) -> None:
        for _ in range(30):
            self.duration.record(latency)
        self.tokens.add(tokens, {"direction": "input"})
        result = await asyncio.to_thread(self.exporter.export, self.reader.get_metrics_data())
        assert result is MetricExportResult.SUCCESS

    def close(self) -> None:
        self.exporter.shutdown()
        self.provider.shutdown()


async def test_each_example_rule_fires_and_resolves(intake: PagerDutyIntake, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_TAGS", "DD_ENTITY_ID", "DD_EXTERNAL_ENV"):
        monkeypatch.delenv(var, raising=False)
    raw, issues = load_texts([(str(EXAMPLE), EXAMPLE.read_text()), ("<scaled override>", override(intake))])
    cfg = build(raw, issues, components.factories(), {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY})
    svc = Service(cfg, components.factories(), telemetry=Telemetry(process_metrics=False))
    await svc.start()
    host, port = svc.endpoint("receiver", "statsd", "udp").rsplit(":", 1)
    statsd = DogStatsd(host=host, port=int(port), disable_telemetry=True, disable_buffering=True,
                       origin_detection_enabled=False)
    sdk = SdkAgent(svc.endpoint("receiver", "otlp", "http"))
    exporter = svc.component("exporter", "pagerduty")
    latency_rule = next(r for r in exporter.rules if r.cfg.name == "agent-latency-regression")

    def phase(rule: str) -> str:
        """'bad' until the rule's trigger arrived, then 'good' (until its resolve)."""
        return "good" if intake.of(KEYS[rule]) else "bad"

    def hour_ago_known() -> bool:
        """The latency rule's baseline (the same window 1 h, scaled: 6 s, earlier) has data."""
        return bool(exporter.evaluator.select(latency_rule.ratio, exporter._clock()))

    async def step(i: int) -> None:
        errors = 10 if phase("agent-error-rate") == "bad" else 0
        statsd.increment("agent.requests", 50 - errors, tags=["status:ok", "service.name:checkout"])
        if errors:
            statsd.increment("agent.requests", errors, tags=["status:error", "service.name:checkout"])
        failed = 10 if phase("tool-failure-rate") == "bad" else 0
        statsd.increment("agent.tool.calls", 50 - failed, tags=["gen_ai.tool.name:search", "status:ok"])
        if failed:
            statsd.increment("agent.tool.calls", failed, tags=["gen_ai.tool.name:search", "status:error"])
        statsd.increment("agent.tool.calls", 50, tags=["gen_ai.tool.name:code", "status:ok"])  # never fails
        if phase("hallucination-rate") == "bad":
            statsd.increment("agent.hallucinations", 1)
        slow = phase("agent-latency-regression") == "bad" and hour_ago_known()
        # 8 s (80 m scaled) of normal burn first, so the 24 h average (over what was seen) is the normal rate
        burst = phase("token-burn") == "bad" and i >= 160
        await sdk.send(latency=2.0 if slow else 0.08, tokens=2000 if burst else 100)

    def all_resolved() -> bool:
        return all(intake.of(key) == ["trigger", "resolve"] for key in KEYS.values())

    try:
        await drive(exporter, step, all_resolved, max_rounds=600, what="every example rule firing and resolving")
    finally:
        statsd.close_socket()
        sdk.close()
        await svc.shutdown()
    assert intake.violations == []
    assert sorted({e["dedup_key"] for e in intake.events}) == sorted(KEYS.values())  # nothing else paged
    triggers: dict[str, dict[str, Any]] = {e["dedup_key"]: e for e in intake.events if e["event_action"] == "trigger"}
    severities = {rule: triggers[key]["payload"]["severity"] for rule, key in KEYS.items()}
    assert severities == {"agent-error-rate": "critical", "agent-latency-regression": "critical",
                          "token-burn": "error", "tool-failure-rate": "error", "hallucination-rate": "warning"}
    errors = triggers[KEYS["agent-error-rate"]]
    assert errors["payload"]["summary"] == ("checkout: 20.0% of agent requests failed in the last 500ms "
                                            "(threshold 5%)")
    assert errors["links"][0]["href"].endswith("/search?service=checkout&tags=%7B%22error%22%3A%22true%22%7D")
    latency = triggers[KEYS["agent-latency-regression"]]["payload"]["custom_details"]
    assert latency["value"] > 3 and latency["numerator"] > 1 and latency["denominator"] < 0.1
    tools = triggers[KEYS["tool-failure-rate"]]["payload"]
    assert tools["summary"] == "Tool search: 20.0% of calls failed in the last 500ms"
