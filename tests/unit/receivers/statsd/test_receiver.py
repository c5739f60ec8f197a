"""The statsd receiver through a real UDP socket: real StatsD and DogStatsD clients, raw datagrams, config."""
from __future__ import annotations

import datetime
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import statsd as statsd_client
from datadog.dogstatsd import DogStatsd

from exporters import debug
from pipeline.component import Kind, make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import ByteSize, Duration
from pipeline.errors import ConfigError, RetryableError
from pipeline.model import Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import MetricsSink, nop_host, nop_settings
from receivers.statsd import receiver as statsd
from receivers.statsd.aggregator import DEFAULT_TIMER_BUCKETS
from receivers.statsd.config import (
    HistogramObserverConfig,
    StatsDReceiverConfig,
    SummaryObserverConfig,
    TimerHistogramMappingConfig,
)
from receivers.statsd.parser import DISTRIBUTION, HISTOGRAM, TIMER
from receivers.statsd.receiver import StatsDReceiver, socket_kernel_drops

REFUSED = "otelpipe_receiver_refused_metric_points_total"
ACCEPTED = "otelpipe_receiver_accepted_metric_points_total"
IGNORED = "otelpipe_receiver_statsd_ignored_total"


@dataclass
class Running:
    receiver: StatsDReceiver
    sink: MetricsSink
    tel: Telemetry
    host: str
    port: int

    def send(self, *datagrams: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, (self.host, self.port))

    def refused(self, reason: str) -> float:
        return self.tel.value(REFUSED, receiver="statsd", transport="udp", reason=reason)

    def ignored(self, reason: str) -> float:
        return self.tel.value(IGNORED, receiver="statsd", reason=reason)

    async def flush_after(self, lines: int) -> dict[str, dict]:
        """Wait until `lines` good lines were parsed, flush, and return the points by metric name."""
        await self.receiver.wait_for_lines(lines)
        before = len(self.sink.payloads)
        await self.receiver.force_flush()
        assert len(self.sink.payloads) == before + 1
        return points(self.sink.payloads[-1].message)


def points(msg: object) -> dict[str, dict]:
    """{name: {"kind", "unit", "points": {frozenset(attrs): point}}} for one request."""
    out: dict[str, dict] = {}
    for rm in msg.resource_metrics:  # type: ignore[attr-defined]
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                entry = out.setdefault(m.name, {"kind": kind, "unit": m.unit, "points": {}})
                assert entry["kind"] == kind, f"{m.name} emitted as two types"
                for dp in getattr(m, kind).data_points:
                    key = frozenset((a.key, a.value.string_value) for a in dp.attributes)
                    entry["points"][key] = dp
    return out


def value(entry: dict, **attrs: str) -> float:
    dp = entry["points"][frozenset(attrs.items())]
    return getattr(dp, dp.WhichOneof("value"))


async def start(**cfg: object) -> Running:
    cfg.setdefault("endpoint", "127.0.0.1:0")
    cfg.setdefault("aggregation_interval", Duration(3600))
    tel = Telemetry(process_metrics=False)
    sink = MetricsSink()
    settings = nop_settings("statsd", Kind.RECEIVER, None, telemetry=tel)
    r = statsd.create(settings, StatsDReceiverConfig(**cfg), {Signal.METRICS: sink})  # type: ignore[arg-type]
    await r.start(nop_host())
    host, port = r.endpoints["udp"].rsplit(":", 1)
    return Running(r, sink, tel, host, int(port))


@pytest.fixture
async def rx() -> AsyncIterator[Running]:
    running = await start()
    try:
        yield running
    finally:
        await running.receiver.shutdown()


@pytest.fixture
def no_dd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """DogStatsD adds tags and origin data from these; the tests want exactly the lines they ask for."""
    for var in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_TAGS", "DD_ENTITY_ID", "DD_EXTERNAL_ENV",
                "DD_DOGSTATSD_TAGS", "DD_CARDINALITY", "DATADOG_CARDINALITY", "DD_ORIGIN_DETECTION_ENABLED"):
        monkeypatch.delenv(var, raising=False)


