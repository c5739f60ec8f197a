"""Loki end to end: the OpenTelemetry SDK → otelpipe (from YAML) → the fake Loki intake.

The intake (tests/e2e/loki_intake.py) checks every push against Loki's documented push API (path, JSON
shape, label names, timestamps, structured metadata, Content-Type, gzip, X-Scope-OrgID). The values
are checked exactly: every SDK log record arrives once, in the stream of its service and level, with
its time, its trace and span ids and its attributes as structured metadata. Loki's answers: 429 and
5xx are retried, 400 is logged with Loki's message, counted, and later logs still go out. And
`otelpipe validate` warns about a high-cardinality label without failing.
"""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otelpipe.testing import running_service
from pipeline.service import Service
from pipeline.testing import wait_until

from .daemon import ROOT
from .loki_intake import LokiIntake, Reply

TENANT = "agents-prod"
SUPPORT = Resource.create({"service.name": "support-agent", "deployment.environment": "prod",
                           "service.instance.id": "pod-7"})
PLANNER = Resource.create({"service.name": "planner", "deployment.environment": "prod"})

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
processors:
  batch: {{send_batch_size: 1000, timeout: 20ms}}
exporters:
  loki:
    endpoint: "{url}"
    tenant_id: {tenant}
    format: {format}
    labels:
      resource: {{deployment.environment: env}}
    retry_on_failure: {{initial_interval: 10ms, max_interval: 20ms}}
service:
  pipelines:
    logs: {{receivers: [otlp], processors: [batch], exporters: [loki]}}
"""


@pytest.fixture
async def intake() -> AsyncIterator[LokiIntake]:
    async with LokiIntake(tenant=TENANT) as i:
        yield i
        assert i.violations == []


@pytest.fixture
async def svc(intake: LokiIntake) -> AsyncIterator[Service]:
    async with running_service(CONFIG.format(url=intake.url, tenant=TENANT, format="raw")) as s:
        yield s


def sdk_logs(resource: Resource, name: str, emit: Any) -> list[ReadableLogRecord]:
    """The records the SDK makes while `emit(logger)` logs through its logging handler."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    return list(memory.get_finished_logs())


async def send_http(svc: Service, records: list[ReadableLogRecord]) -> None:
    exporter = HttpLogExporter(endpoint=f"http://{svc.endpoint('receiver', 'otlp', 'http')}/v1/logs")
    try:
        assert (await asyncio.to_thread(exporter.export, records)).name == "SUCCESS"
    finally:
        exporter.shutdown()


async def send_grpc(svc: Service, records: list[ReadableLogRecord]) -> None:
    exporter = GrpcLogExporter(endpoint=svc.endpoint("receiver", "otlp", "grpc"), insecure=True)
    try:
        assert (await asyncio.to_thread(exporter.export, records)).name == "SUCCESS"
    finally:
        exporter.shutdown()


def stream(service: str, level: str) -> tuple[tuple[str, str], ...]:
    return (("env", "prod"), ("level", level), ("service_name", service))


async def test_sdk_logs_arrive_once_each_in_their_stream_with_time_ids_and_attributes(
        svc: Service, intake: LokiIntake) -> None:
    tracer = TracerProvider(resource=SUPPORT).get_tracer("agent")

    def support(logger: logging.Logger) -> None:
        with tracer.start_as_current_span("agent.run"):
            for i in range(20):
                logger.warning("tool call %d finished", i, extra={"gen_ai.tool.name": "search", "attempt": i})
        logger.error("outside any span")

    def planner(logger: logging.Logger) -> None:
        for i in range(30):
            logger.info("planned step %d", i)

    support_records = sdk_logs(SUPPORT, "agent.e2e.loki.support", support)
    planner_records = sdk_logs(PLANNER, "agent.e2e.loki.planner", planner)
    await send_http(svc, support_records)
    await send_grpc(svc, planner_records)
    await intake.wait_for_entries(51)
    await wait_until(lambda: svc.telemetry.value("otelpipe_exporter_sent_log_records_total") == 51, 10,
                     "sent counter")

    got = intake.streams()
    assert set(got) == {stream("support-agent", "warn"), stream("support-agent", "error"), stream("planner", "info")}
    assert len(intake.entries) == 51  # each record once
    warn = got[stream("support-agent", "warn")]
    assert [e.line for e in warn] == [f"tool call {i} finished" for i in range(20)]
    assert [e.line for e in got[stream("planner", "info")]] == [f"planned step {i}" for i in range(30)]
    [outside] = got[stream("support-agent", "error")]
    assert outside.line == "outside any span"

    by_line = {r.log_record.body: r.log_record for r in support_records + planner_records}
    for e in intake.entries:
        sdk = by_line[e.line]
        assert e.ts == sdk.timestamp
        assert e.metadata.get("trace_id") == (f"{sdk.trace_id:032x}" if sdk.trace_id else None)
        assert e.metadata.get("span_id") == (f"{sdk.span_id:016x}" if sdk.span_id else None)
        assert e.metadata["code_function_name"] == sdk.attributes["code.function.name"]  # type: ignore[index]
    trace_ids = {e.metadata["trace_id"] for e in warn}
    assert len(trace_ids) == 1 and "trace_id" not in outside.metadata
    assert [(e.metadata["gen_ai_tool_name"], e.metadata["attempt"]) for e in warn] == [
        ("search", str(i)) for i in range(20)]
    assert all("service_instance_id" not in e.metadata for e in intake.entries)  # resources go in labels only

    for r in intake.requests:
        h = r["headers"]
        assert (h["X-Scope-OrgID"], h["Content-Type"], h["Content-Encoding"]) == (TENANT, "application/json", "gzip")
    # as few streams as possible: one per label set in each push
    assert all(r["streams"] == len({e.labels for e in r["sent_entries"]}) for r in intake.requests)


