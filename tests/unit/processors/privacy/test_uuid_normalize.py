"""uuid_normalize: every detector, what is and is not touched, the wire path, config and properties."""
from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Exemplar,
    Metric,
)

from pipeline.component import Kind, make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError
from pipeline.model import Payload, Signal
from pipeline.testing import (
    MetricsSink,
    kv,
    make_logs,
    make_metrics,
    make_traces,
    nop_settings,
)
from processors.privacy.uuid_normalize import (
    FACTORY,
    Normalizer,
    UUIDNormalize,
    UUIDNormalizeConfig,
)

from .oracle import uuid_reference

U = "f50ae695-14da-8c65-9ce2-b10cccdaebf9"


def norm(text: str, **kw: object) -> str:
    return Normalizer(UUIDNormalizeConfig(**kw))(text)  # type: ignore[arg-type]


def attrs_of(item: object) -> dict[str, object]:
    out = {}
    for a in item.attributes:  # type: ignore[attr-defined]
        which = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, which) if which else None
    return out


@pytest.mark.parametrize("text,expected", [
    (f"/v1/agents/{U}/runs", "/v1/agents/{uuid}/runs"),
    (f"/v1/agents/{U.upper()}/runs", "/v1/agents/{uuid}/runs"),
    (f"urn:uuid:{U}", "{uuid}"),
    (f"URN:UUID:{U}", "{uuid}"),
    (f"id {{{U}}} end", "id {uuid} end"),
    (f"a={U},b={U}", "a={uuid},b={uuid}"),
    (f"x{U}", f"x{U}"),  # inside a longer word: not an id on its own
    (f"{U}0", f"{U}0"),
    ("/users/12345/", "/users/{id}/"),
    ("/users/12345", "/users/{id}"),
    ("GET /users/12345?expand=1", "GET /users/{id}?expand=1"),
    ("/users/12345abc/", "/users/12345abc/"),
    ("/v2/items", "/v2/items"),
    ("order 12345", "order 12345"),  # a number outside a path stays
    ("trace 4bf92f3577b34da6a3ce929d0e0e4736 done", "trace {hex} done"),
    ("sha 3f9a1c2b0d4e5f6a", "sha {hex}"),
    ("deadbeefdeadbeefdeadbeef", "deadbeefdeadbeefdeadbeef"),  # no digit: a word, not an id
    ("3f9a1c2b0d4e5f6", "3f9a1c2b0d4e5f6"),  # 15 characters
    ("3F9a1c2b0d4e5f6A", "3F9a1c2b0d4e5f6A"),  # mixed case
    ("run 01ARZ3NDEKTSV4RRFFQ69G5FAV", "run {ulid}"),
    ("run 01arz3ndektsv4rrffq69g5fav", "run {ulid}"),
    ("ABCDEFGHJKMNPQRSTVWXYZABCD", "ABCDEFGHJKMNPQRSTVWXYZABCD"),  # starts with a letter > 7
    ("chat gpt-4o", "chat gpt-4o"),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022"),
])
def test_detectors(text: str, expected: str) -> None:
    assert norm(text) == expected


def test_detectors_switch_off_and_replacement() -> None:
    text = f"/u/12345/{U}/4bf92f3577b34da6a3ce929d0e0e4736/01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert norm(text, replacement=":uuid") == "/u/{id}/:uuid/{hex}/{ulid}"
    assert norm(text, numeric_path_segments=False, hex_ids=False, ulids=False) == \
        "/u/12345/{uuid}/4bf92f3577b34da6a3ce929d0e0e4736/01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_user_patterns_run_after_builtins_with_group_references() -> None:
    cfg = UUIDNormalizeConfig(patterns=(
        decode_dataclass(__import__("processors.privacy.uuid_normalize", fromlist=["PatternConfig"]).PatternConfig,
                         {"regex": r"/tenants/([a-z]+)-\d+", "replacement": r"/tenants/\1-{n}"}, "p", []),))
    n = Normalizer(cfg)
    assert n(f"/tenants/acme-42/runs/{U}") == "/tenants/acme-{n}/runs/{uuid}"
    assert n.take_counts() == {"uuid": 1, "pattern": 1}


# -- what is touched -----------------------------------------------------------------------------

