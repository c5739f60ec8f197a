"""The C renderer (exporters/datadog/_ddwire.c) against the Python walk of exporters/datadog/metrics.py.

Both mappers get the same sequence of requests, written field by field here (so the encodings are
the odd ones a client may send too: fields in any order, written twice, packed or not, unknown fields,
wrong wire types, invalid UTF-8, truncations), and must give the same series bytes, cuts, skips, state
size and evictions, or raise the same error.
"""
from __future__ import annotations

import math
import random
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.datadog.config import DatadogExporterConfig
from exporters.datadog.exporter import SERIES_HEAD, series_body, series_docs
from exporters.datadog.intake import SERIES_LIMITS, BodyBuilder, Limits
from exporters.datadog.metrics import MetricsMapper
from pipeline.anyvalue import as_string
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.testing import FakeClock, any_value, kv, ld, varint, vi
from tests.e2e.datadog_intake import check_series

KEY = "0123456789abcdef0123456789abcdef"
NS = 1_000_000_000
T0 = 1_700_000_000
STARTED = T0 - 100

@pytest.fixture(autouse=True, params=["both"])
def walk() -> str:  # overrides conftest.py's: each test here runs both walks itself
    return "both"


# -- the wire, field by field ------------------------------------------------------------------------

def f64(field: int, value: float | int, fmt: str = "<d") -> bytes:
    if fmt != "<d":  # an int as 8 bytes, two's complement
        value, fmt = int(value) & ((1 << 64) - 1), "<Q"
    return varint(field << 3 | 1) + struct.pack(fmt, value)


def text(field: int, s: str) -> bytes:
    return ld(field, s.encode())


def mappers(**raw: Any) -> tuple[MetricsMapper, MetricsMapper, FakeClock]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(DatadogExporterConfig, {"api": {"key": KEY}, **raw}, "x", issues)
    assert issues == []
    clock = FakeClock()
    native = MetricsMapper(cfg, clock=clock, wall_clock=lambda: STARTED, hostname="fallback-host")
    python = MetricsMapper(cfg, clock=clock, wall_clock=lambda: STARTED, hostname="fallback-host", native=False)
    assert python._native is None and native._native is not None
    return native, python, clock


def outcome(m: MetricsMapper, raw: bytes) -> tuple[Any, ...]:
    try:
        out = m.map(raw)
    except Exception as e:  # the same error from both walks is the expectation
        return "error", type(e).__name__, m.tracked_series, m.evicted
    return (orjson.dumps(out.documents()), out.cuts, out.skipped, m.tracked_series, m.evicted)


class Spy:
    """Counts the requests the C renderer walked itself (True) and those it left to the Python walk."""

    def __init__(self, m: MetricsMapper) -> None:
        assert m._render is not None
        self.render, self.walked, self.left = m._render, 0, 0
        m._render = self

    def __call__(self, *args: Any) -> bytes | None:
        text = self.render(*args)
        self.walked += text is not None
        self.left += text is None
        return text  # type: ignore[no-any-return]


# -- random requests -----------------------------------------------------------------------------------

ODD_VALUES = [b"", ld(1, b"\xff\xfe"), ld(5, b""), ld(6, ld(1, kv("k", 1).SerializeToString())),
              vi(3, 2**64 - 1), f64(4, float("nan")), f64(4, -0.0), ld(7, b"\x00\xff"), b"\x08\x01\x08\x00"]