async def test_map_bodies_become_json_lines(intake: LokiIntake) -> None:
    async with running_service(CONFIG.format(url=intake.url, tenant=TENANT, format="json")) as svc:
        memory = InMemoryLogRecordExporter()
        provider = LoggerProvider(resource=SUPPORT)
        provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
        logger = provider.get_logger("agent.events")
        logger.emit(body={"event": "tool.result", "tool": "search", "hits": 3, "ok": True},
                    severity_number=SeverityNumber.INFO, attributes={"step": 1})
        logger.emit(body="plain text", severity_number=SeverityNumber.ERROR)
        logger.emit(body=["a", 2.5], severity_number=SeverityNumber.WARN)
        provider.shutdown()
        await send_http(svc, list(memory.get_finished_logs()))
        await intake.wait_for_entries(3)
    lines = {e.label("level"): orjson.loads(e.line) for e in intake.entries}
    assert lines == {"info": {"body": {"event": "tool.result", "tool": "search", "hits": 3, "ok": True}},
                     "error": {"body": "plain text"}, "warn": {"body": ["a", 2.5]}}
    assert [e.metadata for e in intake.entries if e.label("level") == "info"] == [{"step": "1"}]


async def test_429_and_5xx_are_retried_until_loki_takes_the_logs(svc: Service, intake: LokiIntake) -> None:
    intake.script = [Reply(429, "Ingestion rate limit exceeded"), Reply(500, "ingester unavailable"),
                     Reply(503, "")]
    await send_http(svc, sdk_logs(SUPPORT, "agent.e2e.loki.retry", lambda lg: lg.info("kept through retries")))
    await intake.wait_for_entries(1)
    assert [r["status"] for r in intake.requests] == [429, 500, 503, 204]
    assert [e.line for e in intake.entries] == ["kept through retries"]
    await wait_until(lambda: svc.telemetry.value("otelpipe_exporter_sent_log_records_total") == 1, 10, "sent")


async def test_400_is_logged_with_lokis_message_counted_and_later_logs_still_go_out(
        svc: Service, intake: LokiIntake, caplog: pytest.LogCaptureFixture) -> None:
    too_old = ("entry for stream '{env=\"prod\", level=\"info\", service_name=\"support-agent\"}' has timestamp "
               "too old: 2023-11-14T22:13:20Z, oldest acceptable timestamp is: 2024-05-01T00:00:00Z")
    intake.script = [Reply(400, too_old + "\n")]
    with caplog.at_level(logging.ERROR, logger="otelpipe"):
        await send_http(svc, sdk_logs(SUPPORT, "agent.e2e.loki.old", lambda lg: [lg.info("old %d", i)
                                                                                  for i in range(3)]))
        await intake.wait_for_requests(1)
        await send_http(svc, sdk_logs(SUPPORT, "agent.e2e.loki.new", lambda lg: lg.info("new")))
        await intake.wait_for_entries(1)
        await wait_until(lambda: svc.telemetry.value("otelpipe_exporter_send_failed_log_records_total",
                                                     reason="permanent_error") == 3, 10, "failed counter")
    assert [e.line for e in intake.entries] == ["new"]
    assert [r["status"] for r in intake.requests] == [400, 204]  # never retried
    failed = [r for r in caplog.records if "failed permanently" in r.getMessage()]
    assert len(failed) == 1 and too_old in failed[0].error  # type: ignore[attr-defined]


def test_validate_warns_about_a_high_cardinality_label_and_still_passes(tmp_path: Path) -> None:
    cfg = tmp_path / "loki.yaml"
    cfg.write_text("receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:4318'}}}}\n"
                   "exporters:\n"
                   "  loki:\n"
                   "    endpoint: http://loki:3100/loki/api/v1/push\n"
                   "    labels: {attributes: {session.id: ''}, resource: {k8s.namespace.name: namespace}}\n"
                   "service: {pipelines: {logs: {receivers: [otlp], exporters: [loki]}}}\n")
    r = subprocess.run([sys.executable, "-m", "otelpipe", "validate", "--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False)
    assert r.returncode == 0, r.stderr
    assert "configuration is valid" in r.stdout
    out = r.stdout + r.stderr
    assert "warning: exporters.loki.labels.attributes.session.id: 'session.id' is a high-cardinality" in out
    assert "k8s.namespace.name" not in out


async def test_the_bearer_token_of_an_authenticator_goes_with_every_push(intake: LokiIntake) -> None:
    """`auth.authenticator` (e.g. Loki behind an authenticating gateway): the extension's token on each push."""
    config = CONFIG.format(url=intake.url, tenant=TENANT, format="raw").replace(
        "    retry_on_failure:", "    auth: {authenticator: bearertokenauth/loki}\n    retry_on_failure:").replace(
        "service:\n", "extensions:\n  bearertokenauth/loki: {token: \"l0ki-t0ken\"}\nservice:\n  extensions: "
                      "[bearertokenauth/loki]\n")
    async with running_service(config) as svc:
        await send_http(svc, sdk_logs(PLANNER, "agent.e2e.loki.auth", lambda logger: logger.info("hello")))
        await intake.wait_for_entries(1)
    assert intake.requests and all(r["headers"]["Authorization"] == "Bearer l0ki-t0ken" for r in intake.requests)
