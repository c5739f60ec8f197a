from __future__ import annotations

import dataclasses
import random

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipeline.component import make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import RetryableError
from pipeline.model import Payload, Signal
from pipeline.testing import TracesSink, kv, nop_host, nop_settings
from processors.sampling.probabilistic import ProbabilisticSamplerConfig, Sampler
from processors.sampling.tail import FACTORY, TailSamplingConfig, TailSamplingProcessor

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
ERROR = Status.STATUS_CODE_ERROR


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(raw: dict[str, object]) -> TailSamplingConfig:
    issues: list = []
    cfg = decode_dataclass(TailSamplingConfig, raw, "processors.tail_sampling", issues)
    assert issues == [], issues
    return cfg  # type: ignore[no-any-return]


def make(policies: list[dict[str, object]] | None = None, *, sink: TracesSink | None = None,
         clock: Clock | None = None, **raw: object) -> tuple[TailSamplingProcessor, TracesSink, Clock]:
    if policies is not None:
        raw["policies"] = policies
    clock = clock or Clock()
    settings = dataclasses.replace(nop_settings("tail_sampling", signal=Signal.TRACES), clock=clock)
    sink = sink or TracesSink()
    return FACTORY.create(settings, config(raw), sink), sink, clock


@dataclasses.dataclass
class SpanSpec:
    trace: int
    index: int = 0
    start_ms: int = 0
    end_ms: int = 10
    status: int = Status.STATUS_CODE_UNSET
    attrs: dict[str, object] = dataclasses.field(default_factory=dict)
    tracestate: str = ""


def tid_of(n: int) -> bytes:
    return random.Random(n).getrandbits(128).to_bytes(16, "big")


def request(specs: list[SpanSpec], resource: dict[str, object] | None = None) -> Payload:
    req = Signal.TRACES.request_type()
    rs = req.resource_spans.add()  # type: ignore[union-attr]
    for k, v in (resource or {"service.name": "agent"}).items():
        rs.resource.attributes.append(kv(k, v))
    ss = rs.scope_spans.add()
    ss.scope.name = "t"
    for sp in specs:
        s = ss.spans.add()
        s.trace_id = tid_of(sp.trace)
        s.span_id = (sp.trace * 100 + sp.index + 1).to_bytes(8, "big")
        s.name = f"t{sp.trace}-s{sp.index}"
        s.start_time_unix_nano = T0 + sp.start_ms * MS
        s.end_time_unix_nano = T0 + sp.end_ms * MS
        s.status.code = sp.status  # type: ignore[assignment]
        s.trace_state = sp.tracestate
        s.attributes.extend(kv(k, v) for k, v in sp.attrs.items())
    return Payload(Signal.TRACES, message=req)


def out_spans(sink: TracesSink) -> list[Span]:
    return [s for m in sink.messages() for rs in m.resource_spans for ss in rs.scope_spans for s in ss.spans]


def kept_traces(sink: TracesSink) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for s in out_spans(sink):
        out[s.trace_id] = out.get(s.trace_id, 0) + 1
    return out


def tids(*numbers: int) -> set[bytes]:
    return {tid_of(n) for n in numbers}


# -- config ----------------------------------------------------------------------------------------

def issues_of(raw: dict[str, object]) -> list[str]:
    issues: list = []
    decode_dataclass(TailSamplingConfig, raw, "processors.tail_sampling", issues)
    return [str(i) for i in issues]


def test_default_config_validates_and_keeps_everything() -> None:
    assert issues_of({}) == []
    cfg = TailSamplingConfig()
    assert (cfg.decision_wait, cfg.num_traces) == (10.0, 50_000)
    assert [p.type for p in cfg.policies] == ["always_sample"]
    assert set(FACTORY.signals) == {Signal.TRACES}