class Gen:
    """Requests of a few series (names x attribute sets) whose times, start times and values move about."""

    def __init__(self, rng: random.Random, hostile: bool) -> None:
        self.rng, self.hostile = rng, hostile
        self.t = T0
        self.attr_sets = [self.attrs() for _ in range(rng.randint(1, 5))]
        self.names = rng.sample(["m", "a.b", "ünï", "c", "h", "x" * 40, "q\"\\\n"], 4)
        self.start = {name: (T0 - 50) * NS for name in self.names}

    def attrs(self) -> list[bytes]:
        r = self.rng
        values: list[Any] = ["", "v", "ünï", True, False, 0, -7, 2**63 - 1, 0.0, -0.0, 1e16, 1.5e-7, 0.1, 3.0,
                             float("nan"), float("inf"), b"\x00\x01", [], ["a", 1, 2.5], {"k": "v", "n": [True]}, {}]
        out = [kv(r.choice(["model", "route", "", "k", "ünï", "a:b"]), r.choice(values)).SerializeToString()
               for _ in range(r.randint(0, 4))]
        if self.hostile and r.random() < 0.2:
            out.append(ld(1, b"odd") + ld(2, r.choice(ODD_VALUES)))
        return out

    def number(self) -> bytes:
        r = self.rng
        pick = r.random()
        if pick < 0.45:
            return f64(6, r.choice([0, 1, 5, 10, 10**6, -3, 2**63 - 1, -(2**63), 2**53 + 1]) + r.randint(0, 3), "<q")
        if pick < 0.9:
            return f64(4, r.choice([0.0, -0.0, 0.5, 1e16, 1.7e308, -1.7e308, 2.0**53, 1e-300, float("nan"),
                                    float("inf"), float("-inf")]) + r.randint(0, 3))
        return r.choice([b"", f64(6, 5, "<q") + f64(4, 2.5), f64(4, 2.5) + f64(6, 0, "<q"), f64(6, 0, "<q")])

    def common(self, name: str, attrs_field: int, flags_field: int) -> list[bytes]:
        r = self.rng
        ts = self.t + r.choice([0, 0, 1, 1, 2, -1, -30]) if r.random() < 0.95 else r.choice([0, 1, 10**10, 2**40])
        start = self.start[name]
        if r.random() < 0.1:
            start = r.choice([0, (ts - 5) * NS, ts * NS, (T0 + 30) * NS])
            self.start[name] = start
        fields = [ld(attrs_field, a) for a in r.choice(self.attr_sets)]
        fields += [f64(3, max(ts, 0) * NS + r.randint(0, 999), "<Q"), f64(2, start, "<Q")]
        if r.random() < 0.1:
            fields.append(vi(flags_field, r.choice([1, 2, 3, 2**32 + 1])))
        return fields

    def point(self, kind: str, name: str) -> bytes:
        r = self.rng
        if kind in ("gauge", "sum"):
            fields = self.common(name, 7, 8) + [self.number()]
        elif kind in ("histogram", "exponential_histogram"):
            exp = kind == "exponential_histogram"
            fields = self.common(name, 1 if exp else 9, 10) + [f64(4, r.choice([0, 1, 5, 7, 2**64 - 1]) + 0, "<Q")]
            for field in ((5, 12, 13) if exp else (5, 11, 12)):
                if r.random() < 0.6:
                    fields.append(f64(field, r.choice([0.0, -0.0, 2.5, -4.0, 1e300, float("nan"), float("inf")])))
            if not exp and r.random() < 0.5:
                counts = [r.randint(0, 9) for _ in range(3)]
                fields.append(ld(6, b"".join(struct.pack("<Q", c) for c in counts)) if r.random() < 0.5
                              else b"".join(f64(6, c, "<Q") for c in counts))
                fields.append(ld(7, struct.pack("<dd", 1.0, 5.0)))
            if exp and r.random() < 0.3:
                fields.append(vi(6, 3))  # scale: not read
        else:
            fields = self.common(name, 7, 8) + [f64(4, r.choice([0, 3, 9]), "<Q"),
                                                f64(5, r.choice([0.0, 1.5, -2.0, float("nan")]))]
            for _ in range(r.randint(0, 3)):
                fields.append(ld(6, f64(1, r.choice([0.0, 0.5, 0.99, 1.0, float("nan")]))
                                 + f64(2, r.choice([1.0, -0.0, 1e16, float("inf")]))))
        if r.random() < 0.2:
            fields.append(ld(5, b"\x09" + b"\x00" * 8) if kind in ("gauge", "sum") else vi(15, 1))  # unknown fields
        r.shuffle(fields)
        return b"".join(fields)

    def metric(self) -> bytes:
        r = self.rng
        name = r.choice(self.names)
        kind = r.choice(["gauge", "sum", "sum", "histogram", "exponential_histogram", "summary"])
        field = {"gauge": 5, "sum": 7, "histogram": 9, "exponential_histogram": 10, "summary": 11}[kind]
        data = b"".join(ld(1, self.point(kind, name)) for _ in range(r.randint(0, 4)))
        if kind in ("sum", "histogram", "exponential_histogram"):
            data += vi(2, r.choice([2, 2, 2, 1, 0, 3, 2**32 + 2]))
        if kind == "sum":
            data += vi(3, r.choice([1, 1, 0, 2]))
        fields = [text(1, name if r.random() < 0.95 else ""), ld(field, data), text(3, "{token}")]
        if self.hostile and r.random() < 0.1:
            fields.append(r.choice([ld(5, b""), text(1, "\udcff".encode("utf-8", "surrogatepass").decode("latin-1")),
                                    ld(1, b"\xc3\x28"), vi(1, 5)]))
        r.shuffle(fields)
        return b"".join(fields)

    def request(self) -> bytes:
        r = self.rng
        if self.hostile and r.random() < 0.03:
            return r.randbytes(r.randint(0, 64))
        self.t += r.choice([0, 1, 5, 10])
        out = []
        for _ in range(r.randint(1, 2)):
            resource = b"".join(ld(1, kv(k, v).SerializeToString()) for k, v in r.choice(
                [{"service.name": "agent", "host.name": "node-1"}, {"datadog.host.name": "dd", "env": "x"}, {}]
            ).items())
            scopes = []
            for _ in range(r.randint(1, 2)):
                scope = text(1, r.choice(["lib", "", "ünï"])) + text(2, r.choice(["1.2", ""]))
                sm = [ld(1, scope)] if r.random() < 0.9 else []
                sm += [ld(2, self.metric()) for _ in range(r.randint(0, 5))]
                r.shuffle(sm)
                scopes.append(ld(2, b"".join(sm)))
            rm = ([ld(1, resource)] if r.random() < 0.9 else []) + scopes
            r.shuffle(rm)
            out.append(ld(1, b"".join(rm)))
        raw = b"".join(out)
        if self.hostile and r.random() < 0.3:
            raw = mutate(r, raw)
        return raw


