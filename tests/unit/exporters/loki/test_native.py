"""The C renderer (exporters/loki/_lokiwire.c) against PushBuilder's Python walk (exporters/loki/push.py).

Both builders get the same requests, written field by field here, so the encodings include the odd
ones a client may send too: fields in any order or written twice, unknown fields and groups, wrong wire
types, invalid UTF-8, bodies that are not one string, metadata names that collide, truncations. They
must give the same push body, or both refuse the request. Where the renderer leaves a request to
Python is checked too: SDK-shaped requests must be rendered in C, or the speed is gone unnoticed.
"""
from __future__ import annotations

import random
import threading
from typing import Any

import orjson
import pytest

from exporters.loki import push
from exporters.loki.config import LabelsConfig, LokiExporterConfig
from exporters.loki.push import PushBuilder, encode
from pipeline.testing import any_value, kv, ld, varint, vi
from pipeline.testing import fixed32 as f32
from pipeline.testing import fixed64 as f64
from tests.e2e.loki_intake import check_push

URL = "http://loki:3100/loki/api/v1/push"
T0 = 1_700_000_000_000_000_000
NOW = 1_800_000_000_000_000_000


@pytest.fixture(autouse=True, params=["both"])
def walk() -> str:  # overrides conftest.py's: each test here runs both walks itself
    return "both"


def config(**kw: Any) -> LokiExporterConfig:
    return LokiExporterConfig(endpoint=URL, **kw)


CONFIGS = [config(), config(labels=LabelsConfig(resource={"severity": "level", "deployment.environment": "env"}))]


def builders(cfg: LokiExporterConfig) -> tuple[PushBuilder, PushBuilder]:
    native, python = PushBuilder(cfg, now_ns=lambda: NOW), PushBuilder(cfg, now_ns=lambda: NOW, native=False)
    assert native.native and not python.native
    return native, python


def outcome(builder: PushBuilder, raw: bytes) -> tuple[Any, ...]:
    try:
        batch = builder.build(raw)
    except ValueError:
        return ("refused",)
    body = encode(batch.streams)
    if batch.entries:
        entries, _ = check_push(orjson.loads(body))
        assert len(entries) == batch.entries
    return ("built", batch.entries, body)


# -- the wire, field by field ------------------------------------------------------------------------

def group(field: int, inner: bytes) -> bytes:
    return varint(field << 3 | 3) + inner + varint(field << 3 | 4)


TEXTS = ["hello", "tool call failed: \"timeout\"\n\tat step 3", "\x00\x01\x1f\x7f \\ / é € 😀 \u2028",
         "x" * 300, "{\"json\": [1, 2]}"]
SEVERITIES = ["INFO", "info", "WARN", " Error ", "É", "debug2", "audit", "notice", "trace", "fatal", "crit", "x"]
ATTR_KEYS = ["tool.name", "gen_ai.system", "trace_id", "span_id", "http-route", "1st", "é", "tool.name"]


def attribute(rng: random.Random) -> bytes:
    key = rng.choice(ATTR_KEYS)
    value = rng.choice(["get_weather", "", "a\"b\\c\nd", 7, True, 1.5, ["x", 2], {"k": "v"}, b"\x01"])
    return kv(key, value).SerializeToString()


def body(rng: random.Random) -> bytes | None:
    roll = rng.random()
    if roll < 0.7:
        return ld(1, rng.choice(TEXTS).encode())
    return rng.choice([
        None,                                          # no body
        ld(1, b""),                                    # an empty string
        vi(3, 42),                                     # an int body
        any_value({"k": "v"}).SerializeToString(),     # a map body
        ld(1, b"a") + ld(1, b"b"),                     # a string written twice
        ld(1, b"a") + vi(3, 5),                        # a string, then an int (the oneof's last wins)
        ld(1, b"bad \xff utf-8"),
        ld(1, b"\xed\xa0\x80"),                        # an encoded surrogate
    ])