def test_spans_names_and_selected_attributes_only() -> None:
    msg = make_traces(2, attrs={"http.route": f"/v1/agents/{U}/runs", "url.full": f"https://h/v1/agents/{U}",
                                "gen_ai.agent.id": U, "rpc.method": f"Get/{U}", "http.response.status_code": 200})
    rs = msg.resource_spans[0]
    rs.resource.attributes.append(kv("service.instance.id", U))
    for sp in rs.scope_spans[0].spans:
        sp.name = f"GET /users/{U}"
    trace_ids = [sp.trace_id for sp in rs.scope_spans[0].spans]
    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.TRACES)(Payload(Signal.TRACES, message=msg))
    rs = out.message.resource_spans[0]
    for sp in rs.scope_spans[0].spans:
        assert sp.name == "GET /users/{uuid}"
        assert attrs_of(sp) == {"http.route": "/v1/agents/{uuid}/runs", "url.full": f"https://h/v1/agents/{U}",
                                "gen_ai.agent.id": U, "rpc.method": "Get/{uuid}", "http.response.status_code": 200}
    assert [sp.trace_id for sp in rs.scope_spans[0].spans] == trace_ids
    assert attrs_of(rs.resource)["service.instance.id"] == U


def test_span_names_can_be_left_alone() -> None:
    msg = make_traces(1, name=f"run {U}")
    out = UUIDNormalize(UUIDNormalizeConfig(span_names=False), Signal.TRACES)(Payload(Signal.TRACES, message=msg))
    assert out.message.resource_spans[0].scope_spans[0].spans[0].name == f"run {U}-0"


def test_array_values_of_selected_attributes() -> None:
    msg = make_traces(1, attrs={"http.route": [f"/a/{U}", "/b/7"]})
    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.TRACES)(Payload(Signal.TRACES, message=msg))
    vals = out.message.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.array_value.values
    assert [v.string_value for v in vals] == ["/a/{uuid}", "/b/{id}"]


def test_logs_only_listed_attributes_and_never_bodies() -> None:
    msg = make_logs(1, body=f"conversation {U}")
    rec = msg.resource_logs[0].scope_logs[0].log_records[0]
    rec.attributes.extend([kv("http.route", f"/x/{U}"), kv("session", U)])
    p = Payload(Signal.LOGS, message=msg)
    assert UUIDNormalize(UUIDNormalizeConfig(), Signal.LOGS)(p).raw_cached is None or True
    assert attrs_of(rec)["http.route"] == f"/x/{U}"  # default log_attributes is empty
    normalize = UUIDNormalize(UUIDNormalizeConfig(log_attributes=("http.route",)), Signal.LOGS)
    out = normalize(Payload(Signal.LOGS, message=msg))
    rec = out.message.resource_logs[0].scope_logs[0].log_records[0]
    assert attrs_of(rec) == {"http.route": "/x/{uuid}", "session": U}
    assert rec.body.string_value.startswith(f"conversation {U}")


def test_metrics_all_data_point_attributes_by_default_or_only_listed() -> None:
    def msg():  # type: ignore[no-untyped-def]
        m = make_metrics(2)
        for dp in m.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points:
            dp.attributes.extend([kv("http.route", f"/r/{U}"), kv("run", U)])
        m.resource_metrics[0].resource.attributes.append(kv("service.instance.id", U))
        return m

    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.METRICS)(Payload(Signal.METRICS, message=msg()))
    rm = out.message.resource_metrics[0]
    for dp in rm.scope_metrics[0].metrics[0].sum.data_points:
        assert attrs_of(dp)["http.route"] == "/r/{uuid}" and attrs_of(dp)["run"] == "{uuid}"
    assert attrs_of(rm.resource)["service.instance.id"] == U
    out = UUIDNormalize(UUIDNormalizeConfig(metric_attributes=("run",)), Signal.METRICS)(
        Payload(Signal.METRICS, message=msg()))
    dp = out.message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    assert attrs_of(dp)["http.route"] == f"/r/{U}" and attrs_of(dp)["run"] == "{uuid}"


# -- the wire path ------------------------------------------------------------------------------

def test_request_without_candidates_keeps_its_bytes_and_is_not_decoded() -> None:
    raw = Payload(Signal.TRACES, message=make_traces(10, attrs={"http.route": "/v1/agents"})).serialize()
    p = Payload(Signal.TRACES, raw=raw, items=10)
    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.TRACES)(p)
    assert out is p and out.raw_cached is raw and p._message is None


