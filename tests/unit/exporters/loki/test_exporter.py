"""The `loki` exporter behind the real exporter helper, against the fake Loki that checks the push API's shape.

429 (with Retry-After) and 5xx are retried on the injected clock; 400 is permanent, logged with Loki's
message, counted, and the next payload still goes out; 413 halves the push; the tenant header, gzip,
Basic auth from the URL and header secrets behave, and no secret reaches a log line.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from exporters import loki
from exporters.loki.config import LokiExporterConfig
from exporters.loki.exporter import INLINE_MAX_RECORDS, LokiExporter, loki_message
from exporters.loki.push import Batch, PushBuilder
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue, PermanentError
from pipeline.exporterhelper import ExporterHelper
from pipeline.logutil import JSONFormatter
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import FakeClock, make_logs, make_metrics, nop_host, nop_settings
from tests.e2e.loki_intake import LokiIntake, Reply

TOO_OLD = ("entry for stream '{level=\"info\", service_name=\"agent\"}' has timestamp too old: "
           "2023-11-14T22:13:20Z, oldest acceptable timestamp is: 2024-05-01T00:00:00Z")


@pytest.fixture
async def intake() -> AsyncIterator[LokiIntake]:
    async with LokiIntake() as i:
        yield i


@dataclasses.dataclass
class Running:
    helper: ExporterHelper
    tel: Telemetry
    clock: FakeClock

    def value(self, name: str, **labels: str) -> float:
        return self.tel.value(name, exporter="loki", **labels)


@pytest.fixture
async def run(intake: LokiIntake) -> AsyncIterator[Any]:
    started: list[ExporterHelper] = []

    async def make(**raw: Any) -> Running:
        raw = {"endpoint": intake.url, "sending_queue": {"enabled": False},
               "retry_on_failure": {"initial_interval": "1s", "max_interval": "4s"}, **raw}
        issues: list[ConfigIssue] = []
        cfg = decode_dataclass(LokiExporterConfig, raw, "exporters.loki", issues)
        assert issues == []
        tel, clock = Telemetry(process_metrics=False), FakeClock()
        settings = dataclasses.replace(nop_settings("loki", Kind.EXPORTER, Signal.LOGS, telemetry=tel), clock=clock)
        helper = ExporterHelper(settings, loki.create(settings, cfg), cfg)
        await helper.start(nop_host())
        started.append(helper)
        return Running(helper, tel, clock)

    yield make
    for h in started:
        await h.shutdown()


def logs(n: int, body: str = "hello") -> Payload:
    return Payload(Signal.LOGS, message=make_logs(n, body=body))


async def consume_with_retries(r: Running, payload: Payload, retries: int) -> list[float]:
    """Consume a payload whose pushes fail `retries` times; returns the waits the retry schedule asked for."""
    task = asyncio.create_task(r.helper.consume(payload))
    for _ in range(retries):
        await r.clock.wait_for_waiters(1)
        r.clock.advance(r.clock.waits[-1])
    await task
    return r.clock.waits


async def test_logs_arrive_in_the_documented_shape(intake: LokiIntake, run: Any) -> None:
    r = await run()
    await r.helper.consume(logs(3))
    assert [(e.labels, e.line) for e in intake.entries] == [
        ((("level", "info"), ("service_name", "agent")), f"hello {i}") for i in range(3)]
    headers = intake.requests[0]["headers"]
    assert headers["Content-Type"] == "application/json" and headers["Content-Encoding"] == "gzip"
    assert headers["User-Agent"].startswith("otelpipe/") and "X-Scope-OrgID" not in headers
    assert intake.violations == [] and r.value("otelpipe_exporter_sent_log_records_total") == 3


async def test_compression_none_sends_plain_json(intake: LokiIntake, run: Any) -> None:
    r = await run(compression="none")
    await r.helper.consume(logs(2))
    assert "Content-Encoding" not in intake.requests[0]["headers"] and len(intake.entries) == 2


async def test_tenant_id_is_sent_as_x_scope_orgid() -> None:
    async with LokiIntake(tenant="team-a") as intake:
        issues: list[ConfigIssue] = []
        cfg = decode_dataclass(LokiExporterConfig, {"endpoint": intake.url, "tenant_id": "team-a"}, "x", issues)
        exporter = LokiExporter(nop_settings("loki", Kind.EXPORTER, Signal.LOGS), cfg)
        await exporter.start(nop_host())
        try:
            await exporter.push(logs(1))
        finally:
            await exporter.shutdown()
        assert intake.requests[0]["headers"]["X-Scope-OrgID"] == "team-a" and len(intake.entries) == 1


async def test_a_loki_that_wants_a_tenant_refuses_a_push_without_one_permanently() -> None:
    async with LokiIntake(tenant="team-a") as intake:
        cfg = LokiExporterConfig(endpoint=intake.url)
        exporter = LokiExporter(nop_settings("loki", Kind.EXPORTER, Signal.LOGS), cfg)
        await exporter.start(nop_host())
        try:
            with pytest.raises(PermanentError, match="HTTP 401: no org id"):
                await exporter.push(logs(1))
        finally:
            await exporter.shutdown()


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_429_and_5xx_are_retried_honouring_retry_after(intake: LokiIntake, run: Any, status: int) -> None:
    r = await run()
    intake.script = [Reply(status, "slow down", {"Retry-After": "7"}), Reply(500, "ingester unavailable")]
    waits = await consume_with_retries(r, logs(2), retries=2)
    assert waits[0] >= 7 and len(waits) == 2
    assert [rq["status"] for rq in intake.requests] == [status, 500, 204] and len(intake.entries) == 2
    assert r.value("otelpipe_exporter_sent_log_records_total") == 2
    assert r.value("otelpipe_exporter_send_failed_log_records_total", reason="retries_exhausted") == 0


async def test_400_is_permanent_logged_with_lokis_message_and_does_not_block_later_data(
        intake: LokiIntake, run: Any, caplog: pytest.LogCaptureFixture) -> None:
    r = await run(sending_queue={"enabled": True, "num_consumers": 1})
    intake.script = [Reply(400, TOO_OLD + "\n")]
    with caplog.at_level(logging.INFO, logger="otelpipe"):
        await r.helper.consume(logs(3, body="old"))
        await r.helper.consume(logs(2, body="new"))
        await intake.wait_for_entries(2)
    assert [e.line for e in intake.entries] == ["new 0", "new 1"]
    assert [rq["status"] for rq in intake.requests] == [400, 204]  # never retried
    assert r.clock.waits == []
    failed = [rec for rec in caplog.records if "failed permanently" in rec.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert TOO_OLD in failed[0].error  # type: ignore[attr-defined]
    assert "returned HTTP 400" in failed[0].error  # type: ignore[attr-defined]
    assert r.value("otelpipe_exporter_send_failed_log_records_total", reason="permanent_error") == 3
    await r.helper.shutdown()
    assert r.value("otelpipe_exporter_sent_log_records_total") == 2


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_other_4xx_are_permanent(intake: LokiIntake, run: Any, status: int) -> None:
    r = await run()
    intake.script = [Reply(status, "nope")]
    with pytest.raises(PermanentError, match=f"HTTP {status}"):
        await r.helper.consume(logs(2))
    assert len(intake.requests) == 1 and r.clock.waits == []


async def test_413_halves_the_push_until_it_fits(intake: LokiIntake, run: Any) -> None:
    r = await run()
    intake.script = [Reply(413, "request entity too large"), Reply(413, "request entity too large")]
    await r.helper.consume(logs(8))
    assert [rq["status"] for rq in intake.requests] == [413, 413, 204, 204, 204]
    assert [rq["entries"] for rq in intake.requests] == [8, 4, 2, 2, 4]
    assert [e.line for e in intake.entries] == [f"hello {i}" for i in range(8)]
    assert r.value("otelpipe_exporter_sent_log_records_total") == 8


async def test_an_entry_too_large_on_its_own_is_given_up_and_counted(intake: LokiIntake, run: Any) -> None:
    r = await run()
    intake.script = [Reply(413, "too large")] * 2
    await r.helper.consume(logs(2))
    assert [rq["entries"] for rq in intake.requests] == [2, 1, 1] and [e.line for e in intake.entries] == ["hello 1"]
    assert r.value("otelpipe_exporter_sent_log_records_total") == 1
    assert r.value("otelpipe_exporter_send_failed_log_records_total", reason="partial_success") == 1


async def test_a_large_payload_is_mapped_off_the_event_loop_and_arrives_whole(
        intake: LokiIntake, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    build = PushBuilder.build

    def spy(self: PushBuilder, raw: bytes) -> Batch:
        threads.append(threading.current_thread().name)
        return build(self, raw)

    monkeypatch.setattr(PushBuilder, "build", spy)
    r = await run()
    n = INLINE_MAX_RECORDS * 3 + 1
    await r.helper.consume(logs(n))
    await r.helper.consume(logs(INLINE_MAX_RECORDS))
    assert [e.line for e in intake.entries] == [f"hello {i}" for i in range(n)] + [
        f"hello {i}" for i in range(INLINE_MAX_RECORDS)]
    assert intake.requests[0]["streams"] == 1
    # the large one in the exporter's own worker thread, the small one inline on the event loop
    assert threads == ["loki-loki_0", threading.current_thread().name]


async def test_an_empty_payload_sends_nothing(intake: LokiIntake, run: Any) -> None:
    r = await run()
    await r.helper.consume(Payload(Signal.LOGS, message=Signal.LOGS.request_type()))
    assert intake.requests == []


async def test_secrets_in_headers_and_the_url_are_sent_but_never_logged(
        intake: LokiIntake, run: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = intake.url.replace("http://", "http://grafana-user:glc_s3cr3t@")
    with caplog.at_level(logging.INFO, logger="otelpipe"):
        r = await run(endpoint=url + "?token=t0k3n")
        await r.helper.consume(logs(1))
        intake.script = [Reply(400, "bad")]
        with pytest.raises(PermanentError) as e:
            await r.helper.consume(logs(1))
        r2 = await run(headers={"X-Api-Key": "hdr-s3cr3t"})
        await r2.helper.consume(logs(1))
    auth = intake.requests[0]["headers"]["Authorization"]
    assert auth == "Basic " + base64.b64encode(b"grafana-user:glc_s3cr3t").decode()
    assert intake.requests[2]["headers"]["X-Api-Key"] == "hdr-s3cr3t"
    text = "\n".join(JSONFormatter().format(rec) for rec in caplog.records) + str(e.value)
    assert "Loki exporter started" in text and "returned HTTP 400" in text
    assert "glc_s3cr3t" not in text and "t0k3n" not in text and "hdr-s3cr3t" not in text


async def test_lifecycle_without_start_and_twice() -> None:
    exporter = LokiExporter(nop_settings("loki", Kind.EXPORTER, Signal.LOGS),
                            LokiExporterConfig(endpoint="http://127.0.0.1:9/loki/api/v1/push"))
    await exporter.shutdown()
    await exporter.start(nop_host())
    await exporter.start(nop_host())
    await exporter.shutdown()
    await exporter.shutdown()


async def test_a_payload_of_another_signal_is_refused_permanently() -> None:
    exporter = LokiExporter(nop_settings("loki", Kind.EXPORTER, Signal.LOGS),
                            LokiExporterConfig(endpoint="http://127.0.0.1:9/loki/api/v1/push"))
    await exporter.start(nop_host())
    try:
        with pytest.raises(PermanentError, match="takes logs, not metrics"):
            await exporter.push(Payload(Signal.METRICS, message=make_metrics(1)))
    finally:
        await exporter.shutdown()


def test_lokis_message_is_kept_on_one_line_and_bounded() -> None:
    assert loki_message(b"entry too old\nfor stream {a=\"b\"}\n", "text/plain") == 'entry too old for stream {a="b"}'
    assert len(loki_message(b"x" * 100_000, "text/plain")) == 1000
    assert loki_message(b"\xff\xfe bad", "text/plain") == "\ufffd\ufffd bad"