def record(rng: random.Random) -> bytes:
    pieces: list[bytes] = []
    if rng.random() < 0.9:
        pieces.append(f64(1, rng.choice([T0, T0 + rng.randrange(10**9), 0, 2**63 - 1, 2**63, 2**64 - 1])))
    if rng.random() < 0.3:
        pieces.append(f64(11, rng.choice([T0 + 5, 0, 2**64 - 1])))
    if rng.random() < 0.5:
        pieces.append(vi(2, rng.choice([0, 1, 5, 9, 12, 13, 17, 21, 24, 25, 100, -1, 2**31])))
    if rng.random() < 0.7:
        pieces.append(ld(3, rng.choice(SEVERITIES).encode()))
    b = body(rng)
    if b is not None:
        pieces.append(ld(5, b))
    pieces += [ld(6, attribute(rng)) for _ in range(rng.choice([0, 1, 2, 3, 5]))]
    if rng.random() < 0.6:
        pieces.append(ld(9, rng.choice([bytes(range(16)), b"", b"\xab\xcd\xef"])))
    if rng.random() < 0.5:
        pieces.append(ld(10, rng.choice([bytes(range(8, 16)), b""])))
    if rng.random() < 0.3:
        pieces.append(rng.choice([vi(7, 3), f32(8, 1), ld(12, b"agent.step"), vi(99, 1), f64(200, 5)]))
    roll = rng.random()
    if roll < 0.04:
        pieces.append(vi(1, 5))                        # time_unix_nano with the wrong wire type
    elif roll < 0.07:
        pieces.append(ld(3, b"\xc3\x28"))              # a severity text that is not UTF-8
    elif roll < 0.09:
        pieces.append(group(50, vi(1, 1)))             # an unknown group
    elif roll < 0.11:
        pieces.append(f64(6, 1))                       # attributes with the wrong wire type
    if rng.random() < 0.3:
        rng.shuffle(pieces)
    return b"".join(pieces)


RESOURCES = [{"service.name": "agent"}, {"service.name": "agent", "severity": "audit"}, {},
             {"service.name": "other", "deployment.environment": "prod"}, {"service.name": ""}]


def resource(rng: random.Random) -> bytes:
    attrs = rng.choice(RESOURCES)
    return b"".join(ld(1, kv(k, v).SerializeToString()) for k, v in attrs.items())


def request(rng: random.Random) -> bytes:
    out = []
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        pieces = []
        if rng.random() < 0.9:
            pieces.append(ld(1, resource(rng)))
        if rng.random() < 0.03:
            pieces.append(ld(1, resource(rng)))        # a resource written twice (merged by protobuf)
        for _ in range(rng.choice([1, 1, 2])):
            scope = [ld(1, ld(1, b"agent"))] + [ld(2, record(rng)) for _ in range(rng.choice([1, 2, 5, 12]))]
            pieces.append(ld(2, b"".join(scope)))
        if rng.random() < 0.2:
            pieces.append(ld(3, b"https://opentelemetry.io/schemas/1.26.0"))
        if rng.random() < 0.3:
            rng.shuffle(pieces)
        out.append(ld(1, b"".join(pieces)))
    raw = b"".join(out)
    if raw and rng.random() < 0.03:
        raw = raw[:rng.randrange(len(raw))]
    return raw


# -- the tests ---------------------------------------------------------------------------------------

def test_the_c_renderer_is_built_and_takes_the_default_config_only() -> None:
    assert push._lokiwire is not None, "exporters/loki/_lokiwire.c was not built (setup.py)"
    assert PushBuilder(config()).native
    assert not PushBuilder(config(), native=False).native
    assert not PushBuilder(config(format="json")).native
    assert not PushBuilder(config(structured_metadata=False)).native
    assert not PushBuilder(config(labels=LabelsConfig(attributes={"tool.name": ""}))).native


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "resource labels"])
def test_every_request_gives_the_same_body_on_both_walks(cfg: LokiExporterConfig) -> None:
    rng = random.Random(17)
    native, python = builders(cfg)
    rendered = refused = 0
    for i in range(1500):
        raw = request(rng)
        if native._build_native(raw) is not None:
            rendered += 1
        got, want = outcome(native, raw), outcome(python, raw)
        assert got == want, f"request {i}: {raw.hex()}"
        refused += want[0] == "refused"
    # the cases above must reach both the C renderer and its hand-overs
    assert rendered > 150 and refused > 20, (rendered, refused)


def test_sdk_shaped_requests_are_rendered_in_c() -> None:
    rng = random.Random(3)
    native, python = builders(config())
    for _ in range(50):
        records = []
        for _ in range(rng.randrange(1, 40)):
            attrs = b"".join(ld(6, kv(k, rng.choice(["a", "b", 3])).SerializeToString())
                             for k in rng.sample(["tool.name", "gen_ai.system", "session.id", "step"], 3))
            line = rng.choice(TEXTS).encode()
            records.append(ld(2, f64(1, T0 + rng.randrange(10**9)) + vi(2, rng.choice([9, 13, 17]))
                              + ld(3, rng.choice([b"INFO", b"WARN", b"ERROR"])) + ld(5, ld(1, line))
                              + attrs + ld(9, rng.randbytes(16)) + ld(10, rng.randbytes(8)) + f32(8, 1)))
        raw = ld(1, ld(1, resource(rng)) + ld(2, ld(1, ld(1, b"agent")) + b"".join(records)))
        batch = native._build_native(raw)
        assert batch is not None
        assert encode(batch.streams) == encode(python.build(raw).streams)


