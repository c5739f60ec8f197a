"""Prometheus exporter: how long series live, and how many there may be.

Series accumulated from delta points (StatsD counters and histograms, SDKs with
delta temporality) have no other copy of their total: expiring them after an
idle `metric_expiration` makes Prometheus see a counter reset when they come
back. They get `delta_metric_expiration` instead, bounded by `max_series`.
Time comes from an injected clock; every exposition is scraped over HTTP and
checked with promtool.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from exporters.prometheus import PrometheusExporter, PrometheusExporterConfig
from pipeline.component import Kind
from pipeline.config.types import Duration, decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.exporterhelper import ExporterHelper
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import nop_host, nop_settings
from tests.testdata.promtools import samples
from tests.unit.exporters.prometheus.test_store import (
    CTX,
    DELTA,
    SEC,
    T0,
    Clock,
    gauge_metric,
    hist,
    hist_metric,
    num,
    request,
    sum_metric,
)

EXPORTER = "prometheus/agents"


def L(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({**CTX, **labels}.items())


@dataclass
class Running:
    exporter: PrometheusExporter
    helper: ExporterHelper
    tel: Telemetry
    clock: Clock

    async def push(self, req: object) -> None:
        await self.helper.consume(Payload(Signal.METRICS, message=req))  # type: ignore[arg-type]

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://{self.exporter.endpoints['http']}/metrics") as resp:
            assert resp.status == 200
            return samples(await resp.read())

    def skipped(self, reason: str) -> float:
        return self.tel.value("otelpipe_exporter_prometheus_skipped_metric_points_total", exporter=EXPORTER,
                              reason=reason)


async def running(**cfg: object) -> Running:
    tel = Telemetry(process_metrics=False)
    settings = nop_settings(EXPORTER, Kind.EXPORTER, Signal.METRICS, telemetry=tel)
    config = PrometheusExporterConfig(endpoint="127.0.0.1:0", **cfg)  # type: ignore[arg-type]
    clock = Clock()
    exp = PrometheusExporter(settings, config, clock=clock, wall_clock=lambda: 1_700_000_500.0)
    helper = ExporterHelper(settings, exp, config)
    await helper.start(nop_host())
    return Running(exp, helper, tel, clock)


@pytest.fixture
async def rx() -> AsyncIterator[Running]:
    r = await running()
    try:
        yield r
    finally:
        await r.helper.shutdown()


def delta_counter(value: int, t: int, **labels: str) -> object:
    return request(sum_metric("tokens", [num(value, labels, start=t - SEC, t=t)], temporality=DELTA))


# ------------------------------------------------------------------ config

def test_defaults_and_validation() -> None:
    cfg = PrometheusExporterConfig()
    assert (cfg.metric_expiration, cfg.delta_metric_expiration, cfg.max_series) == (300.0, 3600.0, 100_000)
    issues: list[ConfigIssue] = []
    decoded = decode_dataclass(PrometheusExporterConfig, {"delta_metric_expiration": "24h", "max_series": 5000},
                               "exporters.prometheus", issues)
    assert issues == [] and decoded.delta_metric_expiration == Duration(86400.0) and decoded.max_series == 5000
    for data, message in (
        ({"delta_metric_expiration": "0s"}, "delta_metric_expiration: must be at least metric_expiration"),
        ({"metric_expiration": "2h"}, "delta_metric_expiration: must be at least metric_expiration"),
        ({"max_series": 0}, "prometheus.max_series: must be at least 1"),
    ):
        issues = []
        decode_dataclass(PrometheusExporterConfig, data, "exporters.prometheus", issues)
        assert any(message in str(i) for i in issues), (data, [str(i) for i in issues])


# ------------------------------------------------------------------ expiry

async def test_delta_series_outlive_metric_expiration(rx: Running) -> None:
    await rx.push(delta_counter(5, T0 + SEC, route="/a"))
    await rx.push(request(sum_metric("requests", [num(7, {"route": "/a"})]),           # cumulative
                          gauge_metric("queue_depth", [num(3)])))
    rx.clock.now += 10 * 60  # an idle burst-to-burst gap, twice metric_expiration
    assert await rx.scrape() == {("tokens_total", L(route="/a")): 5.0}
    # the stream comes back: Prometheus sees the counter go on, not a reset
    await rx.push(delta_counter(3, T0 + 700 * SEC, route="/a"))
    assert await rx.scrape() == {("tokens_total", L(route="/a")): 8.0}


async def test_delta_series_expire_after_delta_metric_expiration(rx: Running) -> None:
    await rx.push(request(sum_metric("tokens", [num(5, {"route": "/a"}, start=T0, t=T0 + SEC)], temporality=DELTA),
                          hist_metric("latency", [hist([1.0], [1, 0], 0.5, start=T0, t=T0 + SEC)], unit="s",
                                      temporality=DELTA)))
    rx.clock.now += 3599
    assert {name for name, _ in await rx.scrape()} == {"tokens_total", "latency_seconds_bucket",
                                                       "latency_seconds_count", "latency_seconds_sum"}
    rx.clock.now += 2
    assert await rx.scrape() == {}
    assert rx.exporter.store.series_count() == 0


async def test_delta_expiry_can_be_shortened_to_metric_expiration() -> None:
    r = await running(delta_metric_expiration=Duration(300.0))
    try:
        await r.push(delta_counter(5, T0 + SEC))
        r.clock.now += 301
        assert await r.scrape() == {}
    finally:
        await r.helper.shutdown()


# ------------------------------------------------------------------ the series limit

async def test_new_series_beyond_max_series_are_refused_and_counted() -> None:
    r = await running(max_series=3)
    try:
        await r.push(request(gauge_metric("g", [num(i, {"k": str(i)}) for i in range(5)])))
        assert len(await r.scrape()) == 3
        assert r.skipped("series_limit") == 2
        assert r.tel.value("otelpipe_exporter_send_failed_metric_points_total", exporter=EXPORTER,
                           reason="partial_success") == 2
        # known series still update
        await r.push(request(gauge_metric("g", [num(40, {"k": "0"}, t=T0 + 2 * SEC)])))
        assert (await r.scrape())[("g", L(k="0"))] == 40.0
        assert r.skipped("series_limit") == 2
    finally:
        await r.helper.shutdown()


async def test_idle_delta_series_make_room_for_new_series_at_the_limit() -> None:
    """Past metric_expiration a delta series lives on only while there is room for it."""
    r = await running(max_series=2)
    try:
        await r.push(delta_counter(5, T0 + SEC, route="/idle"))
        r.clock.now += 100
        await r.push(delta_counter(1, T0 + 101 * SEC, route="/busy"))
        r.clock.now += 250  # /idle: 350 s idle, past metric_expiration; /busy: 250 s
        await r.push(delta_counter(2, T0 + 351 * SEC, route="/new"))
        assert await r.scrape() == {("tokens_total", L(route="/busy")): 1.0, ("tokens_total", L(route="/new")): 2.0}
        assert r.skipped("series_limit") == 0
        # nothing idle long enough left: the next new series is refused
        await r.push(delta_counter(1, T0 + 352 * SEC, route="/third"))
        assert r.skipped("series_limit") == 1
        assert set(await r.scrape()) == {("tokens_total", L(route="/busy")), ("tokens_total", L(route="/new"))}
    finally:
        await r.helper.shutdown()
