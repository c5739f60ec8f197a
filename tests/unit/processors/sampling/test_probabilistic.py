from __future__ import annotations

import random
from fractions import Fraction

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline.config.types import decode_dataclass
from pipeline.model import Payload, Signal
from pipeline.testing import LogsSink, TracesSink, kv, nop_settings
from processors.sampling import common as sc
from processors.sampling.probabilistic import FACTORY, ProbabilisticSamplerConfig

TWO56 = 1 << 56


def formula_threshold(pct: str) -> int:
    """The issue's formula, computed independently: round((1 - p) * 2^56) with exact arithmetic."""
    return round((1 - Fraction(pct) / 100) * TWO56)


def randomness(tid: bytes) -> int:
    return int.from_bytes(tid[-7:], "big")


def make(signal: Signal = Signal.TRACES, sink: TracesSink | LogsSink | None = None, **cfg: object):
    sink = sink or (TracesSink() if signal is Signal.TRACES else LogsSink())
    proc = FACTORY.create(nop_settings("probabilistic_sampler", signal=signal),
                          ProbabilisticSamplerConfig(**cfg), sink)  # type: ignore[arg-type]
    return proc, sink


def spans_request(spans: list[tuple[bytes, int, str]], resources: int = 1, attrs: dict | None = None) -> Payload:
    """(trace_id, span_id, tracestate) triples, spread round-robin over `resources` ResourceSpans."""
    req = Signal.TRACES.request_type()
    scopes = []
    for r in range(resources):
        rs = req.resource_spans.add()  # type: ignore[union-attr]
        rs.resource.attributes.append(kv("service.name", f"svc-{r}"))
        ss = rs.scope_spans.add()
        ss.scope.name = "t"
        scopes.append(ss)
    for i, (tid, sid, ts) in enumerate(spans):
        s = scopes[i % resources].spans.add()
        s.trace_id = tid
        s.span_id = sid.to_bytes(8, "big")
        s.trace_state = ts
        s.name = f"span-{sid}"
        for k, v in (attrs or {}).items():
            s.attributes.append(kv(k, v))
    return Payload(Signal.TRACES, message=req)


def out_spans(sink: TracesSink) -> list[Span]:
    return [s for m in sink.messages() for rs in m.resource_spans for ss in rs.scope_spans for s in ss.spans]


def random_tids(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.getrandbits(128).to_bytes(16, "big") for _ in range(n)]


async def run(proc, payload: Payload) -> None:
    await proc.consume(payload)


# -- config ------------------------------------------------------------------------------------

def issues_of(raw: dict[str, object]) -> list[str]:
    issues: list = []
    decode_dataclass(ProbabilisticSamplerConfig, raw, "processors.probabilistic_sampler", issues)
    return [str(i) for i in issues]


def test_default_config_validates_and_keeps_everything() -> None:
    assert issues_of({}) == []
    cfg = ProbabilisticSamplerConfig()
    assert cfg.sampling_percentage == 100.0 and cfg.fail_closed and cfg.sampling_precision == 14
    assert cfg.effective_mode(Signal.TRACES) == "proportional"
    assert ProbabilisticSamplerConfig(hash_seed=22).effective_mode(Signal.TRACES) == "hash_seed"
    assert ProbabilisticSamplerConfig(attribute_source="record", from_attribute="id").effective_mode(Signal.LOGS) \
        == "hash_seed"
    assert set(FACTORY.signals) == {Signal.TRACES, Signal.LOGS}


@pytest.mark.parametrize("raw, path", [
    ({"sampling_percentage": -1}, "sampling_percentage"),
    ({"sampling_percentage": 1e-20}, "sampling_percentage"),
    ({"sampling_precision": 0}, "sampling_precision"),
    ({"sampling_precision": 15}, "sampling_precision"),
    ({"hash_seed": -1}, "hash_seed"),
    ({"mode": "proportional", "hash_seed": 5}, "hash_seed"),
    ({"mode": "random"}, "mode"),
    ({"attribute_source": "record"}, "from_attribute"),
    ({"sampling_percent": 5}, "sampling_percent"),
])
def test_bad_config_is_rejected_with_the_key_path(raw: dict[str, object], path: str) -> None:
    issues = issues_of(raw)
    assert any(f"processors.probabilistic_sampler.{path}:" in i for i in issues), issues


# -- the OTEP 235 formula ------------------------------------------------------------------------