def mutate(r: random.Random, raw: bytes) -> bytes:
    pick = r.randrange(6)
    i = r.randrange(len(raw) + 1)
    if pick == 0:
        return raw[:i]
    if pick == 1 and raw:
        i = min(i, len(raw) - 1)
        return raw[:i] + bytes([raw[i] ^ (1 << r.randrange(8))]) + raw[i + 1:]
    if pick == 2:
        return raw[:i] + r.randbytes(r.randint(1, 4)) + raw[i:]
    if pick == 3:
        return raw + r.choice([b"\x0b\x0c", b"\x0c", b"\x0f", b"\x08" + b"\xff" * 10, b"\x0a\xff\xff\xff\xff\x0f",
                               b"\x00\x00", b"\x0a\x02\x12\x00"])
    if pick == 4:  # a resource_metrics with a second scope, or a scope_metrics with two data fields
        return raw + ld(1, ld(2, ld(1, text(1, "a")) + ld(1, text(1, "b"))))
    return raw + ld(1, ld(2, ld(2, text(1, "m") + ld(5, b"") + ld(7, b""))))


CONFIGS: list[dict[str, Any]] = [
    {},
    {"metrics": {"sums": {"initial_cumulative_monotonic_value": "keep"}}},
    {"metrics": {"sums": {"initial_cumulative_monotonic_value": "drop"}, "delta_max_series": 3}},
    {"metrics": {"sums": {"cumulative_monotonic_mode": "raw_value"}, "summaries": {"mode": "noquantiles"},
                 "resource_attributes_as_tags": True, "instrumentation_scope_metadata_as_tags": True}},
    {"metrics": {"histograms": {"mode": "counters"}, "delta_ttl": 20}, "tags": ["env:t", "team:x"]},
]


def compare(seed: int, config: dict[str, Any], requests: int, hostile: bool) -> tuple[int, int]:
    rng = random.Random(seed)
    native, python, clock = mappers(**config)
    spy = Spy(native) if native._render is not None else None
    gen = Gen(rng, hostile)
    for _ in range(requests):
        raw = gen.request()
        assert outcome(native, raw) == outcome(python, raw), (seed, raw)
        clock.advance(rng.choice([0, 1, 15]))
    return (spy.walked, spy.left) if spy else (0, 0)


@settings(max_examples=250, deadline=None)
@given(seed=st.integers(0, 2**32), config=st.sampled_from(CONFIGS))
def test_the_same_series_as_the_python_walk_on_random_requests(seed: int, config: dict[str, Any]) -> None:
    compare(seed, config, requests=8, hostile=False)


@settings(max_examples=250, deadline=None)
@given(seed=st.integers(0, 2**32), config=st.sampled_from(CONFIGS))
def test_the_same_outcome_as_the_python_walk_on_hostile_requests(seed: int, config: dict[str, Any]) -> None:
    compare(seed, config, requests=8, hostile=True)