COLLECTOR_YAML = """
receivers: {otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}}
exporters: {debug: {}}
processors:
  tail_sampling:
    decision_wait: 5s
    num_traces: 1000
    expected_new_traces_per_sec: 10
    decision_cache: {sampled_cache_size: 500, non_sampled_cache_size: 800}
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 500}}
      - {name: sample, type: probabilistic, probabilistic: {sampling_percentage: 10}}
      - {name: vip, type: string_attribute, string_attribute: {key: user.tier, values: [gold, "plat.*"],
                                                               enabled_regex_matching: true}}
      - {name: tokens, type: numeric_attribute, numeric_attribute: {key: gen_ai.usage.input_tokens, min_value: 100000}}
      - {name: loops, type: span_count, span_count: {min_spans: 200}}
      - name: prod-errors
        type: and
        and:
          and_sub_policy:
            - {name: prod, type: string_attribute, string_attribute: {key: env, values: [prod]}}
            - {name: err, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: budget, type: rate_limiting, rate_limiting: {spans_per_second: 1000}}
      - {name: rest, type: always_sample}
service: {pipelines: {traces: {receivers: [otlp], processors: [tail_sampling], exporters: [debug]}}}
"""


def test_collector_shaped_yaml_loads() -> None:
    from exporters import debug
    from receivers.otlp import receiver as otlp

    loaded = load_text(COLLECTOR_YAML, make_factory_map([otlp.FACTORY, debug.FACTORY, FACTORY]))
    cfg = next(iter(loaded.processors.values()))
    assert cfg.decision_wait == 5.0 and cfg.decision_cache.non_sampled_cache_size == 800
    assert [p.type for p in cfg.policies][-3:] == ["and", "rate_limiting", "always_sample"]
    assert [s.name for s in cfg.policies[6].and_.and_sub_policy] == ["prod", "err"]


@pytest.mark.parametrize("policies, path", [
    ([{"name": "a", "type": "latency", "latency": {}}], "policies[0].latency.threshold_ms"),
    ([{"name": "a", "type": "always_sample"}, {"name": "b", "type": "always_sample"},
      {"name": "c", "type": "latency", "latency": {"threshold_ms": -5}}], "policies[2].latency.threshold_ms"),
    ([{"name": "a", "type": "latncy"}], "policies[0].type"),
    ([{"type": "always_sample"}], "policies[0].name"),
    ([{"name": "a", "type": "status_code", "status_code": {"status_codes": ["EROR"]}}],
     "policies[0].status_code.status_codes[0]"),
    ([{"name": "a", "type": "probabilistic", "probabilistic": {"sampling_percentage": 101}}],
     "policies[0].probabilistic.sampling_percentage"),
    ([{"name": "a", "type": "string_attribute", "string_attribute": {"key": "k", "values": ["("],
                                                                    "enabled_regex_matching": True}}],
     "policies[0].string_attribute.values[0]"),
    ([{"name": "a", "type": "numeric_attribute", "numeric_attribute": {"key": "k"}}],
     "policies[0].numeric_attribute.min_value"),
    ([{"name": "a", "type": "span_count", "span_count": {"min_spans": 0}}], "policies[0].span_count.min_spans"),
    ([{"name": "a", "type": "rate_limiting"}], "policies[0].rate_limiting.spans_per_second"),
    ([{"name": "a", "type": "always_sample"}, {"name": "a", "type": "always_sample"}], "policies[1].name"),
    ([{"name": "a", "type": "latency", "latency": {"threshold_ms": 5}, "status_code": {"status_codes": ["OK"]}}],
     "policies[0].status_code"),
    ([{"name": "a", "type": "and", "and": {"and_sub_policy": [{"name": "x", "type": "and"}]}}],
     "policies[0].and.and_sub_policy[0].type"),
    ([{"name": "a", "type": "and", "and": {"and_sub_policy": [
        {"name": "x", "type": "latency", "latency": {"threshold_ms": 0}}]}}],
     "policies[0].and.and_sub_policy[0].latency.threshold_ms"),
    ([{"name": "a", "type": "and"}], "policies[0].and.and_sub_policy"),
    ([{"name": "a", "type": "latency", "latency": {"treshold_ms": 5}}], "policies[0].latency.treshold_ms"),
    ([], "policies"),
])
def test_policy_problems_are_reported_with_key_paths(policies: list, path: str) -> None:
    issues = issues_of({"policies": policies})
    assert any(f"processors.tail_sampling.{path}:" in i for i in issues), issues


