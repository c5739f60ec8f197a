"""The `datadog` exporter behind the real exporter helper, against the fake intake that checks Datadog's API shapes.

Retries (429 with Retry-After, 500) on the injected clock resume a payload where it failed, so a
payload cut into several requests never sends one twice; 403 is permanent and logged once a
minute; 413 halves a request; 400 fails only its own request.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from exporters import datadog
from exporters.datadog.config import DatadogExporterConfig
from exporters.datadog.intake import Limits
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue, PermanentError, RetryableError
from pipeline.exporterhelper import ExporterHelper
from pipeline.logutil import JSONFormatter
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import FakeClock, kv, make_logs, nop_host, nop_settings
from tests.e2e.datadog_intake import DatadogIntake, Reply

T0 = 1_700_000_000


@pytest.fixture
async def intake() -> AsyncIterator[DatadogIntake]:
    i = await DatadogIntake().start()
    yield i
    await i.stop()


@dataclasses.dataclass
class Running:
    helper: ExporterHelper
    tel: Telemetry
    clock: FakeClock

    def value(self, name: str, **labels: str) -> float:
        return self.tel.value(name, exporter="datadog", **labels)


@pytest.fixture
async def run(intake: DatadogIntake) -> AsyncIterator[Any]:
    started: list[ExporterHelper] = []

    async def make(signal: Signal = Signal.METRICS, key: str | None = None, **raw: Any) -> Running:
        raw = {"api": {"key": key or intake.api_key}, "hostname": "h", "metrics": {"endpoint": intake.url},
               "logs": {"endpoint": intake.url}, "sending_queue": {"enabled": False},
               "retry_on_failure": {"initial_interval": "1s", "max_interval": "4s"}, **raw}
        issues: list[ConfigIssue] = []
        cfg = decode_dataclass(DatadogExporterConfig, raw, "exporters.datadog", issues)
        assert issues == []
        tel, clock = Telemetry(process_metrics=False), FakeClock()
        settings = dataclasses.replace(nop_settings("datadog", Kind.EXPORTER, signal, telemetry=tel), clock=clock)
        helper = ExporterHelper(settings, datadog.create(settings, cfg), cfg)
        await helper.start(nop_host())
        started.append(helper)
        return Running(helper, tel, clock)

    yield make
    for h in started:
        await h.shutdown()


def gauges(n: int, name: str = "g", value: float = 1.0, pad: int = 0) -> Payload:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "agent"))
    m = rm.scope_metrics.add().metrics.add(name=name)
    for i in range(n):
        dp = m.gauge.data_points.add(time_unix_nano=T0 * 10**9, as_double=value)
        dp.attributes.append(kv("i", f"{i:04d}" + "x" * pad))
    return Payload(Signal.METRICS, message=req)


async def consume_with_retries(r: Running, payload: Payload, retries: int) -> list[float]:
    """Consume a payload whose sends fail `retries` times; returns the waits the retry schedule asked for."""
    task = asyncio.create_task(r.helper.consume(payload))
    for _ in range(retries):
        await r.clock.wait_for_waiters(1)
        r.clock.advance(r.clock.waits[-1])
    await task
    return r.clock.waits


async def test_metrics_arrive_with_the_documented_shape_and_header(intake: DatadogIntake, run: Any) -> None:
    r = await run()
    await r.helper.consume(gauges(3))
    assert [s["points"] for s in intake.series] == [[{"timestamp": T0, "value": 1.0}]] * 3
    assert intake.series[0]["resources"] == [{"name": "h", "type": "host"}]
    req = intake.requests[0]
    assert req["path"] == "/api/v2/series" and req["headers"]["DD-API-KEY"] == intake.api_key
    assert req["headers"]["Content-Encoding"] == "gzip" and req["headers"]["User-Agent"].startswith("otelpipe/")
    assert intake.violations == [] and r.value("otelpipe_exporter_sent_metric_points_total") == 3


@pytest.mark.parametrize("compression", ["gzip", "deflate", "none"])
async def test_each_compression_is_one_the_intakes_accept(intake: DatadogIntake, run: Any, compression: str) -> None:
    metrics = await run(compression=compression)
    logs = await run(Signal.LOGS, compression=compression)
    await metrics.helper.consume(gauges(2))
    await logs.helper.consume(Payload(Signal.LOGS, message=make_logs(3)))
    assert len(intake.series) == 2 and [e["message"] for e in intake.logs] == ["hello 0", "hello 1", "hello 2"]
    assert {r["headers"].get("Content-Encoding", "none") for r in intake.requests} == {compression}
    assert intake.violations == []


async def test_429_and_500_are_retried_honouring_retry_after(intake: DatadogIntake, run: Any) -> None:
    r = await run()
    intake.script = [Reply(429, {"errors": ["slow down"]}, {"Retry-After": "7"}), Reply(500, {"errors": ["oops"]})]
    waits = await consume_with_retries(r, gauges(2), retries=2)
    assert waits[0] >= 7 and len(waits) == 2
    assert [rq["status"] for rq in intake.requests] == [429, 500, 202] and len(intake.series) == 2
    assert r.value("otelpipe_exporter_sent_metric_points_total") == 2


async def test_a_retry_resumes_after_the_requests_already_accepted(intake: DatadogIntake, run: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exporters.datadog.exporter.SERIES_LIMITS", Limits(max_raw=700, max_sent=700))
    r = await run(compression="none")
    intake.script = [Reply(202), Reply(503), Reply(502)]
    await consume_with_retries(r, gauges(12, pad=40), retries=2)
    statuses = [rq["status"] for rq in intake.requests]
    assert statuses[:3] == [202, 503, 502] and len(statuses) > 4
    sent = [s["tags"][-1] for s in intake.series]
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 12  # every point once: no request sent twice
    assert r.value("otelpipe_exporter_sent_metric_points_total") == 12


async def test_cumulative_points_are_turned_into_deltas_once_whatever_the_retries(intake: DatadogIntake,
                                                                                    run: Any) -> None:
    r = await run(metrics={"endpoint": intake.url, "sums": {"initial_cumulative_monotonic_value": "keep"}})

    def counter(value: int, t: int) -> Payload:
        req = ExportMetricsServiceRequest()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="c")
        m.sum.is_monotonic, m.sum.aggregation_temporality = True, 2
        m.sum.data_points.add(time_unix_nano=t * 10**9, start_time_unix_nano=(T0 - 5) * 10**9, as_int=value)
        return Payload(Signal.METRICS, message=req)

    await r.helper.consume(counter(10, T0))
    intake.script = [Reply(500)]
    await consume_with_retries(r, counter(15, T0 + 10), retries=1)
    assert intake.total("c") == 15 and [v for _, v in intake.points("c")] == [10, 5]


async def test_403_is_permanent_and_logged_once_a_minute_without_the_key(intake: DatadogIntake, run: Any,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    wrong = "fedcba9876543210fedcba9876543210"
    with caplog.at_level(logging.INFO, logger="otelpipe"):
        r = await run(key=wrong)
        for _ in range(3):
            with pytest.raises(PermanentError, match="HTTP 403"):
                await r.helper.consume(gauges(2))
    refused = [rec for rec in caplog.records if "refused the API key" in rec.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert "check api.key" in refused[0].getMessage()
    assert not [rec for rec in caplog.records if "failed permanently" in rec.getMessage()]
    assert r.value("otelpipe_exporter_send_failed_metric_points_total", reason="permanent_error") == 6
    text = "\n".join(JSONFormatter().format(rec) for rec in caplog.records)
    assert wrong not in text and intake.api_key not in text


async def test_413_halves_the_request_and_an_item_too_large_alone_is_counted(intake: DatadogIntake,
                                                                             run: Any) -> None:
    r = await run()
    intake.script = [Reply(413), Reply(413)]
    await r.helper.consume(gauges(4))
    assert [(rq["status"], rq["docs"]) for rq in intake.requests] == [(413, 4), (413, 2), (202, 1), (202, 1), (202, 2)]
    assert len(intake.series) == 4
    intake.script = [Reply(413)]
    await r.helper.consume(gauges(1, name="alone"))
    assert r.value("otelpipe_exporter_send_failed_metric_points_total", reason="partial_success") == 1
    assert r.value("otelpipe_exporter_datadog_skipped_metric_points_total", reason="too_large") == 1
    assert r.value("otelpipe_exporter_sent_metric_points_total") == 4


async def test_400_fails_its_own_request_only(intake: DatadogIntake, run: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exporters.datadog.exporter.SERIES_LIMITS", Limits(max_raw=400, max_sent=400))
    r = await run(compression="none")
    intake.script = [Reply(400, {"errors": ["Bad Request"]})]
    await r.helper.consume(gauges(4))
    refused = intake.requests[0]["docs"]
    assert intake.requests[0]["status"] == 400 and 0 < refused < 4 and len(intake.series) == 4 - refused
    assert r.value("otelpipe_exporter_send_failed_metric_points_total", reason="partial_success") == refused
    assert r.value("otelpipe_exporter_sent_metric_points_total") == 4 - refused
    intake.script = [Reply(400, {"errors": ["Bad Request"]})] * 10
    with pytest.raises(PermanentError, match="HTTP 400: Bad Request"):
        await r.helper.consume(gauges(1))


async def test_unrepresentable_points_are_a_partial_success(intake: DatadogIntake, run: Any) -> None:
    r = await run()
    payload = gauges(3)
    payload.mutable().resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[1].as_double = float("nan")
    await r.helper.consume(payload)
    assert len(intake.series) == 2
    assert r.value("otelpipe_exporter_send_failed_metric_points_total", reason="partial_success") == 1
    assert r.value("otelpipe_exporter_datadog_skipped_metric_points_total", reason="invalid_value") == 1
    assert r.value("otelpipe_exporter_sent_metric_points_total") == 2


async def test_logs_are_one_entry_per_record_in_requests_of_at_most_1000(intake: DatadogIntake, run: Any) -> None:
    r = await run(Signal.LOGS)
    await r.helper.consume(Payload(Signal.LOGS, message=make_logs(2_300)))
    assert [rq["docs"] for rq in intake.requests] == [1000, 1000, 300]
    assert [e["message"] for e in intake.logs] == [f"hello {i}" for i in range(2_300)]
    assert intake.violations == [] and r.value("otelpipe_exporter_sent_log_records_total") == 2_300


async def test_the_exporter_refuses_a_signal_it_was_not_built_for(intake: DatadogIntake, run: Any) -> None:
    r = await run()
    with pytest.raises(PermanentError, match="built for metrics"):
        await r.helper.exporter.push(Payload(Signal.LOGS, message=make_logs(1)))


async def test_a_nameless_metric_does_not_take_the_rest_of_the_request_down(intake: DatadogIntake, run: Any) -> None:
    r = await run()
    payload = gauges(3)
    payload.mutable().resource_metrics[0].scope_metrics[0].metrics.add(name="").gauge.data_points.add(
        time_unix_nano=T0 * 10**9, as_int=1)
    await r.helper.consume(payload)
    assert len(intake.series) == 3 and intake.violations == []
    assert r.value("otelpipe_exporter_send_failed_metric_points_total", reason="partial_success") == 1
    assert r.value("otelpipe_exporter_datadog_skipped_metric_points_total", reason="invalid_name") == 1


async def test_401_is_handled_as_a_refused_key(intake: DatadogIntake, run: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    r = await run(Signal.LOGS)
    intake.script = [Reply(401, {"errors": ["Unauthorized"]})]
    with caplog.at_level(logging.INFO, logger="otelpipe"), pytest.raises(PermanentError, match="HTTP 401"):
        await r.helper.consume(Payload(Signal.LOGS, message=make_logs(2)))
    assert [rec.levelno for rec in caplog.records if "refused the API key (HTTP 401)" in rec.getMessage()] \
        == [logging.ERROR]
    assert r.value("otelpipe_exporter_send_failed_log_records_total", reason="permanent_error") == 2


async def test_a_payload_waiting_for_its_retry_is_not_kept_alive_by_the_exporter(intake: DatadogIntake) -> None:
    # What waits for a retry is the rest of its requests (compressed bodies), not the payload: a payload the
    # helper gave up on must not stay in memory beside the sending queue's own bound.
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(DatadogExporterConfig, {"api": {"key": intake.api_key}, "metrics": {"endpoint": intake.url}},
                           "exporters.datadog", issues)
    exporter = datadog.create(nop_settings("datadog", Kind.EXPORTER, Signal.METRICS), cfg)
    await exporter.start(nop_host())
    try:
        payload = gauges(3)
        payload.serialize()
        before = sys.getrefcount(payload)
        intake.script = [Reply(503)]
        try:
            await exporter.push(payload)
        except RetryableError:
            pass
        assert sys.getrefcount(payload) == before
        await exporter.push(payload)  # the retry resumes: the three points arrive once
        assert len(intake.series) == 3 and [r["status"] for r in intake.requests] == [503, 202]
    finally:
        await exporter.shutdown()