def test_thousands_of_hostile_requests_are_walked_in_c_or_left_to_python_with_the_same_outcome() -> None:
    walked = left = 0
    for seed in range(400):  # 400 x 8 requests
        w, lf = compare(seed, CONFIGS[seed % 4], requests=8, hostile=True)
        walked, left = walked + w, left + lf
    assert walked > 1000 and left > 200  # both routes were taken often


def test_plain_requests_are_walked_in_c() -> None:
    native, python, _ = mappers()
    spy = Spy(native)
    gen = Gen(random.Random(7), hostile=False)
    for _ in range(50):
        raw = gen.request()
        assert outcome(native, raw) == outcome(python, raw)
    assert spy.left == 0 and spy.walked == 50


@pytest.mark.parametrize("value", ["", "v", "ünï \"q\" \\ \n\t\x01", True, False, 0, -7, 2**63 - 1, -(2**63), 0.0, -0.0,
                                   1e16, 1e22, 1.5e-7, 0.1, 3.0, 2.0**70, float("nan"), float("inf"), float("-inf"),
                                   b"", b"\x00\xff", [], ["a", 1, 2.5, None, float("nan")], {"k": "v", "n": [True]},
                                   {}, {"a": {"b": 1e-9}}])
def test_attribute_values_render_as_anyvalue_as_string(value: Any) -> None:
    native, python, _ = mappers()
    point = f64(3, T0 * NS, "<Q") + f64(4, 1.0) + ld(7, kv("k", value).SerializeToString())
    raw = ld(1, ld(2, ld(2, text(1, "g") + ld(5, ld(1, point)))))
    spy = Spy(native)
    out = native.map(raw)
    assert spy.walked == 1
    want = as_string(any_value(value))
    assert orjson.loads(orjson.dumps(out.documents()))[0]["tags"] == [f"k:{want or 'n/a'}"]
    assert outcome(native, raw)[:3] == outcome(python, raw)[:3]
    if isinstance(value, float) and math.isfinite(value):
        assert "e" not in want and float(want) == value  # Go's 'f' format: never an exponent


@pytest.mark.parametrize("limits", [SERIES_LIMITS, Limits(6000, 6000), Limits(900, 900)])
def test_requests_cut_from_the_text_are_the_python_walks_requests(limits: Limits) -> None:
    # the exporter cuts the C renderer's text into request bodies without parsing it: the same bodies, the same
    # items per body, the same items too large to send, whatever the limits
    native, python, _ = mappers()
    gen = Gen(random.Random(3), hostile=False)
    from_text = BodyBuilder(series_body, series_docs, "none", limits)
    from_series = BodyBuilder(series_body, series_docs, "none", limits)
    bodies = most = 0
    for _ in range(40):
        raw = gen.request()
        a, b = native.map(raw), python.map(raw)
        assert a.text is not None and b.text is None
        got = from_text.text_batches(SERIES_HEAD, a.text, a.cuts, a.offsets) if a.text else ([], 0)
        want = from_series.batches(b.series, b.cuts) if b.series else ([], 0)
        assert [(x.body, x.cuts) for x in got[0]] == [(x.body, x.cuts) for x in want[0]] and got[1] == want[1]
        bodies, most = bodies + len(got[0]), max(most, len(got[0]))
        for batch in got[0]:
            check_series(orjson.loads(batch.body))
    assert bodies > 20 and (most > 1 or limits is SERIES_LIMITS)


def test_the_renderer_cannot_be_entered_again_from_what_it_calls_back() -> None:
    native, _, _ = mappers()
    assert native._native is not None
    renderer = native._native

    class Reentrant:
        def tags(self, attrs: Any) -> tuple[str, ...]:
            renderer.render(b"", [], [], {}, 0.0, T0)
            return ("never",)

    native._tags = Reentrant()  # type: ignore[assignment]
    point = f64(3, T0 * NS, "<Q") + f64(4, 1.0) + ld(7, kv("k", [1, 2]).SerializeToString())  # an array: Python's
    with pytest.raises(RuntimeError, match="while it renders"):
        native.map(ld(1, ld(2, ld(2, text(1, "g") + ld(5, ld(1, point))))))
    assert native.map(b"").cuts == []  # and it works again afterwards