# -- real clients -------------------------------------------------------------------------------------
async def test_statsd_client_every_type(rx: Running) -> None:
    c = statsd_client.StatsClient(rx.host, rx.port)
    try:
        c.incr("jobs")
        c.incr("jobs", 4)
        c.incr("cost", 0.25)
        c.timing("llm.latency", 320)
        c.timing("llm.latency", datetime.timedelta(seconds=1.5))
        c.gauge("queue", 10)
        c.gauge("queue", 5, delta=True)
        c.gauge("queue", -3, delta=True)
        c.gauge("temp", -7)  # negative absolute: the client sends "0|g" then "-7|g" in one datagram
        c.set("users", "alice")
        c.set("users", "bob")
        c.set("users", "alice")
        with c.pipeline() as pipe:  # one multi-line datagram
            pipe.incr("piped")
            pipe.incr("piped", 2)
            pipe.timing("piped.t", 5)
        c.decr("jobs")  # a negative counter increment is refused, as statsd_exporter does
    finally:
        c.close()
    got = await rx.flush_after(16)
    assert got["jobs"]["kind"] == "sum" and value(got["jobs"]) == 5
    assert got["cost"]["points"][frozenset()].as_double == 0.25
    lat = got["llm.latency"]
    assert lat["kind"] == "histogram" and lat["unit"] == "s"
    dp = lat["points"][frozenset()]
    assert (dp.count, dp.sum, dp.min, dp.max) == (2, 1.82, 0.32, 1.5)
    assert list(dp.explicit_bounds) == list(DEFAULT_TIMER_BUCKETS)
    assert value(got["queue"]) == 12
    assert value(got["temp"]) == -7
    assert got["users"]["kind"] == "gauge" and value(got["users"]) == 2
    assert value(got["piped"]) == 3
    assert got["piped.t"]["points"][frozenset()].sum == 0.005
    assert rx.refused("negative_counter") == 1
    assert rx.tel.value(ACCEPTED, receiver="statsd", transport="udp") == 8


async def test_statsd_client_sample_rate(rx: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statsd_client.client.base.random, "random", lambda: 0.0)  # always "sampled in"
    c = statsd_client.StatsClient(rx.host, rx.port)
    try:
        c.incr("sampled", 1, rate=0.5)
        c.incr("sampled", 3, rate=0.1)
        c.timing("sampled.t", 100, rate=0.25)
    finally:
        c.close()
    got = await rx.flush_after(3)
    assert value(got["sampled"]) == 32
    dp = got["sampled.t"]["points"][frozenset()]
    assert dp.count == 4 and dp.sum == pytest.approx(0.4)