@pytest.mark.parametrize("pct", ["10", "33.3", "62.5"])
async def test_each_of_20000_decisions_equals_the_formula(pct: str) -> None:
    proc, sink = make(sampling_percentage=float(pct))
    tids = random_tids(20_000, seed=int(float(pct) * 10))
    threshold = formula_threshold(pct)
    for start in range(0, len(tids), 500):
        await run(proc, spans_request([(t, i, "") for i, t in enumerate(tids[start:start + 500], start)]))
    kept = {s.trace_id for s in out_spans(sink)}
    expected = {t for t in tids if randomness(t) >= threshold}
    assert kept == expected
    assert abs(len(kept) / len(tids) - float(pct) / 100) <= 0.02
    th = f"{threshold:014x}".rstrip("0")
    assert {s.trace_state for s in out_spans(sink)} == {f"ot=th:{th}"}
    assert proc.settings.telemetry.value("otelpipe_processor_dropped_spans_total", reason="sampled") \
        == len(tids) - len(kept)


async def test_multi_span_traces_are_kept_or_dropped_whole() -> None:
    proc, sink = make(sampling_percentage=30)
    tids = random_tids(2000, seed=3)
    spans = [(t, i * 10 + j, "") for i, t in enumerate(tids) for j in range(5)]
    random.Random(1).shuffle(spans)
    for start in range(0, len(spans), 700):
        await run(proc, spans_request(spans[start:start + 700], resources=3))
    per_trace: dict[bytes, int] = {}
    for s in out_spans(sink):
        per_trace[s.trace_id] = per_trace.get(s.trace_id, 0) + 1
    assert per_trace and set(per_trace.values()) == {5}
    assert 0.26 < len(per_trace) / len(tids) < 0.34


async def test_two_instances_with_the_same_config_decide_identically() -> None:
    a, sink_a = make(sampling_percentage=17.5)
    b, sink_b = make(sampling_percentage=17.5)
    tids = random_tids(3000, seed=11)
    payload = spans_request([(t, i, "") for i, t in enumerate(tids)])
    await run(a, payload.copy())
    await run(b, payload)
    ids_a = [s.span_id for s in out_spans(sink_a)]
    assert ids_a and ids_a == [s.span_id for s in out_spans(sink_b)]


async def test_zero_and_hundred_percent() -> None:
    proc, sink = make(sampling_percentage=0)
    await run(proc, spans_request([(t, i, "") for i, t in enumerate(random_tids(50))]))
    assert sink.items == 0
    proc, sink = make(sampling_percentage=100)
    await run(proc, spans_request([(t, i, "") for i, t in enumerate(random_tids(50))]))
    assert sink.items == 50 and {s.trace_state for s in out_spans(sink)} == {"ot=th:0"}


async def test_precision_4_gives_the_collectors_short_threshold() -> None:
    proc, sink = make(sampling_percentage=10, sampling_precision=4)
    await run(proc, spans_request([(b"\x01" * 9 + b"\xff" * 7, 1, "")]))
    assert out_spans(sink)[0].trace_state == "ot=th:e666"


# -- incoming tracestate ---------------------------------------------------------------------------

TID_80 = bytes.fromhex("fefefefefefefefefe80000000000000")  # randomness 0x80000000000000: sampled at 50%, not 49%
TID_FF = bytes.fromhex("ffffffffffffffffffffffffffffffff")


@pytest.mark.parametrize("mode, tid, pct, tracestate, expect", [
    # (mode, trace id, percentage, incoming tracestate, expected tracestate or None for dropped)
    ("proportional", TID_80, 50, "", "ot=th:8"),
    ("proportional", TID_80, 49, "", None),
    ("proportional", TID_80, 1, "ot=rv:fd70B000000000", "ot=rv:fd70B000000000;th:fd70a3d70a3d71"),  # rv wins
    ("proportional", TID_80, 1, "ot=rv:FD70A3D70A3D70", None),
    ("proportional", TID_FF, 25, "ot=th:8", "ot=th:e"),  # 50% upstream × 25% = 12.5%
    ("equalizing", TID_FF, 25, "ot=th:8", "ot=th:c"),
    ("proportional", TID_80, 25, "ot=th:8", None),  # an upstream threshold only ever rises
    ("equalizing", TID_80, 50, "ot=rv:90000000000000;th:80000000000000", "ot=rv:90000000000000;th:8"),
    ("proportional", TID_80, 50, "ot=rv:90000000000000;th:80000000000000", None),
    ("proportional", TID_80, 50, "ot=rv:c0000000000000;th:8", "ot=rv:c0000000000000;th:c"),
    ("proportional", TID_80, 50, "vendor=abc,ot=th:0", "ot=th:8,vendor=abc"),  # ot moves to the front
])
async def test_incoming_threshold_is_respected_and_tracestate_updated(
        mode: str, tid: bytes, pct: float, tracestate: str, expect: str | None) -> None:
    proc, sink = make(sampling_percentage=pct, mode=mode)
    await run(proc, spans_request([(tid, 1, tracestate)]))
    got = out_spans(sink)
    if expect is None:
        assert got == []
    else:
        assert [s.trace_state for s in got] == [expect]