def test_candidate_in_an_unselected_place_keeps_the_bytes() -> None:
    msg = make_traces(3, attrs={"gen_ai.agent.id": U})
    raw = Payload(Signal.TRACES, message=msg).serialize()
    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.TRACES)(Payload(Signal.TRACES, raw=raw))
    assert out.raw_cached is raw


def test_changed_request_gets_new_wire_bytes() -> None:
    raw = Payload(Signal.TRACES, message=make_traces(3, attrs={"http.route": f"/a/{U}"})).serialize()
    p = Payload(Signal.TRACES, raw=raw)
    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.TRACES)(p)
    assert out is p and p._message is None  # edited on the wire: never decoded
    assert out.raw_cached is not None and out.raw_cached != raw
    decoded = Signal.TRACES.request_type.FromString(out.serialize())
    assert {attrs_of(s)["http.route"] for s in decoded.resource_spans[0].scope_spans[0].spans} == {"/a/{uuid}"}


@pytest.mark.parametrize("backend", ["c", "python"])
@pytest.mark.parametrize("value", [f"/a/{U}", "/a/123", "4bf92f3577b34da6a3ce929d0e0e4736",
                                   "01ARZ3NDEKTSV4RRFFQ69G5FAV", "4bf92f3577b34da6a3ce929d0e0e4736" * 3,
                                   f"urn:uuid:{U}", f"{{{U}}}"])
def test_bytes_prefilter_lets_every_detector_through(value: str, backend: str) -> None:
    raw = Payload(Signal.TRACES, message=make_traces(1, attrs={"http.route": value})).serialize()
    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.TRACES, native=backend == "c")(Payload(Signal.TRACES, raw=raw))
    assert attrs_of(out.message.resource_spans[0].scope_spans[0].spans[0])["http.route"] != value


def test_nothing_selected_is_a_no_op() -> None:
    p = Payload(Signal.LOGS, message=make_logs(2))
    assert UUIDNormalize(UUIDNormalizeConfig(), Signal.LOGS)(p) is p


# -- config and factory -------------------------------------------------------------------------

def test_default_config_and_factory() -> None:
    issues: list = []
    cfg = decode_dataclass(UUIDNormalizeConfig, {}, "processors.uuid_normalize", issues)
    assert issues == [] and cfg.metric_attributes is None and "http.route" in cfg.span_attributes
    assert FACTORY.type == "uuid_normalize" and FACTORY.kind is Kind.PROCESSOR and set(FACTORY.signals) == set(Signal)


@pytest.mark.parametrize("raw,path", [
    ({"patterns": [{"regex": "("}]}, "patterns[0].regex"),
    ({"patterns": [{"regex": "ok", "replacement": "x"}, {"replacement": "y"}]}, "patterns[1].regex"),
    ({"patterns": [{"regex": "a*"}]}, "patterns[0].regex"),
    ({"patterns": [{"regex": "(a)", "replacement": r"\2"}]}, "patterns[0].replacement"),
    ({"replacement": U}, "replacement"),
    ({"span_attribute": ["x"]}, "span_attribute"),
    ({"hex_ids": "yes"}, "hex_ids"),
])
def test_bad_config_is_reported_with_its_key_path(raw: dict, path: str) -> None:
    issues: list = []
    decode_dataclass(UUIDNormalizeConfig, raw, "processors.uuid_normalize", issues)
    assert any(i.path == f"processors.uuid_normalize.{path}" for i in issues), issues


def test_loads_in_a_pipeline_config() -> None:
    text = """
receivers: {}
processors:
  uuid_normalize:
    metric_attributes: [http.route]
    patterns: [{regex: "[", replacement: x}]
exporters: {}
service: {pipelines: {}}
"""
    with pytest.raises(ConfigError) as ei:
        load_text(text, make_factory_map([FACTORY]))
    assert "processors.uuid_normalize.patterns[0].regex: invalid regular expression" in str(ei.value)


async def test_factory_creates_a_processor_and_counts_per_detector() -> None:
    settings = nop_settings("uuid_normalize", signal=Signal.METRICS)
    sink = MetricsSink()
    proc = FACTORY.create(settings, UUIDNormalizeConfig(), sink)
    m = make_metrics(3)
    for dp in m.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points:
        dp.attributes.append(kv("http.route", f"/users/42/{U}"))
    await proc.consume(Payload(Signal.METRICS, message=m))
    await proc.shutdown()
    assert sink.items == 3
    tel = settings.telemetry
    assert tel.value("otelpipe_processor_normalized_values_total", detector="uuid", processor="uuid_normalize") == 3
    assert tel.value("otelpipe_processor_normalized_values_total", detector="num") == 3