def test_unknown_type_suggests_the_closest() -> None:
    issues = issues_of({"policies": [{"name": "a", "type": "latncy"}]})
    assert any("did you mean 'latency'" in i for i in issues), issues


@pytest.mark.parametrize("raw, path", [({"num_traces": 0}, "num_traces"), ({"decision_wait": "0s"}, "decision_wait"),
                                       ({"decision_cache": {"sampled_cache_size": -1}},
                                        "decision_cache.sampled_cache_size")])
def test_bad_limits_are_rejected(raw: dict[str, object], path: str) -> None:
    assert any(f"processors.tail_sampling.{path}:" in i for i in issues_of(raw))


# -- policies ------------------------------------------------------------------------------------------

async def decide(policies: list[dict[str, object]], specs: list[SpanSpec], **raw: object) -> set[bytes]:
    proc, sink, _ = make(policies, **raw)
    await proc.consume(request(specs))
    await proc.force_decide()
    got = kept_traces(sink)
    return set(got)


async def test_always_sample() -> None:
    assert await decide([{"name": "all", "type": "always_sample"}], [SpanSpec(1), SpanSpec(2)]) == tids(1, 2)


async def test_status_code_keeps_the_whole_trace() -> None:
    proc, sink, _ = make([{"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}])
    await proc.consume(request([SpanSpec(1, 0), SpanSpec(1, 1, status=ERROR), SpanSpec(1, 2),
                                SpanSpec(2, 0, status=Status.STATUS_CODE_OK), SpanSpec(2, 1)]))
    await proc.force_decide()
    assert kept_traces(sink) == {tid_of(1): 3}


async def test_kept_traces_keep_resource_scope_and_every_span_field() -> None:
    proc, sink, _ = make()
    payload = request([SpanSpec(1, 0, attrs={"k": "v", "n": 3}, tracestate="ot=th:8"), SpanSpec(2), SpanSpec(1, 1)],
                      resource={"service.name": "agent", "host.name": "h1"})
    original = Signal.TRACES.request_type()
    original.CopyFrom(payload.message)
    original.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"  # type: ignore[index]
    original.resource_spans[0].scope_spans[0].scope.version = "1.2"  # type: ignore[index]
    original.resource_spans[0].scope_spans[0].schema_url = "https://example.com/s"  # type: ignore[index]
    await proc.consume(Payload(Signal.TRACES, message=original))
    await proc.force_decide()
    out = [rs for m in sink.messages() for rs in m.resource_spans]
    src = original.resource_spans[0]  # type: ignore[index]
    assert all(rs.resource == src.resource and rs.schema_url == src.schema_url for rs in out)
    scopes = [ss for rs in out for ss in rs.scope_spans]
    assert all(ss.scope == src.scope_spans[0].scope and ss.schema_url == src.scope_spans[0].schema_url
               for ss in scopes)
    by_id = {s.span_id: s for ss in scopes for s in ss.spans}
    assert by_id == {s.span_id: s for s in src.scope_spans[0].spans}


async def test_latency_uses_the_whole_trace_duration() -> None:
    specs = [SpanSpec(1, 0, 0, 200), SpanSpec(1, 1, 400, 600),  # each span short, the trace 600 ms
             SpanSpec(2, 0, 0, 499),
             SpanSpec(3, 0, 0, 5000)]
    assert await decide([{"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}}], specs) == tids(1, 3)
    bounded = [{"name": "slow", "type": "latency", "latency": {"threshold_ms": 500, "upper_threshold_ms": 1000}}]
    assert await decide(bounded, specs) == tids(1)


async def test_probabilistic_is_consistent_with_the_head_sampler() -> None:
    n = 3000
    specs = [SpanSpec(i) for i in range(n)]
    kept = await decide([{"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 20}}], specs)
    head = Sampler(ProbabilisticSamplerConfig(sampling_percentage=20), Signal.TRACES)
    expected = {tid_of(i) for i in range(n) if head.decide_span(tid_of(i), "")[0]}
    assert kept == expected and 0.17 < len(kept) / n < 0.23


async def test_probabilistic_uses_an_explicit_rv() -> None:
    specs = [SpanSpec(1, tracestate="ot=rv:ffffffffffffff"), SpanSpec(2, tracestate="ot=rv:00000000000000")]
    kept = await decide([{"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}}], specs)
    assert kept == tids(1)


async def test_string_attribute_exact_regex_invert_and_resource() -> None:
    specs = [SpanSpec(1, attrs={"user.tier": "gold"}), SpanSpec(2, attrs={"user.tier": "platinum"}),
             SpanSpec(3, attrs={"user.tier": "free"}), SpanSpec(4)]
    exact = [{"name": "s", "type": "string_attribute", "string_attribute": {"key": "user.tier", "values": ["gold"]}}]
    assert await decide(exact, specs) == tids(1)
    regex = [{"name": "s", "type": "string_attribute",
              "string_attribute": {"key": "user.tier", "values": ["^plat", "gol"], "enabled_regex_matching": True}}]
    assert await decide(regex, specs) == tids(1, 2)
    invert = [{"name": "s", "type": "string_attribute",
               "string_attribute": {"key": "user.tier", "values": ["free"], "invert_match": True}}]
    assert await decide(invert, specs) == tids(1, 2, 4)
    proc, sink, _ = make([{"name": "s", "type": "string_attribute",
                           "string_attribute": {"key": "service.name", "values": ["billing"]}}])
    await proc.consume(request([SpanSpec(5)], resource={"service.name": "billing"}))
    await proc.consume(request([SpanSpec(6)], resource={"service.name": "search"}))
    await proc.force_decide()
    assert set(kept_traces(sink)) == tids(5)


async def test_numeric_attribute_token_budget() -> None:
    specs = [SpanSpec(1, 0, attrs={"gen_ai.usage.input_tokens": 150_000}), SpanSpec(1, 1),
             SpanSpec(2, attrs={"gen_ai.usage.input_tokens": 900}),
             SpanSpec(3, attrs={"gen_ai.usage.input_tokens": 120_000.5}),
             SpanSpec(4, attrs={"gen_ai.usage.input_tokens": "200000"})]  # a string is not a number
    budget = [{"name": "t", "type": "numeric_attribute",
               "numeric_attribute": {"key": "gen_ai.usage.input_tokens", "min_value": 100_000}}]
    assert await decide(budget, specs) == tids(1, 3)
    window = [{"name": "t", "type": "numeric_attribute",
               "numeric_attribute": {"key": "gen_ai.usage.input_tokens", "min_value": 100, "max_value": 130_000}}]
    assert await decide(window, specs) == tids(2, 3)
    inverted = [{"name": "t", "type": "numeric_attribute",
                 "numeric_attribute": {"key": "gen_ai.usage.input_tokens", "max_value": 1000, "invert_match": True}}]
    assert await decide(inverted, specs) == tids(1, 3, 4)


async def test_span_count_catches_runaway_loops() -> None:
    specs = [SpanSpec(1, i) for i in range(12)] + [SpanSpec(2, i) for i in range(3)]
    assert await decide([{"name": "loop", "type": "span_count", "span_count": {"min_spans": 10}}], specs) == tids(1)
    assert await decide([{"name": "loop", "type": "span_count", "span_count": {"min_spans": 2, "max_spans": 5}}],
                        specs) == tids(2)


async def test_rate_limiting_spends_a_per_second_span_budget_on_the_clock() -> None:
    proc, sink, clock = make([{"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 5}}])
    await proc.consume(request([SpanSpec(t, i) for t in range(1, 5) for i in range(2)]))  # 4 traces × 2 spans
    await proc.force_decide()
    assert len(kept_traces(sink)) == 2  # 2 + 2 spans fit in 5; the third trace would make 6
    clock.now += 1.0
    await proc.consume(request([SpanSpec(t, i) for t in range(5, 7) for i in range(2)]))
    await proc.force_decide()
    assert len(kept_traces(sink)) == 4


async def test_and_needs_every_sub_policy() -> None:
    policy = [{"name": "prod-errors", "type": "and", "and": {"and_sub_policy": [
        {"name": "prod", "type": "string_attribute", "string_attribute": {"key": "env", "values": ["prod"]}},
        {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]}}]
    specs = [SpanSpec(1, 0, attrs={"env": "prod"}), SpanSpec(1, 1, status=ERROR),
             SpanSpec(2, attrs={"env": "dev"}, status=ERROR), SpanSpec(3, attrs={"env": "prod"})]
    assert await decide(policy, specs) == tids(1)


async def test_policies_are_counted_in_order_until_one_keeps_the_trace() -> None:
    proc, sink, _ = make([{"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                          {"name": "all", "type": "always_sample"}])
    await proc.consume(request([SpanSpec(1, status=ERROR), SpanSpec(2), SpanSpec(3)]))
    await proc.force_decide()
    tel = proc.settings.telemetry
    name = "otelpipe_processor_tail_sampling_policy_decisions_total"
    assert tel.value(name, policy="err", decision="sampled") == 1
    assert tel.value(name, policy="err", decision="not_sampled") == 2
    assert tel.value(name, policy="all", decision="sampled") == 2
    assert tel.value("otelpipe_processor_tail_sampling_traces_total", decision="sampled") == 3


# -- the issue's scenario ------------------------------------------------------------------------------

async def test_errors_and_slow_traces_complete_and_the_rest_at_ten_percent() -> None:
    proc, sink, clock = make([
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}},
        {"name": "sample", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
    ], decision_wait="10s")
    specs = []
    errors, slow = set(range(0, 100)), set(range(100, 150))
    for t in range(1000):
        for i in range(3):
            status = ERROR if t in errors and i == 2 else Status.STATUS_CODE_UNSET
            end = 700 if t in slow and i == 0 else 50 + i
            specs.append(SpanSpec(t, i, start_ms=i, end_ms=end, status=status))
    random.Random(9).shuffle(specs)  # spans of a trace arrive in different requests
    for start in range(0, len(specs), 250):
        await proc.consume(request(specs[start:start + 250]))
        clock.now += 0.5
    assert sink.items == 0 and proc.pending_traces == 1000
    assert await proc.tick(clock.now) == 0  # the first trace arrived 6 s ago: not due yet
    clock.now += 10
    assert await proc.tick() == 1000
    kept = kept_traces(sink)
    assert all(n == 3 for n in kept.values())  # every kept trace arrives complete
    assert tids(*errors) <= set(kept) and tids(*slow) <= set(kept)
    rest = set(kept) - tids(*errors, *slow)
    assert 0.05 <= len(rest) / 850 <= 0.15
    assert proc.pending_traces == 0


async def test_tick_decides_only_traces_whose_wait_has_passed() -> None:
    proc, sink, clock = make(decision_wait="10s")
    await proc.consume(request([SpanSpec(1)]))
    clock.now += 4
    await proc.consume(request([SpanSpec(2)]))
    assert await proc.tick(clock.now + 5.9) == 0
    assert await proc.tick(clock.now + 6) == 1
    assert set(kept_traces(sink)) == tids(1) and proc.pending_traces == 1
    assert await proc.tick(clock.now + 10) == 1


# -- late spans, memory bound, shutdown ---------------------------------------------------------------------

async def test_late_spans_follow_the_cached_decision() -> None:
    proc, sink, _ = make([{"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}])
    await proc.consume(request([SpanSpec(1, 0, status=ERROR), SpanSpec(2, 0)]))
    await proc.force_decide()
    assert sink.items == 1
    await proc.consume(request([SpanSpec(1, 1), SpanSpec(2, 1), SpanSpec(1, 2)]))  # late
    assert [s.name for s in out_spans(sink)] == ["t1-s0", "t1-s1", "t1-s2"]  # forwarded at once
    assert proc.pending_traces == 0
    tel = proc.settings.telemetry
    assert tel.value("otelpipe_processor_tail_sampling_late_spans_total", decision="sampled") == 2
    assert tel.value("otelpipe_processor_tail_sampling_late_spans_total", decision="not_sampled") == 1
    assert tel.value("otelpipe_processor_dropped_spans_total", reason="not_sampled") == 2


async def test_a_late_span_whose_decision_was_evicted_starts_a_new_trace() -> None:
    proc, sink, _ = make(decision_cache={"sampled_cache_size": 1, "non_sampled_cache_size": 1})
    await proc.consume(request([SpanSpec(1), SpanSpec(2)]))
    await proc.force_decide()
    await proc.consume(request([SpanSpec(1, 1), SpanSpec(2, 1)]))
    assert proc.pending_traces == 1  # trace 1's decision was evicted by trace 2's


async def test_memory_is_bounded_when_ten_times_num_traces_arrive_within_decision_wait() -> None:
    proc, sink, clock = make([{"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}],
                             num_traces=100, decision_wait="10s")
    peak = 0
    total_spans = 0
    for batch in range(50):  # 1,000 traces of 2 spans in 1 s
        specs = [SpanSpec(t, i, status=ERROR if t % 10 == 0 and i == 1 else Status.STATUS_CODE_UNSET)
                 for t in range(batch * 20, batch * 20 + 20) for i in range(2)]
        await proc.consume(request(specs))
        total_spans += len(specs)
        peak = max(peak, proc.pending_traces)
        clock.now += 0.02
    assert peak <= 100
    tel = proc.settings.telemetry
    assert tel.value("otelpipe_processor_tail_sampling_traces_decided_early_total") == 900
    await proc.force_decide()
    kept = kept_traces(sink)
    assert set(kept) == {tid_of(t) for t in range(0, 1000, 10)} and set(kept.values()) == {2}
    dropped = tel.value("otelpipe_processor_dropped_spans_total", reason="not_sampled")
    assert sink.items + dropped == total_spans


async def test_shutdown_decides_and_flushes_every_pending_trace() -> None:
    proc, sink, _ = make()
    await proc.shutdown()  # safe without start
    proc, sink, _ = make()
    await proc.start(nop_host())
    await proc.consume(request([SpanSpec(t, i) for t in range(20) for i in range(3)]))
    assert sink.items == 0
    await proc.shutdown()
    assert sink.items == 60 and proc.pending_traces == 0
    await proc.shutdown()
    await proc.consume(request([SpanSpec(99)]))  # after shutdown nothing is held back
    assert sink.items == 61


async def test_the_background_timer_decides_due_traces() -> None:
    settings = nop_settings("tail_sampling", signal=Signal.TRACES)  # real monotonic clock
    sink = TracesSink()
    proc = FACTORY.create(settings, config({"decision_wait": "20ms"}), sink)
    await proc.start(nop_host())
    try:
        await proc.consume(request([SpanSpec(1), SpanSpec(1, 1)]))
        await sink.wait_for_items(2, timeout=5)
        assert proc.pending_traces == 0
        await proc.consume(request([SpanSpec(2)]))  # the timer wakes again for a new trace
        await sink.wait_for_items(3, timeout=5)
    finally:
        await proc.shutdown()


async def test_pending_gauge_and_downstream_failure_during_tick_is_counted() -> None:
    proc, sink, clock = make()
    await proc.consume(request([SpanSpec(1), SpanSpec(2)]))
    tel = proc.settings.telemetry
    assert tel.value("otelpipe_processor_tail_sampling_traces_pending") == 2
    sink.fail_with, sink.fail_times = RetryableError("backend down"), 1
    assert await proc.tick(clock.now + 10) == 2
    assert tel.value("otelpipe_processor_tail_sampling_traces_pending") == 0
    assert tel.value("otelpipe_processor_dropped_spans_total", reason="downstream_failed") == 2


async def test_late_span_forward_errors_reach_the_sender() -> None:
    proc, sink, _ = make()
    await proc.consume(request([SpanSpec(1)]))
    await proc.force_decide()
    sink.fail_with, sink.fail_times = RetryableError("backend down"), 1
    with pytest.raises(RetryableError):
        await proc.consume(request([SpanSpec(1, 1)]))