async def test_downstream_sampler_only_samples_further() -> None:
    """A 50% sampler after a 20% one keeps a subset of what the first kept, at 10% overall."""
    first, sink1 = make(sampling_percentage=20)
    second, sink2 = make(sampling_percentage=50)
    tids = random_tids(20_000, seed=5)
    await run(first, spans_request([(t, i, "") for i, t in enumerate(tids)]))
    for p in sink1.payloads:
        await run(second, p)
    kept1 = {s.trace_id for s in out_spans(sink1)}
    kept2 = {s.trace_id for s in out_spans(sink2)}
    assert kept2 <= kept1
    assert abs(len(kept2) / len(tids) - 0.10) <= 0.02
    assert {s.trace_state for s in out_spans(sink2)} == {"ot=th:e6666666666666"}


@pytest.mark.parametrize("fail_closed", [True, False])
@pytest.mark.parametrize("tid, tracestate, reason, open_ts", [
    (TID_80, "ot=th:8;rv:70000000000000", "inconsistent_threshold", "ot=th:0;rv:70000000000000"),
    (bytes(16), "", "missing_randomness", "ot=th:0"),
    (TID_80, "ot=rv:abababababababab", "invalid_tracestate", "ot=rv:abababababababab"),
    (TID_80, "not a tracestate", "invalid_tracestate", "not a tracestate"),
])
async def test_errors_follow_fail_closed(fail_closed: bool, tid: bytes, tracestate: str, reason: str,
                                         open_ts: str) -> None:
    proc, sink = make(sampling_percentage=100, fail_closed=fail_closed)
    await run(proc, spans_request([(tid, 1, tracestate)]))
    got = out_spans(sink)
    if fail_closed:
        assert got == []
    else:
        assert [s.trace_state for s in got] == [open_ts]
    assert proc.settings.telemetry.value("otelpipe_processor_probabilistic_sampler_errors_total", reason=reason) == 1


@pytest.mark.parametrize("value, pct, kept", [(0, 100, False), ("0", 100, False), (2, 0, True), (1.0, 1, True),
                                              (-1, 100, True), ("x", 0, False)])
async def test_sampling_priority_overrides_the_probability(value: object, pct: float, kept: bool) -> None:
    proc, sink = make(sampling_percentage=pct)
    await run(proc, spans_request([(TID_80, 1, "")], attrs={"sampling.priority": value}))
    assert (sink.items == 1) is kept
    if kept and value not in (-1,):
        assert out_spans(sink)[0].trace_state == "ot=th:0"


# -- hash_seed mode ------------------------------------------------------------------------------------

def fnv1a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) % (1 << 32)
    return h


def test_fnv_matches_the_collectors_vectors() -> None:
    assert sc.seeded_hash(b"", 0) & 0x3FFF == 0x3515
    assert sc.seeded_hash(bytes(16), 0) & 0x3FFF == 0x2455
    assert sc.fnv1a32(b"foobar") == 0xBF9CF968


@pytest.mark.parametrize("pct, th", [(100, "0"), (75, "4"), (50, "8"), (25, "c"), (10, "e668"), (100 / 3, "aaac")])
async def test_hash_seed_mode_decides_like_the_collector(pct: float, th: str) -> None:
    seed = 4312
    proc, sink = make(sampling_percentage=pct, hash_seed=seed)
    tids = random_tids(4000, seed=int(pct))
    await run(proc, spans_request([(t, i, "") for i, t in enumerate(tids)]))
    scaled = int(sc._float32(sc._float32(pct) * sc._float32(16384 / 100)))
    expected = {t for t in tids if fnv1a(seed.to_bytes(4, "little") + t) & 0x3FFF < scaled}
    got = out_spans(sink)
    assert {s.trace_id for s in got} == expected
    for s in got[:20]:
        st = sc.TraceState.parse(s.trace_state)
        assert sc.encode_threshold(st.ot.threshold) == th  # type: ignore[arg-type]
        assert st.ot.randomness is not None and st.ot.randomness >= st.ot.threshold  # type: ignore[operator]