# -- properties ---------------------------------------------------------------------------------

_PROP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_N = Normalizer(UUIDNormalizeConfig())
_pieces = st.one_of(
    st.text(max_size=20),
    st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: f"{{{u}}}"),
    st.uuids().map(lambda u: f"urn:uuid:{u}"), st.integers(0, 10**12).map(lambda i: f"/{i}/"),
    st.binary(min_size=8, max_size=24).map(bytes.hex), st.sampled_from(["01ARZ3NDEKTSV4RRFFQ69G5FAV", "/", "-", "{"]),
)


@_PROP
@given(parts=st.lists(_pieces, max_size=8))
def test_normalization_is_idempotent(parts: list[str]) -> None:
    once = _N("".join(parts))
    assert _N(once) == once


@_PROP
@given(u=st.uuids(), prefix=st.text(alphabet="/ =:,;", max_size=3), suffix=st.text(alphabet="/ ?#,;", max_size=3))
def test_every_delimited_uuid_is_replaced(u: uuid.UUID, prefix: str, suffix: str) -> None:
    assert _N(f"{prefix}{u}{suffix}") == f"{prefix}{{uuid}}{suffix}"


@_PROP
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="0123456789"),
                    max_size=200))
def test_text_without_digits_is_unchanged(text: str) -> None:
    # Every builtin id has a digit (UUIDs with none aside: no such UUID is ever generated in practice).
    if "-" not in text:
        assert _N(text) == text


# -- the wire path against the decoded walk ---------------------------------------------------------

def _multi_request(signal: Signal, seed: int) -> object:
    import random

    rng = random.Random(seed)
    maker = {Signal.TRACES: make_traces, Signal.LOGS: make_logs, Signal.METRICS: make_metrics}[signal]
    req = signal.request_type()
    for r in range(3):
        part = maker(rng.randrange(1, 6))
        rfield = getattr(part, signal.resource_field)[0]
        rfield.resource.attributes.append(kv("service.instance.id", str(uuid.UUID(int=rng.getrandbits(128)))))
        getattr(req, signal.resource_field).append(rfield)
        extra = getattr(getattr(req, signal.resource_field)[-1], signal.scope_field).add()
        extra.scope.name = f"scope-{r}"
    for rf in getattr(req, signal.resource_field):
        for sf in getattr(rf, signal.scope_field):
            for item in getattr(sf, signal.items_field):
                values = [f"/a/{uuid.UUID(int=rng.getrandbits(128))}", "/b/42", "plain", uuid.uuid4().hex,
                          "01ARZ3NDEKTSV4RRFFQ69G5FAV"]
                if signal is Signal.METRICS:
                    for dp in item.sum.data_points:
                        dp.attributes.append(kv(rng.choice(["http.route", "other"]), rng.choice(values)))
                else:
                    item.attributes.append(kv(rng.choice(["http.route", "other"]), rng.choice(values)))
                    if signal is Signal.TRACES and rng.random() < 0.3:
                        item.name = rng.choice(values)
    return req


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("backend", ["c", "python"])
def test_wire_path_gives_the_same_result_as_the_full_walk(signal: Signal, seed: int, backend: str) -> None:
    cfg = UUIDNormalizeConfig(log_attributes=("http.route",))
    raw = _multi_request(signal, seed).SerializeToString()  # type: ignore[attr-defined]
    wire = UUIDNormalize(cfg, signal, native=backend == "c")
    by_bytes = wire(Payload(signal, raw=raw))
    expected, counts = uuid_reference(cfg, signal, raw)
    assert by_bytes.message == expected
    assert wire.fn.counts == counts


# -- metrics: points that became one series are merged ----------------------------------------------------------

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000


def uid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def route(i: int) -> str:
    return f"/v1/agents/{uid(i)}/runs"


def metric_request(*metrics: Metric) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "agent"))
    sm = rm.scope_metrics.add()
    sm.scope.name = "test"
    sm.metrics.extend(metrics)
    return req