def test_colliding_metadata_names_keep_python_dict_order_and_last_value() -> None:
    # `http-route` and `http_route` sanitize to one name; an attribute named trace_id meets the record's trace id
    native, python = builders(config())
    attrs = [kv("http-route", "/a"), kv("x", "1"), kv("http_route", "/b"), kv("trace_id", "mine")]
    raw = ld(1, ld(2, ld(2, f64(1, T0) + ld(5, ld(1, b"line")) + b"".join(ld(6, a.SerializeToString())
                                                                            for a in attrs) + ld(9, bytes(16)))))
    assert native._build_native(raw) is None
    body = encode(native.build(raw).streams)
    assert body == encode(python.build(raw).streams)
    (entry,) = orjson.loads(body)["streams"][0]["values"]
    assert entry[2] == {"http_route": "/b", "x": "1", "trace_id": "00" * 16}


def test_many_severity_texts_in_one_request() -> None:
    native, python = builders(config())
    records = b"".join(ld(2, f64(1, T0 + i) + ld(3, f"level{i % 13}".encode()) + ld(5, ld(1, b"l"))) for i in range(60))
    raw = ld(1, ld(1, resource(random.Random(1))) + ld(2, records))
    assert native._build_native(raw) is not None
    assert encode(native.build(raw).streams) == encode(python.build(raw).streams)
    assert len(native.build(raw).streams) == 13


def test_every_control_character_and_non_ascii_text_is_escaped_as_orjson_does() -> None:
    native, _ = builders(config())
    text = "".join(map(chr, range(0x80))) + "é€😀\u2028\u2029\ufeff"
    raw = ld(1, ld(2, ld(2, f64(1, T0) + ld(5, ld(1, text.encode())))))
    batch = native._build_native(raw)
    assert batch is not None
    assert orjson.loads(encode(batch.streams))["streams"][0]["values"] == [[str(T0), text]]
    assert batch.streams[0].chunks[0][0] == orjson.dumps([[str(T0), text]])


def test_the_attribute_table_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "CACHE_SIZE", 8)
    native, python = builders(config())
    assert native._native is not None
    for i in range(40):
        attrs = b"".join(ld(6, kv(f"k{i}", str(j)).SerializeToString()) for j in range(5))
        raw = ld(1, ld(2, ld(2, f64(1, T0) + ld(5, ld(1, b"l")) + attrs)))
        assert encode(native.build(raw).streams) == encode(python.build(raw).streams)
        assert native._native.cached() <= 8 + 5  # emptied when a render starts with the table full


def test_a_render_entered_again_from_a_callback_hands_over_instead_of_sharing_its_table() -> None:
    # A callback runs Python, so another thread may call render on the same renderer meanwhile.
    assert push._lokiwire is not None
    raw = ld(1, ld(2, ld(2, f64(1, T0) + ld(5, ld(1, b"l")) + ld(6, kv("a", "1").SerializeToString()))))
    inner: list[object] = []

    def make(kv_bytes: bytes) -> tuple[str, bytes]:
        inner.append(renderer.render(raw, lambda res, level: 0))
        return "a", b'"a":"1"'

    renderer = push._lokiwire.Renderer(make, {b"": "res"}, {}, ("unknown",), "unknown", lambda: NOW, 100)
    with pytest.raises(AttributeError):  # this fake resource has no `fixed_level`: the error comes through
        renderer.render(raw, lambda res, level: 0)

    class Res:
        fixed_level = True

    renderer = push._lokiwire.Renderer(make, {b"": Res()}, {}, ("unknown",), "unknown", lambda: NOW, 100)
    assert renderer.render(raw, lambda res, level: 0) == ([(b'[["%d","l",{"a":"1"}]]' % T0, 1)], 1)
    assert inner == [None]


def test_renders_from_two_threads_give_the_python_bodies() -> None:
    rng = random.Random(5)
    raws = [request(rng) for _ in range(200)]
    native, python = builders(config())
    want = [outcome(python, raw) for raw in raws]
    got: dict[int, list[tuple[Any, ...]]] = {}

    def run(k: int) -> None:
        got[k] = [outcome(native, raw) for raw in raws]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] == want and got[1] == want


def test_a_request_of_as_many_streams_as_records_gives_the_python_bodies() -> None:
    # each record its own resource or its own severity: a stream each (the renderer finds streams by hash)
    native, python = builders(config())
    resources = b"".join(ld(1, ld(1, ld(1, kv("service.name", f"s{i}").SerializeToString()))
                            + ld(2, ld(2, f64(1, T0 + i) + ld(5, ld(1, b"x"))))) for i in range(3000))
    levels = ld(1, ld(2, b"".join(ld(2, f64(1, T0) + ld(3, f"L{i % 2000}".encode()) + ld(5, ld(1, b"x")))
                                  for i in range(3000))))
    for raw, streams in ((resources, 3000), (levels, 2000)):
        batch = native._build_native(raw)
        assert batch is not None and len(batch.streams) == streams
        assert encode(batch.streams) == encode(python.build(raw).streams)