async def test_hash_seed_refuses_spans_that_already_carry_otel_sampling() -> None:
    proc, sink = make(sampling_percentage=100, hash_seed=1, fail_closed=True)
    await run(proc, spans_request([(TID_80, 1, "ot=th:8"), (TID_FF, 2, "")]))
    assert [s.trace_id for s in out_spans(sink)] == [TID_FF]


# -- logs -----------------------------------------------------------------------------------------------

def logs_request(records: list[tuple[bytes, dict]]) -> Payload:
    req = Signal.LOGS.request_type()
    sl = req.resource_logs.add().scope_logs.add()  # type: ignore[union-attr]
    for i, (tid, attrs) in enumerate(records):
        r = sl.log_records.add()
        r.trace_id = tid
        r.body.string_value = f"log {i}"
        r.attributes.extend(kv(k, v) for k, v in attrs.items())
    return Payload(Signal.LOGS, message=req)


def out_logs(sink: LogsSink) -> list:
    return [r for m in sink.messages() for rl in m.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def attr(record: object, key: str) -> str | None:
    for a in record.attributes:  # type: ignore[attr-defined]
        if a.key == key:
            return a.value.string_value  # type: ignore[no-any-return]
    return None


async def test_logs_follow_their_traces_decision() -> None:
    tids = random_tids(3000, seed=21)
    traces, tsink = make(sampling_percentage=40)
    logs, lsink = make(Signal.LOGS, sampling_percentage=40)
    await run(traces, spans_request([(t, i, "") for i, t in enumerate(tids)]))
    await run(logs, logs_request([(t, {}) for t in tids] + [(t, {}) for t in tids[:100]]))
    kept_traces = {s.trace_id for s in out_spans(tsink)}
    kept_logs = [r.trace_id for r in out_logs(lsink)]
    assert set(kept_logs) == kept_traces
    assert len(kept_logs) == len(kept_traces) + len(kept_traces & set(tids[:100]))
    th = f"{formula_threshold('40'):014x}".rstrip("0")
    assert {attr(r, "sampling.threshold") for r in out_logs(lsink)} == {th}


async def test_logs_without_trace_id_are_kept_by_default_or_dropped_or_sampled_by_attribute() -> None:
    records = [(b"", {"request.id": f"r{i}"}) for i in range(2000)]
    keep, sink = make(Signal.LOGS, sampling_percentage=10)
    await run(keep, logs_request(records))
    assert sink.items == 2000
    drop, sink = make(Signal.LOGS, sampling_percentage=10, logs_missing_randomness="drop")
    await run(drop, logs_request(records))
    assert sink.items == 0
    by_attr, sink = make(Signal.LOGS, sampling_percentage=10, from_attribute="request.id")
    await run(by_attr, logs_request(records))
    assert 0.07 < sink.items / 2000 < 0.13
    again, sink2 = make(Signal.LOGS, sampling_percentage=10, from_attribute="request.id")
    await run(again, logs_request(records))
    assert [attr(r, "request.id") for r in out_logs(sink)] == [attr(r, "request.id") for r in out_logs(sink2)]
    assert all(attr(r, "sampling.randomness") for r in out_logs(sink))


async def test_log_record_source_hashes_the_attribute_even_with_a_trace_id() -> None:
    proc, sink = make(Signal.LOGS, sampling_percentage=50, attribute_source="record", from_attribute="k")
    tids = random_tids(400, seed=2)
    await run(proc, logs_request([(t, {"k": "same"}) for t in tids]))
    assert sink.items in (0, 400)  # one attribute value, one decision


async def test_logs_respect_an_incoming_sampling_threshold() -> None:
    proc, sink = make(Signal.LOGS, sampling_percentage=50)
    await run(proc, logs_request([(TID_FF, {"sampling.threshold": "8"}), (TID_80, {"sampling.threshold": "8"})]))
    got = out_logs(sink)
    assert [r.trace_id for r in got] == [TID_FF]
    assert attr(got[0], "sampling.threshold") == "c"