def sum_of(points: list[tuple[object, dict[str, object], int, int]], *, temporality: int = DELTA,
           name: str = "api.calls") -> Metric:
    """points: (value, attributes, start, time)."""
    m = Metric(name=name)
    m.sum.is_monotonic = True
    m.sum.aggregation_temporality = temporality  # type: ignore[assignment]
    for value, attrs, start, t in points:
        dp = m.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=t)
        if isinstance(value, int):
            dp.as_int = value
        else:
            dp.as_double = value  # type: ignore[assignment]
        dp.attributes.extend(kv(k, v) for k, v in attrs.items())
    return m


def hist_of(points: list[tuple[list[float], list[int], float, dict[str, object]]], *,
            temporality: int = DELTA) -> Metric:
    """points: (bounds, bucket counts, sum, attributes); min/max from the buckets' middle, time T0+1s."""
    m = Metric(name="latency", unit="s")
    m.histogram.aggregation_temporality = temporality  # type: ignore[assignment]
    for bounds, counts, total, attrs in points:
        dp = m.histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=T0 + SEC, count=sum(counts),
                                         sum=total, min=total / 10, max=total)
        dp.explicit_bounds.extend(bounds)
        dp.bucket_counts.extend(counts)
        dp.attributes.extend(kv(k, v) for k, v in attrs.items())
    return m


PATHS = ["wire", "decoded"]


def normalize(req: ExportMetricsServiceRequest, path: str, **cfg: object) -> Payload:
    """Run uuid_normalize on `req` from wire bytes (as the OTLP receiver hands them on) or a decoded message."""
    proc = UUIDNormalize(UUIDNormalizeConfig(**cfg), Signal.METRICS)  # type: ignore[arg-type]
    if path == "wire":
        p = Payload(Signal.METRICS, raw=req.SerializeToString())
    else:
        p = Payload(Signal.METRICS, message=req)
    out = proc(p)
    assert out.items == Payload(Signal.METRICS, message=out.message).items  # the count is kept right
    return out


def points_of(p: Payload, index: int = 0) -> list:
    m = p.message.resource_metrics[0].scope_metrics[0].metrics[index]
    return list(getattr(m, m.WhichOneof("data")).data_points)


