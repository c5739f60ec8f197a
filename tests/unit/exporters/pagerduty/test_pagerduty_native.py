"""The C ingest pass (_pdwire) against the Python loop: the same requests must leave the same history.

Two stores take the same sequence of requests, one through `_pdwire.Ingestor` (with the Python loop
for what it hands back or refuses), one through the Python loop alone; after every request their
whole state (every series' samples, slots, timelines, reset offsets, start and point times) and what
ingest returned (or raised) must be identical. The requests are random plain OTLP (every kind and
temporality, resets, out-of-order points, NaN / inf / negative values, flagged points, changed bucket
layouts and kinds, the series limit) and hostile bytes (truncated, corrupted, wrong wire types, bad
varints, huge lengths, groups, duplicated fields, names that are not the first field).
"""
from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from exporters.pagerduty import store as store_module
from exporters.pagerduty.store import _TIMELINES, CounterSeries, GaugeSeries, HistogramSeries, SeriesStore
from pipeline import wire
from pipeline.testing import kv
from tests.unit.exporters.pagerduty.pdhelpers import CUMULATIVE, DELTA, T0_NS

NAMES = ("g", "c", "h", "m.x")
# (-0.0 and 0.0: equal bounds with other bytes, which the C pass compares: it must leave them to Python)
LAYOUTS = ((1.0, 2.0, 5.0), (1.0, 2.0, 5.0), (0.5, 1.0), (), (1.0, math.nan), (2.0, 1.0), (-0.0, 1.0), (0.0, 1.0))


@pytest.fixture(autouse=True)
def ingest_path() -> str:
    """(Both paths in every test here: this replaces the directory's fixture that picks one.)"""
    assert store_module._pdwire is not None, "exporters/pagerduty/_pdwire.c was not built (setup.py)"
    return "both"


def pair(max_series: int = 40, resolution: float = 2.0) -> tuple[SeriesStore, SeriesStore]:
    retention = {name: 30.0 for name in NAMES}
    native = SeriesStore(retention, resolution=resolution, max_series=max_series, watch_start_ns=T0_NS - 10**12)
    python = SeriesStore(retention, resolution=resolution, max_series=max_series, watch_start_ns=T0_NS - 10**12)
    python._native = None
    assert native._native is not None
    return native, python


def _f(x: float) -> bytes:
    return struct.pack("<d", x)  # exact: NaN, -0.0 and inf compare as bytes


def _value(v: Any) -> Any:
    if isinstance(v, float):
        return _f(v)
    if hasattr(v, "tobytes"):
        return v.tobytes()
    if isinstance(v, (list, tuple)):
        return tuple(_value(x) for x in v)
    return v


def state(s: SeriesStore) -> Any:
    out: dict[str, Any] = {"count": s.series_count}
    for name, table in s.tables.items():
        series = {}
        for key, x in table.series.items():
            fields = {f: _value(getattr(x, f)) for cls in type(x).__mro__ for f in getattr(cls, "__slots__", ())}
            fields["kind"] = x.kind.value
            series[key] = (type(x).__name__, fields)
        out[name] = (table.version, table.changes, list(series), series)
    return out


def outcome(s: SeriesStore, raw: bytes, now: float) -> Any:
    try:
        r = s.ingest(raw, now)
    except Exception as e:  # (what it raised is part of what must be equal)
        return ("raised", type(e).__name__)
    return ("ok", r.kept, dict(r.skipped))


def check(native: SeriesStore, python: SeriesStore, raw: bytes, now: float) -> Any:
    a, b = outcome(native, raw, now), outcome(python, raw, now)
    assert a == b
    assert state(native) == state(python)
    return a


# -- random plain OTLP -------------------------------------------------------------------------------

class Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.t_ns = T0_NS
        self.raw: dict[tuple[str, bytes], float] = {}

    def attrs(self) -> list[Any]:
        i = self.rng.randrange(6)
        out = [kv("svc", f"s{i % 3}"), kv("i", i)]
        if self.rng.random() < 0.1:
            out.append(kv("extra", self.rng.choice([1.5, True, "x", [1, "a"]])))
        if self.rng.random() < 0.05:
            out.reverse()  # same attributes, another order: another series (as in the Python loop)
        return out

    def value(self, base: float) -> float:
        r = self.rng.random()
        if r < 0.03:
            return self.rng.choice([math.nan, math.inf, -math.inf, -1.0, -0.0])
        return base

    def number_point(self, dp: Any, name: str, cumulative: bool) -> None:
        attrs = self.attrs()
        dp.attributes.extend(attrs)
        key = (name, attrs[0].SerializeToString() + attrs[1].SerializeToString())
        if cumulative:
            if self.rng.random() < 0.05:
                self.raw[key] = 0.0  # a reset
            self.raw[key] = self.raw.get(key, 0.0) + self.rng.randrange(4)
            v = self.value(self.raw[key])
        else:
            v = self.value(float(self.rng.randrange(-3, 10)))
        if float(v).is_integer() and self.rng.random() < 0.5:
            dp.as_int = int(v)
        else:
            dp.as_double = v
        dp.start_time_unix_nano = self.rng.choice([1, 1, 1, T0_NS, self.t_ns - 10**9, 0])
        dp.time_unix_nano = self.t_ns + self.rng.choice([0, 0, 1, -5, 7])
        if self.rng.random() < 0.05:
            dp.flags = 1  # no recorded value
        if self.rng.random() < 0.05:
            dp.exemplars.add(as_double=1.0)

    def histogram_point(self, dp: Any) -> None:
        dp.attributes.extend(self.attrs())
        bounds = self.rng.choice(LAYOUTS) if self.rng.random() < 0.1 else LAYOUTS[0]
        n = len(bounds) + 1 + (self.rng.random() < 0.03)  # now and then one count too many
        counts = [self.rng.randrange(6) * (self.t_ns - T0_NS) // 10**9 for _ in range(n)]
        dp.explicit_bounds.extend(bounds)
        dp.bucket_counts.extend(counts)
        dp.count = sum(counts)
        dp.sum = self.value(float(sum(counts)) * 0.7)
        dp.start_time_unix_nano = self.rng.choice([1, 1, T0_NS])
        dp.time_unix_nano = self.t_ns + self.rng.choice([0, 0, 3, -2])
        if self.rng.random() < 0.05:
            dp.flags = 1
        if self.rng.random() < 0.2:
            dp.min, dp.max = 0.1, 9.0

    def metric(self) -> Metric:
        name = self.rng.choice(NAMES + ("other",))
        m = Metric(name=name, unit="1", description="d")
        shape = {"g": "gauge", "c": "sum", "h": "hist"}.get(name, "")
        if not shape or self.rng.random() < 0.05:  # mostly one kind per name, sometimes another
            shape = self.rng.choice(["gauge", "sum", "nsum", "hist", "exp", "summary", "none"])
        points = self.rng.randrange(0, 6)
        delta = self.rng.random() < (0.4 if name == "m.x" else 0.02)
        if shape == "gauge":
            for _ in range(points):
                self.number_point(m.gauge.data_points.add(), name, False)
        elif shape in ("sum", "nsum"):
            m.sum.is_monotonic = shape == "sum"
            m.sum.aggregation_temporality = DELTA if delta else CUMULATIVE
            for _ in range(points):
                self.number_point(m.sum.data_points.add(), name, not delta)
        elif shape == "hist":
            m.histogram.aggregation_temporality = DELTA if delta else CUMULATIVE
            for _ in range(points):
                self.histogram_point(m.histogram.data_points.add())
        elif shape == "exp":
            m.exponential_histogram.data_points.add(count=1)
        elif shape == "summary":
            m.summary.data_points.add(count=1)
        return m

    def request(self) -> bytes:
        req = ExportMetricsServiceRequest()
        for _ in range(self.rng.randrange(1, 3)):
            rm = req.resource_metrics.add()
            if self.rng.random() < 0.9:
                rm.resource.attributes.append(kv("service.name", self.rng.choice(["a", "b"])))
            rm.schema_url = self.rng.choice(["", "https://opentelemetry.io/schemas/1.26.0"])
            for _ in range(self.rng.randrange(1, 3)):
                sm = rm.scope_metrics.add()
                sm.scope.name = self.rng.choice(["", "lib"])
                sm.metrics.extend(self.metric() for _ in range(self.rng.randrange(0, 5)))
        self.t_ns += self.rng.choice([0, 10**8, 10**9, 3 * 10**9])
        return req.SerializeToString()


@pytest.mark.parametrize("seed", range(8))
def test_random_requests_leave_the_same_history(seed: int) -> None:
    _TIMELINES.clear()
    native, python = pair(max_series=30 if seed % 2 else 1000)
    gen = Gen(seed)
    now = 100.0
    read = 0
    real = native._native
    calls: list[Any] = []

    class Spy:
        def ingest(self, *args: Any) -> Any:
            out = real.ingest(*args)
            calls.append(out)
            return out

    native._native = Spy()
    for step in range(150):
        now += gen.rng.choice([0.0, 0.3, 1.0, 2.5])
        raw = gen.request()
        check(native, python, raw, now)
        read += calls[-1] is not None
        if step % 25 == 24:
            native.prune(now)
            python.prune(now)
    assert read == 150  # every plain request was read by the C pass (nothing left to the Python loop)
    kept = sum(c[0] for c in calls)
    assert kept > 100 and kept > sum(len(s.times) for n in NAMES for s in native.series(n))  # most folded in C


# -- hostile bytes ------------------------------------------------------------------------------------

def _plain(gen: Gen) -> bytes:
    while True:
        raw = gen.request()
        if any(n.encode() in raw for n in NAMES):
            return raw


def _corrupt(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    what = rng.randrange(6)
    if what == 0 and b:
        return bytes(b[:rng.randrange(len(b))])  # truncated
    if what == 1 and b:
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if what == 2 and b:
        i = rng.randrange(len(b))
        return bytes(b[:i] + rng.randbytes(rng.randrange(1, 12)) + b[i:])
    if what == 3 and b:
        i = rng.randrange(len(b))
        return bytes(b[:i] + b"\xff" * 11 + b[i:])  # a varint that never ends
    if what == 4 and b:
        i = rng.randrange(len(b))
        return bytes(b[:i] + bytes([rng.choice([0x0B, 0x0C, 0x0E, 0x0F, 0x03, 0x00])]) + b[i:])  # groups, bad types
    return rng.randbytes(rng.randrange(0, 64))


@pytest.mark.parametrize("seed", range(6))
def test_hostile_bytes_leave_the_same_history(seed: int) -> None:
    _TIMELINES.clear()
    native, python = pair()
    gen = Gen(100 + seed)
    now = 100.0
    for _ in range(500):
        now += 0.5
        raw = _plain(gen)
        if gen.rng.random() < 0.8:
            raw = _corrupt(gen.rng, raw)
        check(native, python, raw, now)


def _ld(field: int, body: bytes) -> bytes:
    return wire.encode_varint(field << 3 | 2) + wire.encode_varint(len(body)) + body


def _wrap(metric: bytes, *, resource: bytes = b"", scope: bytes = b"", rm_extra: bytes = b"",
          sm_extra: bytes = b"") -> bytes:
    sm = (_ld(1, scope) if scope else b"") + _ld(2, metric) + sm_extra
    rm = (_ld(1, resource) if resource else b"") + _ld(2, sm) + rm_extra
    return _ld(1, rm)


def _gauge_point(value: float = 1.0, extra: bytes = b"") -> bytes:
    return (b"\x19" + struct.pack("<Q", T0_NS) + b"\x21" + struct.pack("<d", value)
            + _ld(7, kv("k", "v").SerializeToString()) + extra)


def _gauge(point: bytes, name: bytes = b"g", extra: bytes = b"") -> bytes:
    return _ld(1, name) + _ld(5, _ld(1, point)) + extra


HANDMADE = {
    "plain": _wrap(_gauge(_gauge_point())),
    "name written twice": _wrap(_gauge(_gauge_point(), extra=_ld(1, b"c"))),
    "name not first": _wrap(_ld(5, _ld(1, _gauge_point())) + _ld(1, b"g")),
    "name with a long varint length": _wrap(b"\x0a\x81\x00g" + _ld(5, _ld(1, _gauge_point()))),
    "two data fields": _wrap(_gauge(_gauge_point(), extra=_ld(7, b""))),
    "data as a varint": _wrap(_ld(1, b"g") + b"\x28\x01"),
    "time as a varint": _wrap(_gauge(b"\x18\x05" + _gauge_point())),
    "attributes as fixed64": _wrap(_gauge(_gauge_point(extra=b"\x39" + bytes(8)))),
    "group in a point": _wrap(_gauge(_gauge_point(extra=b"\x5b\x5c"))),
    "unknown fields everywhere": _wrap(_gauge(_gauge_point(extra=b"\x78\x01\x7d\x00\x00\x00\x00"), extra=b"\x70\x05"),
                                       rm_extra=b"\x20\x01", sm_extra=_ld(9, b"zz")) + b"\x10\x01",
    "huge length": _wrap(_gauge(_gauge_point())) + b"\x0a\xff\xff\xff\xff\x0f",
    "non-ASCII schema_url": _wrap(_gauge(_gauge_point()), rm_extra=_ld(3, "é".encode())),
    "invalid UTF-8 schema_url": _wrap(_gauge(_gauge_point()), sm_extra=_ld(3, b"\xff")),
    "resource twice": _wrap(_gauge(_gauge_point()), resource=b"", rm_extra=_ld(1, b"") + _ld(1, b"")),
    "malformed resource": _wrap(_gauge(_gauge_point()), resource=b"\x0a\x05ab"),
    "malformed attribute": _wrap(_gauge(b"\x3a\x02\x0a\x09" + _gauge_point())),
    "as_int after as_double": _wrap(_gauge(_gauge_point(extra=b"\x31" + struct.pack("<q", -7)))),
    "NaN value": _wrap(_gauge(_gauge_point(math.nan))),
    "empty metric": _wrap(b""),
    "empty name": _wrap(_gauge(_gauge_point(), name=b"")),
    "packed bounds of 7 bytes": _wrap(_ld(1, b"h") + _ld(9, _ld(1, _ld(7, bytes(7))))),
    "unpacked bounds and counts": _wrap(_ld(1, b"h") + _ld(9, _ld(1, b"\x39" + _f(1.0) + b"\x31" + bytes(8)
                                                            + b"\x31" + struct.pack("<Q", 3)))),
    "flags of 64 bits": _wrap(_gauge(_gauge_point(extra=b"\x40\x81\x80\x80\x80\x80\x80\x80\x80\x80\x01"))),
    "temporality of 64 bits": _wrap(_ld(1, b"c") + _ld(7, _ld(1, _gauge_point()) + b"\x10\x81\x80\x80\x80\x10"
                                                       + b"\x18\x02")),
}


@pytest.mark.parametrize("name", sorted(HANDMADE))
def test_handmade_requests_leave_the_same_history(name: str) -> None:
    native, python = pair()
    raw = HANDMADE[name]
    for now in (1.0, 1.5, 4.0):  # a new series, a folded sample, a new slot
        check(native, python, raw, now)


def test_the_c_pass_takes_plain_requests_and_leaves_odd_ones_to_python() -> None:
    native, _ = pair()
    assert native._native is not None
    read = native._native.ingest
    args = (native._table_list, native._resource, native._native_point)
    plain = read(HANDMADE["plain"], 1.0, *args, store_module.IngestResult())
    assert plain is not None and plain[0] == 0  # a new series: taken by the Python code it hands the point to
    assert read(HANDMADE["plain"], 1.5, *args, store_module.IngestResult()) == (1, 0, 0, 0)  # folded in C
    for odd in ("name written twice", "name not first", "time as a varint", "group in a point", "huge length",
                "non-ASCII schema_url", "resource twice", "packed bounds of 7 bytes"):
        assert read(HANDMADE[odd], 2.0, *args, store_module.IngestResult()) is None, odd


def test_samples_folded_and_appended_in_c_match_the_definitions() -> None:
    """Hand-computed: a gauge folds into its slot, a cumulative counter resets, a histogram accumulates."""
    native, _ = pair(resolution=10.0)
    from tests.unit.exporters.pagerduty.pdhelpers import counter, gauge, histogram, request
    for now, v in ((1.0, 3.0), (2.0, 5.0), (11.0, 4.0)):
        native.ingest(request(gauge("g", [({}, v)])), now)
    (g,) = native.series("g")
    assert isinstance(g, GaugeSeries)
    assert list(g.times) == [2.0, 11.0] and list(g.last) == [5.0, 4.0]
    assert list(g.csums) == [8.0, 12.0] and list(g.ccounts) == [2.0, 3.0]
    assert list(g.mins) == [3.0, 4.0] and list(g.maxs) == [5.0, 4.0]
    for i, (now, v) in enumerate(((1.0, 10), (11.0, 15), (21.0, 4))):
        native.ingest(request(counter("c", [({}, v)], time_ns=T0_NS + i)), now)
    (c,) = native.series("c")
    assert isinstance(c, CounterSeries) and list(c.totals) == [10.0, 15.0, 19.0]  # 15, then a reset to 0 and 4
    for i, (now, counts) in enumerate(((1.0, [1, 2, 3, 4]), (11.0, [2, 2, 3, 5]))):
        native.ingest(request(histogram("h", [({}, counts, 1.0)], [1.0, 2.0, 5.0], delta=True,
                                        time_ns=T0_NS + i)), now)
    (h,) = native.series("h")
    assert isinstance(h, HistogramSeries)
    assert list(h.data) == [1, 2, 3, 4, 10, 1.0, 3, 4, 6, 9, 22, 2.0]


def test_series_removed_or_replaced_are_not_found_again_by_the_c_index() -> None:
    """The C pass finds known series through its own index (made from earlier calls); a series the store
    removed (prune) or replaced (another kind or bucket layout, even within one request) must never be
    written again, and a store reconfigured starts a new index."""
    from tests.unit.exporters.pagerduty.pdhelpers import counter, gauge, histogram, request
    _TIMELINES.clear()
    native, python = pair(resolution=1.0)
    attrs = [{"k": "v"}, {"k": "w", "n": 3}, {}]
    g = request(gauge("g", [(a, 1.0) for a in attrs]), counter("c", [(a, 2.0) for a in attrs], delta=True))
    now = 1.0
    for _ in range(4):  # new series, then taken from the dict (and indexed), then from the index
        now += 1.0
        check(native, python, g, now)
    for s in (native, python):
        s.prune(now + 100.0)  # every series gone
    assert native.series_count == 0
    for _ in range(3):
        now += 1.0
        check(native, python, g, now)
    # "g" as a histogram, then as a gauge again, in one request: each replaces the series under the same key
    h = histogram("g", [({"k": "v"}, [1, 2], 3.0)], [1.0], delta=True)
    flip = request(gauge("g", [({"k": "v"}, 5.0)]), h, gauge("g", [({"k": "v"}, 6.0)]))
    for _ in range(3):
        now += 1.0
        check(native, python, flip, now)
        now += 1.0
        check(native, python, g, now)
    # another bucket layout replaces a histogram; the old one must not be found again
    for bounds in ((1.0,), (2.0,), (1.0,)):
        now += 1.0
        check(native, python, request(histogram("h", [({"k": "v"}, [1, 2], 3.0)], bounds, delta=True)), now)
    for s in (native, python):
        s.configure({"g": 30.0, "c": 30.0}, resolution=1.0, max_series=40)
    for _ in range(3):
        now += 1.0
        check(native, python, g, now)


def test_the_c_index_follows_a_table_whose_series_dict_is_replaced() -> None:
    """(Not something the store does: the index must still not hand out a series of the old dict.)"""
    from tests.unit.exporters.pagerduty.pdhelpers import gauge, request
    _TIMELINES.clear()
    native, python = pair(resolution=1.0)
    g = request(gauge("g", [({"k": "v"}, 1.0)]))
    for now in (1.0, 2.0, 3.0):
        check(native, python, g, now)
    for s in (native, python):
        s.tables["g"].series = {}
        s.series_count = 0
    for now in (4.0, 5.0, 6.0):
        check(native, python, g, now)


def test_long_attributes_make_the_same_keys_in_c_and_python() -> None:
    """Attributes of 128 bytes and more have lengths of two or three varint bytes in the key."""
    from tests.unit.exporters.pagerduty.pdhelpers import gauge, request
    _TIMELINES.clear()
    native, python = pair(resolution=1.0)
    points = [({"k": "x" * 200}, 1.0), ({"k": "y" * 20_000, "j": 1}, 2.0), ({"k": "y" * 20_000}, 3.0)]
    for now in (1.0, 2.0, 3.0, 3.5):
        check(native, python, request(gauge("g", points)), now)
    long_kv = kv("k", "y" * 20_000).SerializeToString()
    assert [s.key[1] for s in native.series("g")][2] == wire.encode_varint(len(long_kv)) + long_kv
    assert len(wire.encode_varint(len(long_kv))) == 3
    for s in native.series("g"):
        assert list(s.times) == [1.0, 2.0, 3.5]