async def test_dogstatsd_client(rx: Running, no_dd_env: None) -> None:
    dd = DogStatsd(host=rx.host, port=rx.port, disable_telemetry=True, disable_buffering=True,
                   disable_aggregation=True, origin_detection_enabled=False, disable_background_sender=True)
    cid = DogStatsd(host=rx.host, port=rx.port, disable_telemetry=True, disable_buffering=True,
                    origin_detection_enabled=False, container_id="abc123", constant_tags=["team:ml"])
    try:
        dd.increment("agent.runs", tags=["env:prod", "model:gpt-4o"])
        dd.increment("agent.runs", 2, tags=["model:gpt-4o", "env:prod"])  # same series, tags reordered
        dd.increment("agent.runs", tags=["env:dev", "canary"])  # a tag without a value
        dd.gauge("agent.queue", 7, tags=["env:prod"])
        dd.histogram("agent.tokens", 1500, tags=["env:prod"])
        dd.distribution("agent.tokens.dist", 42)
        dd.timing("tool.latency", 250)
        dd.set("agent.users", "u1")
        dd.set("agent.users", "u2")
        dd.gauge_with_timestamp("agent.backlog", 3, timestamp=1_700_000_000)
        dd.increment("agent.card", cardinality="low")  # `|card:low`: an unknown field, ignored and counted
        dd.decrement("agent.runs")  # refused: negative counter
        dd.event("deploy", "v2 rolled out", tags=["env:prod"])
        dd.service_check("agent.health", DogStatsd.OK)
        cid.increment("in.container")
    finally:
        dd.close_socket()
        cid.close_socket()
    got = await rx.flush_after(12)
    runs = got["agent.runs"]
    assert value(runs, env="prod", model="gpt-4o") == 3
    assert value(runs, env="dev", canary="") == 1
    assert value(got["agent.queue"], env="prod") == 7
    tokens = got["agent.tokens"]
    assert tokens["kind"] == "histogram" and tokens["unit"] == ""
    assert tokens["points"][frozenset({("env", "prod")})].sum == 1500.0
    assert got["agent.tokens.dist"]["points"][frozenset()].sum == 42.0
    assert got["tool.latency"]["unit"] == "s" and got["tool.latency"]["points"][frozenset()].sum == 0.25
    assert value(got["agent.users"]) == 2
    backlog = got["agent.backlog"]["points"][frozenset()]
    assert backlog.as_int == 3 and backlog.time_unix_nano == 1_700_000_000 * 10**9
    assert value(got["agent.card"]) == 1
    assert value(got["in.container"], **{"container.id": "abc123", "team": "ml"}) == 1
    assert rx.refused("negative_counter") == 1
    assert rx.ignored("event") == 1
    assert rx.ignored("service_check") == 1
    assert rx.ignored("unknown_field") == 1


# -- raw datagrams ----------------------------------------------------------------------------------------
async def test_malformed_lines_in_a_datagram_do_not_disturb_the_others(rx: Running) -> None:
    rx.send(b"ok.a:1|c\nbroken\n:1|c\nok.b:2|c|#k:v\nx:1|c|@7\nx:zz|g\nx:1|q\n" + b"n" * 2000 + b":1|c\nok.c:5|g",
            b"ok.d:1:2:3|h\n_e{2,2}:ab|cd\n_sc|check|1\nok.e:9|c|#k:v|future:field")
    got = await rx.flush_after(5)
    assert value(got["ok.a"]) == 1
    assert value(got["ok.b"], k="v") == 2
    assert value(got["ok.c"]) == 5
    assert got["ok.d"]["points"][frozenset()].count == 3
    assert value(got["ok.e"], k="v") == 9
    assert {r: rx.refused(r) for r in ("malformed_line", "empty_name", "bad_sample_rate", "bad_value",
                                       "unknown_type", "name_too_long")} == {
        "malformed_line": 1, "empty_name": 1, "bad_sample_rate": 1, "bad_value": 1, "unknown_type": 1,
        "name_too_long": 1}
    assert (rx.ignored("event"), rx.ignored("service_check"), rx.ignored("unknown_field")) == (1, 1, 1)
    assert rx.tel.value("otelpipe_receiver_statsd_lines_total", receiver="statsd") == 5
    assert rx.tel.value("otelpipe_receiver_statsd_datagrams_total", receiver="statsd") == 2


async def test_non_utf8_lines_are_refused_alone(rx: Running) -> None:
    rx.send(b"a:1|c\n\xff\xfe:1|c\nb:1|c", b"\xc3(bad:1|c", b"c:1|c")
    got = await rx.flush_after(3)
    assert set(got) == {"a", "b", "c"}
    assert rx.refused("invalid_utf8") == 2


async def test_relative_gauges_persist_across_flushes(rx: Running) -> None:
    rx.send(b"g:10|g\ng:+5|g")
    assert value((await rx.flush_after(2))["g"]) == 15
    rx.send(b"g:-20|g")
    assert value((await rx.flush_after(3))["g"]) == -5


async def test_oversized_datagrams_keep_their_complete_lines() -> None:
    r = await start(max_packet_size=40)
    try:
        r.send(b"first:1|c\nsecond:2|c\nthird:3|c\nfourth:4|c\nfifth:5|c")  # cut at byte 40
        got = await r.flush_after(3)
        assert set(got) == {"first", "second", "third"}
        assert r.refused("packet_too_large") == 1
    finally:
        await r.receiver.shutdown()