def value_of(dp: object) -> object:
    return getattr(dp, dp.WhichOneof("value"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", PATHS)
def test_delta_sums_of_one_window_add_up(path: str) -> None:
    req = metric_request(sum_of([(1, {"route": route(i), "method": "post"}, T0, T0 + SEC) for i in range(200)]
                                + [(5, {"route": "/health", "method": "get"}, T0, T0 + SEC)]))
    out = normalize(req, path)
    pts = points_of(out)
    assert [(value_of(dp), attrs_of(dp)) for dp in pts] == [
        (200, {"route": "/v1/agents/{uuid}/runs", "method": "post"}), (5, {"route": "/health", "method": "get"})]
    assert (pts[0].start_time_unix_nano, pts[0].time_unix_nano) == (T0, T0 + SEC)
    assert out.items == 2


@pytest.mark.parametrize("path", PATHS)
def test_delta_windows_stay_apart_and_each_adds_up(path: str) -> None:
    w1, w2 = (T0, T0 + SEC), (T0 + SEC, T0 + 2 * SEC)
    req = metric_request(sum_of([(1, {"route": route(0)}, *w1), (2, {"route": route(1)}, *w2),
                                 (3, {"route": route(2)}, *w1), (4.5, {"route": route(3)}, *w2)]))
    pts = points_of(normalize(req, path))
    assert [(value_of(dp), dp.start_time_unix_nano, dp.time_unix_nano) for dp in pts] == [
        (4, *w1), (6.5, *w2)]  # ints and doubles together make a double


@pytest.mark.parametrize("path", PATHS)
def test_cumulative_sums_count_each_original_series_once_at_its_latest_point(path: str) -> None:
    req = metric_request(sum_of([
        (10, {"route": route(0)}, T0, T0 + 5 * SEC),
        (7, {"route": route(1)}, T0 + 2 * SEC, T0 + 5 * SEC),
        (12, {"route": route(0)}, T0, T0 + 6 * SEC),  # the same series again, later: replaces its 10
    ], temporality=CUMULATIVE))
    (dp,) = points_of(normalize(req, path))
    assert value_of(dp) == 19
    assert (dp.start_time_unix_nano, dp.time_unix_nano) == (T0, T0 + 6 * SEC)  # earliest start, latest time
    assert attrs_of(dp) == {"route": "/v1/agents/{uuid}/runs"}


@pytest.mark.parametrize("path", PATHS)
def test_histograms_merge_bucket_wise_and_other_bounds_stay_apart(path: str) -> None:
    req = metric_request(hist_of([
        ([1.0, 5.0], [1, 2, 0], 8.0, {"route": route(0)}),
        ([1.0, 5.0], [0, 1, 3], 40.0, {"route": route(1)}),
        ([2.0], [4, 4], 20.0, {"route": route(2)}),  # other bounds: not re-bucketed
    ]))
    pts = points_of(normalize(req, path))
    assert len(pts) == 2
    merged, apart = pts
    assert (list(merged.explicit_bounds), list(merged.bucket_counts), merged.count, merged.sum) == (
        [1.0, 5.0], [1, 3, 3], 7, 48.0)
    assert (merged.min, merged.max) == (0.8, 40.0)
    assert (list(apart.explicit_bounds), list(apart.bucket_counts)) == ([2.0], [4, 4])
    assert attrs_of(merged) == attrs_of(apart) == {"route": "/v1/agents/{uuid}/runs"}


@pytest.mark.parametrize("path", PATHS)
def test_gauges_keep_the_latest_point(path: str) -> None:
    m = Metric(name="queue.depth")
    for i, (v, t) in enumerate([(3, T0 + 2 * SEC), (9, T0 + 3 * SEC), (1, T0 + SEC)]):
        dp = m.gauge.data_points.add(time_unix_nano=t, as_int=v)
        dp.attributes.append(kv("session", uid(i)))
    (dp,) = points_of(normalize(metric_request(m), path))
    assert (value_of(dp), dp.time_unix_nano, attrs_of(dp)) == (9, T0 + 3 * SEC, {"session": "{uuid}"})


@pytest.mark.parametrize("path", PATHS)
def test_summaries_add_count_and_sum_and_drop_quantiles(path: str) -> None:
    m = Metric(name="step")
    for i in range(3):
        dp = m.summary.data_points.add(start_time_unix_nano=T0, time_unix_nano=T0 + SEC, count=2 + i, sum=1.5 * i)
        dp.quantile_values.add(quantile=0.5, value=float(i))
        dp.attributes.append(kv("run", uid(i)))
    (dp,) = points_of(normalize(metric_request(m), path))
    assert (dp.count, dp.sum, len(dp.quantile_values)) == (9, 4.5, 0)


@pytest.mark.parametrize("path", PATHS)
def test_exponential_histograms_merge_at_a_common_scale(path: str) -> None:
    m = Metric(name="tokens")
    m.exponential_histogram.aggregation_temporality = DELTA  # type: ignore[assignment]
    for i, scale in enumerate((2, 1)):
        dp = m.exponential_histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=T0 + SEC, scale=scale,
                                                     count=3, zero_count=1, sum=10.0)
        dp.positive.offset = 4
        dp.positive.bucket_counts.extend([1, 1])
        dp.attributes.append(kv("run", uid(i)))
    (dp,) = points_of(normalize(metric_request(m), path))
    assert (dp.scale, dp.count, dp.zero_count, dp.sum) == (1, 6, 2, 20.0)
    assert (dp.positive.offset, list(dp.positive.bucket_counts)) == (2, [2, 0, 1, 1])


@pytest.mark.parametrize("path", PATHS)
def test_exemplars_are_carried_and_flags_are_sensible(path: str) -> None:
    def ex(v: float, t: int) -> Exemplar:
        return Exemplar(as_double=v, time_unix_nano=t, trace_id=bytes(15) + bytes([int(v)]), span_id=bytes(8))

    m = sum_of([(1, {"route": route(0)}, T0, T0 + SEC), (2, {"route": route(1)}, T0, T0 + SEC),
                (0, {"route": route(2)}, T0, T0 + SEC)], temporality=DELTA)
    pts = m.sum.data_points
    pts[0].exemplars.append(ex(1.0, T0 + 1))
    pts[1].exemplars.append(ex(2.0, T0 + 2))
    pts[2].flags = 1  # no recorded value: not counted
    ended = sum_of([(0, {"route": route(i)}, T0, T0 + SEC) for i in range(2)], name="ended")
    for dp in ended.sum.data_points:
        dp.flags = 1
    out = normalize(metric_request(m, ended), path)
    (dp,) = points_of(out)
    assert value_of(dp) == 3 and dp.flags == 0
    assert sorted(e.as_double for e in dp.exemplars) == [1.0, 2.0]
    (gone,) = points_of(out, 1)
    assert gone.flags == 1  # every part ended: so did the merged series


def test_unspecified_temporality_is_left_alone() -> None:
    req = metric_request(sum_of([(1, {"route": route(i)}, T0, T0 + SEC) for i in range(3)], temporality=0))
    assert len(points_of(normalize(req, "wire"))) == 3


def test_only_metrics_normalization_changed_are_merged() -> None:
    same = sum_of([(1, {"k": "v"}, T0, T0 + SEC), (1, {"k": "v"}, T0, T0 + SEC)], name="already.duplicated")
    raw = metric_request(same).SerializeToString()
    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.METRICS)(Payload(Signal.METRICS, raw=raw))
    assert out.raw_cached is raw  # nothing normalized: untouched, not decoded
    req = metric_request(same, sum_of([(1, {"route": route(i)}, T0, T0 + SEC) for i in range(2)]))
    out = normalize(req, "wire")
    assert [len(points_of(out, i)) for i in (0, 1)] == [2, 1]


