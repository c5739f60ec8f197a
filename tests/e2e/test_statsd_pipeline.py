"""StatsD end to end: the `statsd` and DogStatsD clients → otelpipe (from YAML) → OTLP/gRPC backend."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import statsd as statsd_client
from datadog.dogstatsd import DogStatsd

from otelpipe import components
from otelpipe.testing import running_service
from pipeline.component import Kind
from pipeline.model import Signal
from pipeline.service import Service
from receivers.statsd import receiver as statsd
from receivers.statsd.aggregator import SCOPE_NAME, SCOPE_VERSION

from .backends import GrpcBackend

CONFIG = """
receivers:
  statsd:
    endpoint: 127.0.0.1:0
    aggregation_interval: 1h   # the test flushes by hand
    enable_metric_type: true
processors:
  batch: {{send_batch_size: 1000, timeout: 20ms}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{port}
    tls: {{insecure: true}}
service:
  pipelines:
    metrics: {{receivers: [statsd], processors: [batch], exporters: [otlp]}}
"""


def factories() -> dict:
    fmap = {k: dict(v) for k, v in components.factories().items()}
    fmap[Kind.RECEIVER].setdefault(statsd.FACTORY.type, statsd.FACTORY)
    return fmap


@pytest.fixture
async def backend() -> AsyncIterator[GrpcBackend]:
    b = GrpcBackend()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def svc(backend: GrpcBackend) -> AsyncIterator[Service]:
    async with running_service(CONFIG.format(port=backend.port), factories()) as s:
        yield s


async def test_statsd_and_dogstatsd_lines_reach_the_backend(svc: Service, backend: GrpcBackend,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_TAGS", "DD_ENTITY_ID", "DD_EXTERNAL_ENV"):
        monkeypatch.delenv(var, raising=False)
    host, port = svc.endpoint("receiver", "statsd", "udp").rsplit(":", 1)
    receiver = svc.component("receiver", "statsd")
    plain = statsd_client.StatsClient(host, int(port))
    dd = DogStatsd(host=host, port=int(port), disable_telemetry=True, disable_buffering=True,
                   origin_detection_enabled=False)
    try:
        plain.incr("jobs", 3)
        plain.timing("step", 40)
        dd.increment("jobs", tags=["env:prod"])
        dd.gauge("depth", 4, tags=["env:prod"])
        dd.event("deploy", "done")
    finally:
        plain.close()
        dd.close_socket()
    await receiver.wait_for_lines(4)
    await receiver.force_flush()
    await backend.wait_for(Signal.METRICS, 4)
    got = {}
    for req in backend.requests[Signal.METRICS]:
        for rm in req.resource_metrics:  # type: ignore[attr-defined]
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    for dp in getattr(m, kind).data_points:
                        attrs = tuple(sorted((a.key, a.value.string_value) for a in dp.attributes))
                        got[(m.name, kind, attrs)] = dp
    assert got[("jobs", "sum", (("metric_type", "counter"),))].as_int == 3
    assert got[("jobs", "sum", (("env", "prod"), ("metric_type", "counter")))].as_int == 1
    assert got[("depth", "gauge", (("env", "prod"), ("metric_type", "gauge")))].as_int == 4
    step = got[("step", "histogram", (("metric_type", "timing"),))]
    assert (step.count, step.sum) == (1, 0.04)
    tel = svc.telemetry
    assert tel.value("otelpipe_receiver_accepted_metric_points_total", receiver="statsd") == 4
    assert tel.value("otelpipe_receiver_statsd_ignored_total", receiver="statsd", reason="event") == 1


UUID_CONFIG = """
receivers:
  statsd: {endpoint: "127.0.0.1:0", aggregation_interval: 1h}   # the test flushes by hand
processors:
  uuid_normalize: {}
exporters:
  prometheus: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    metrics: {receivers: [statsd], processors: [uuid_normalize], exporters: [prometheus]}
"""


async def test_uuid_routes_normalized_into_one_series_keep_their_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 increments on 200 distinct UUID routes: one `{uuid}` series worth 200, not 1."""
    import uuid

    import aiohttp

    from tests.testdata.promtools import samples

    for var in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_TAGS", "DD_ENTITY_ID", "DD_EXTERNAL_ENV"):
        monkeypatch.delenv(var, raising=False)
    async with running_service(UUID_CONFIG, factories()) as svc:
        receiver = svc.component("receiver", "statsd")
        host, port = svc.endpoint("receiver", "statsd", "udp").rsplit(":", 1)
        dd = DogStatsd(host=host, port=int(port), disable_telemetry=True, disable_buffering=True,
                       origin_detection_enabled=False)
        try:
            for i in range(200):
                dd.increment("api.calls", tags=[f"route:/v1/agents/{uuid.UUID(int=i + 1)}/runs", "method:post"])
        finally:
            dd.close_socket()
        await receiver.wait_for_lines(200)
        await receiver.force_flush()
        url = f"http://{svc.endpoint('exporter', 'prometheus', 'http')}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200
            text = await resp.text()
        tel = svc.telemetry
        merged = tel.value("otelpipe_processor_dropped_metric_points_total", processor="uuid_normalize",
                           reason="merged")
    got = {labels: v for (name, labels), v in samples(text).items() if name == "api_calls_total"}
    assert got == {frozenset({"route": "/v1/agents/{uuid}/runs", "method": "post", "instance": "",
                              "otel_scope_name": SCOPE_NAME, "otel_scope_version": SCOPE_VERSION}.items()): 200.0}
    assert merged == 199  # the 199 points merged into another one are accounted for