# -- schedule, lifecycle, delivery ------------------------------------------------------------------------
async def test_periodic_flush_delivers_each_interval() -> None:
    r = await start(aggregation_interval=Duration(0.02))
    try:
        r.send(b"tick:1|c")
        await r.sink.wait_for_items(1)
        r.send(b"tick:2|c")
        await r.sink.wait_for_items(2)
        vals = [p.message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0].as_int
                for p in r.sink.payloads]
        assert vals == [1, 2]
        first, second = (p.message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
                         for p in r.sink.payloads)
        assert second.start_time_unix_nano == first.time_unix_nano
    finally:
        await r.receiver.shutdown()


async def test_shutdown_flushes_what_is_aggregated_and_is_idempotent() -> None:
    r = await start()
    r.send(b"last:7|c")
    await r.receiver.wait_for_lines(1)
    await r.receiver.shutdown()
    assert len(r.sink.payloads) == 1
    assert value(points(r.sink.payloads[0].message)["last"]) == 7
    await r.receiver.shutdown()
    assert len(r.sink.payloads) == 1


async def test_shutdown_drains_the_socket_before_closing() -> None:
    r = await start()
    r.send(b"unread:1|c")  # no await in between: the loop never ran the reader
    await r.receiver.shutdown()
    assert value(points(r.sink.payloads[0].message)["unread"]) == 1


async def test_shutdown_without_start() -> None:
    sink = MetricsSink()
    r = statsd.create(nop_settings("statsd", Kind.RECEIVER, None), StatsDReceiverConfig(), {Signal.METRICS: sink})
    await r.shutdown()
    await r.shutdown()
    assert sink.payloads == []


async def test_a_failing_pipeline_is_counted_and_the_receiver_goes_on(rx: Running) -> None:
    rx.sink.fail_with = RetryableError("exporter down")
    rx.sink.fail_times = 1
    rx.send(b"a:1|c\nb:1|g")
    await rx.receiver.wait_for_lines(2)
    await rx.receiver.force_flush()
    assert rx.sink.payloads == []
    assert rx.refused("unavailable") == 2
    rx.send(b"a:1|c")
    got = await rx.flush_after(3)
    assert value(got["a"]) == 1
    assert rx.tel.value(ACCEPTED, receiver="statsd", transport="udp") == 1