def test_a_merge_keeps_the_order_of_points() -> None:
    req = metric_request(sum_of([(1, {"route": "/a"}, T0, T0 + SEC), (2, {"route": route(0)}, T0, T0 + SEC),
                                 (3, {"route": "/b"}, T0, T0 + SEC), (4, {"route": route(1)}, T0, T0 + SEC)]))
    assert [(attrs_of(dp)["route"], value_of(dp)) for dp in points_of(normalize(req, "wire"))] == [
        ("/a", 1), ("/v1/agents/{uuid}/runs", 6), ("/b", 3)]


async def test_merged_points_are_counted_as_dropped_with_reason_merged() -> None:
    settings = nop_settings("uuid_normalize", signal=Signal.METRICS)
    sink = MetricsSink()
    proc = FACTORY.create(settings, UUIDNormalizeConfig(), sink)
    req = metric_request(sum_of([(1, {"route": route(i)}, T0, T0 + SEC) for i in range(50)]))
    await proc.consume(Payload(Signal.METRICS, raw=req.SerializeToString()))
    assert sink.items == 1
    assert value_of(points_of(sink.payloads[0])[0]) == 50
    assert settings.telemetry.value("otelpipe_processor_dropped_metric_points_total", processor="uuid_normalize",
                                    reason="merged") == 49


_ROUTES = st.sampled_from(["/a", "/b/{uuid}"] + [route(i) for i in range(6)] + [f"/b/{uid(i)}" for i in range(3)])


@_PROP
@given(st.lists(st.tuples(st.integers(0, 1000), _ROUTES, st.sampled_from(["get", "post"]), st.integers(0, 2)),
                min_size=1, max_size=40),
       st.sampled_from(PATHS))
def test_delta_totals_survive_per_series_and_window(rows: list[tuple[int, str, str, int]], path: str) -> None:
    req = metric_request(sum_of([(v, {"route": r, "method": m}, T0 + w * SEC, T0 + (w + 1) * SEC)
                                 for v, r, m, w in rows]))
    out = normalize(req, path)
    if all(_N(r) == r for _, r, _, _ in rows):  # normalization changed nothing: nothing is merged
        assert [value_of(dp) for dp in points_of(out)] == [v for v, _, _, _ in rows]
        return
    expected: dict[tuple[str, str, int], int] = {}
    for v, r, m, w in rows:
        k = (_N(r), m, w)
        expected[k] = expected.get(k, 0) + v
    got = {(attrs_of(dp)["route"], attrs_of(dp)["method"], (dp.start_time_unix_nano - T0) // SEC): value_of(dp)
           for dp in points_of(out)}
    assert got == expected and len(points_of(out)) == len(expected)


def test_a_changed_request_with_nothing_to_merge_is_not_decoded() -> None:
    req = metric_request(sum_of([(1, {"route": route(0)}, T0, T0 + SEC), (1, {"route": "/other"}, T0, T0 + SEC)]))
    raw = req.SerializeToString()
    p = Payload(Signal.METRICS, raw=raw)
    out = UUIDNormalize(UUIDNormalizeConfig(), Signal.METRICS)(p)
    assert out is p and p._message is None  # edited on the wire, series told apart on the bytes
    assert out.raw_cached is not None and out.raw_cached != raw
    assert [attrs_of(dp)["route"] for dp in points_of(out)] == ["/v1/agents/{uuid}/runs", "/other"]