async def test_a_parser_bug_costs_one_batch_not_the_receiver(rx: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("bug")

    with monkeypatch.context() as m:
        m.setattr(rx.receiver._parser, "parse", boom)
        rx.send(b"lost:1|c")
        await rx.receiver.force_flush()
    assert rx.refused("internal_error") == 1
    rx.send(b"kept:1|c")
    got = await rx.flush_after(1)
    assert set(got) == {"kept"}


async def test_socket_buffer_and_kernel_drops_are_exposed() -> None:
    # A tiny receive buffer, and datagrams sent while the event loop cannot read: the kernel must drop.
    r = await start(socket_buffer_size=ByteSize(4096))
    try:
        assert r.tel.value("otelpipe_receiver_statsd_socket_buffer_bytes", receiver="statsd") == \
            r.receiver.socket_buffer_bytes > 0
        assert r.tel.value("otelpipe_receiver_statsd_kernel_drops", receiver="statsd") == 0
        sent = 2000
        r.send(*[b"flood:1|c|#pad:" + b"x" * 200 for _ in range(sent)])
        await r.receiver.force_flush()
        drops = r.tel.value("otelpipe_receiver_statsd_kernel_drops", receiver="statsd")
        assert drops > 0
        assert r.receiver.lines_received + drops == sent  # every datagram is either parsed or a kernel drop
        assert value(points(r.sink.payloads[-1].message)["flood"], pad="x" * 200) == r.receiver.lines_received
    finally:
        await r.receiver.shutdown()
    # after shutdown the gauge keeps the last reading instead of touching a closed socket
    assert r.tel.value("otelpipe_receiver_statsd_kernel_drops", receiver="statsd") == drops


async def test_large_buffer_is_granted_or_reported() -> None:
    r = await start(socket_buffer_size=ByteSize(8 * 1024 * 1024))
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
        # With CAP_NET_ADMIN the full size is forced past rmem_max; without it the kernel caps it there.
        assert r.receiver.socket_buffer_bytes >= 2 * min(8 * 1024 * 1024, rmem_max)
    finally:
        await r.receiver.shutdown()


def test_kernel_drops_of_a_plain_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        assert socket_kernel_drops(s) == 0


async def test_configured_mapping_reaches_the_aggregator() -> None:
    r = await start(enable_metric_type=True, timer_histogram_mapping=(
        TimerHistogramMappingConfig(statsd_type="timer", observer_type="summary",
                                    summary=SummaryObserverConfig(percentiles=(50, 100))),
        TimerHistogramMappingConfig(statsd_type="histogram", observer_type="histogram",
                                    histogram=HistogramObserverConfig(buckets=(1.0, 10.0))),
        TimerHistogramMappingConfig(statsd_type="distribution", observer_type="gauge"),
    ))
    try:
        r.send(b"t:100|ms\nt:300|ms\nt:200|ms\nh:5|h\nd:1|d\nd:4|d")
        got = await r.flush_after(6)
        t = got["t"]["points"][frozenset({("metric_type", "timing")})]
        assert [(q.quantile, q.value) for q in t.quantile_values] == [(0.5, 0.2), (1.0, 0.3)]
        h = got["h"]["points"][frozenset({("metric_type", "histogram")})]
        assert list(h.explicit_bounds) == [1.0, 10.0] and list(h.bucket_counts) == [0, 1, 0]
        assert value(got["d"], metric_type="distribution") == 4.0
    finally:
        await r.receiver.shutdown()


async def test_the_port_in_use_fails_start() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = statsd.create(nop_settings("statsd", Kind.RECEIVER, None),
                          StatsDReceiverConfig(endpoint=f"127.0.0.1:{port}"), {Signal.METRICS: MetricsSink()})
        with pytest.raises(OSError):
            await r.start(nop_host())
        await r.shutdown()


# -- config -----------------------------------------------------------------------------------------------
FACTORIES = make_factory_map([statsd.FACTORY, debug.FACTORY])


def load(receivers_yaml: str) -> object:
    return load_text(f"""
receivers:
{receivers_yaml}
exporters:
  debug: {{}}
service:
  pipelines:
    metrics: {{receivers: [statsd], exporters: [debug]}}
""", FACTORIES)


def problems(receivers_yaml: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(receivers_yaml)
    return [str(i) for i in e.value.issues if not i.warning]


def test_config_defaults() -> None:
    cfg = load("  statsd:\n").receivers  # type: ignore[attr-defined]
    [c] = cfg.values()
    assert c == StatsDReceiverConfig()
    assert (c.endpoint, c.aggregation_interval, c.enable_metric_type, c.max_packet_size, c.socket_buffer_size) == \
        ("localhost:8125", 10.0, False, 65535, 8 * 1024 * 1024)
    assert c.listeners() == [("udp", "localhost:8125", "endpoint")]
    assert statsd.FACTORY.type == "statsd" and set(statsd.FACTORY.signals) == {Signal.METRICS}


def test_config_full() -> None:
    cfg = load("""  statsd:
    endpoint: 127.0.0.1:18125
    transport: udp
    aggregation_interval: 60s
    enable_metric_type: true
    max_packet_size: 1432
    socket_buffer_size: 32MiB
    timer_histogram_mapping:
      - statsd_type: timing
        observer_type: histogram
        histogram: {buckets: [0.1, 1, 10]}
      - statsd_type: distribution
        observer_type: summary
        summary: {quantiles: [0.5, 0.99]}
      - statsd_type: histogram
        observer_type: gauge
""").receivers  # type: ignore[attr-defined]
    [c] = cfg.values()
    assert c.aggregation_interval == 60.0 and c.socket_buffer_size == 32 * 1024 * 1024
    obs = c.observers()
    assert (obs[TIMER].kind, obs[TIMER].buckets) == ("histogram", (0.1, 1.0, 10.0))
    assert (obs[DISTRIBUTION].kind, obs[DISTRIBUTION].quantiles) == ("summary", (0.5, 0.99))
    assert obs[HISTOGRAM].kind == "gauge"


def test_config_typo_is_rejected_with_its_path() -> None:
    [p] = problems("  statsd:\n    aggregation_intervall: 5s\n")
    assert "receivers.statsd.aggregation_intervall" in p and "did you mean 'aggregation_interval'" in p


@pytest.mark.parametrize(("yaml_body", "path", "words"), [
    ("aggregation_interval: 0s", "receivers.statsd.aggregation_interval", "greater than 0"),
    ("max_packet_size: 70000", "receivers.statsd.max_packet_size", "between 1 and 65535"),
    ("endpoint: localhost", "receivers.statsd.endpoint", "missing ':port'"),
    ("transport: tcp", "receivers.statsd.transport", "must be one of 'udp'"),
    ("timer_histogram_mapping: [{statsd_type: gauge}]", "receivers.statsd.timer_histogram_mapping[0].statsd_type",
     "must be one of timing"),
    ("timer_histogram_mapping: [{statsd_type: timing, observer_type: exponential}]",
     "receivers.statsd.timer_histogram_mapping[0].observer_type", "must be one of"),
    ("timer_histogram_mapping: [{statsd_type: timing, histogram: {buckets: [1, 1, 2]}}]",
     "receivers.statsd.timer_histogram_mapping[0].histogram.buckets", "strictly increasing"),
    ("timer_histogram_mapping: [{statsd_type: timing, observer_type: summary, summary: {quantiles: [1.5]}}]",
     "receivers.statsd.timer_histogram_mapping[0].summary.quantiles", "between 0 and 1"),
    (("timer_histogram_mapping: [{statsd_type: timing, observer_type: summary, "
      "summary: {quantiles: [0.5], percentiles: [50]}}]"),
     "receivers.statsd.timer_histogram_mapping[0].summary", "not both"),
    ("timer_histogram_mapping: [{statsd_type: timing, observer_type: gauge, histogram: {buckets: [1]}}]",
     "receivers.statsd.timer_histogram_mapping[0].histogram", "only applies to observer_type 'histogram'"),
    ("timer_histogram_mapping: [{statsd_type: timing}, {statsd_type: timer}]",
     "receivers.statsd.timer_histogram_mapping[1].statsd_type", "already mapped"),
])
def test_config_bad_values(yaml_body: str, path: str, words: str) -> None:
    found = problems(f"  statsd:\n    {yaml_body}\n")
    assert any(f"{path}: " in p and words in p for p in found), found


def test_config_udp_port_clash_between_two_receivers() -> None:
    with pytest.raises(ConfigError) as e:
        load_text("""
receivers:
  statsd: {endpoint: "0.0.0.0:9125"}
  statsd/other: {endpoint: "127.0.0.1:9125"}
exporters:
  debug: {}
service:
  pipelines:
    metrics: {receivers: [statsd, statsd/other], exporters: [debug]}
""", FACTORIES)
    assert any("udp port 9125 is already used" in str(i) for i in e.value.issues)


async def test_lines_with_blank_names_are_refused_one_by_one(rx: Running) -> None:
    """A name with nothing visible in it (`" :1|c"`) can never become a metric: refused, the rest kept."""
    rx.send(b"ok.a:1|c\n :1|c\n\t:2|g\n \xc2\xa0\xe2\x80\x8b:3|ms\nok.b:2|c", b"   :1|c|#k:v", b" padded.name:4|c")
    got = await rx.flush_after(3)
    assert set(got) == {"ok.a", "ok.b", " padded.name"}
    assert value(got["ok.a"]) == 1 and value(got["ok.b"]) == 2
    assert rx.refused("invalid_name") == 4
    assert rx.refused("empty_name") == 0
