"""The privacy processors' wire path against the decoded-message oracle (tests/.../oracle.py).

secret_mask and uuid_normalize edit a request's wire bytes directly (anchor scan, descriptor-driven
walk, splice). The oracle applies the same rules to a decoded message the plain way; here every
input goes through both and the results must decode to equal messages, with equal per-detector
counts: the corpus, the shared benchmark load, random OTLP requests of all three signals, awkward
encodings, on every scanner (libhyperscan from C, the hyperscan binding, CPython `re`) and both
walkers (C, Python), alone and fused. The scanner and the walker are also tested on their own.
"""
from __future__ import annotations

import importlib.util
import os
import re
import string

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.config.types import Secret
from pipeline.model import Payload, Signal
from pipeline.testing import kv, make_logs, make_traces
from processors.privacy import scanner as scanner_module
from processors.privacy import secret_keys as sk
from processors.privacy import secret_rules as sr
from processors.privacy.scanner import Anchor, AnchorScanner, available_backends, fixed_width, shaped
from processors.privacy.secret_mask import SecretMask, SecretMaskConfig
from processors.privacy.stage import Fused
from processors.privacy.uuid_normalize import PatternConfig, UUIDNormalize, UUIDNormalizeConfig
from processors.privacy.walker import (
    STRING,
    Attrs,
    SelectedKeys,
    TextRun,
    Walker,
    WireFallback,
    wire_plan,
)
from tests.testdata.secret_corpus import (
    NON_SECRETS,
    PLAIN_KEYS,
    SECRETS,
    SENSITIVE_KEYS,
)

from .oracle import secret_reference, uuid_reference

#: scanner + walker: every scanner with the C walker (what runs where it is built), and the Python
#: walker with the scanners a machine without a C compiler has (the hyperscan binding, CPython `re`).
BACKENDS = [b for b in ["libhs+c", "binding+c", "re+c", "binding+python", "re+python"]
            if b.partition("+")[0] in available_backends()]
SCANNERS = list(available_backends())
WALKERS = {"c": True, "python": False}


def _kw(backend: str) -> dict[str, object]:
    scanner, _, walker = backend.partition("+")
    return {"scanner_backend": scanner, "native": WALKERS[walker]}


def _walker_kw(backend: str) -> dict[str, object]:
    return {"native": WALKERS[backend.partition("+")[2]]}


U = "f50ae695-14da-8c65-9ce2-b10cccdaebf9"

SECRET_CONFIGS = {
    "default": SecretMaskConfig(),
    "hash": SecretMaskConfig(mode="hash", hash_key=Secret("k3y")),
    "long-replacement": SecretMaskConfig(replacement="[REDACTED BY OTELPIPE: " + "x" * 140 + "]"),
    "keys-off": SecretMaskConfig(key_matching=False),
    "allowed": SecretMaskConfig(allowed_keys=("debug.*", "http.request.header.cookie")),
    "some-off": SecretMaskConfig(detectors={"credential_pair": False, "card_number": False, "jwt": False}),
    "names-allowed": SecretMaskConfig(allowed_keys=("db_password", "Value"), identifier_keys=()),
    "ids-blocked": SecretMaskConfig(blocked_keys=("password", "token", "session.id", "user.id")),
    "summary": SecretMaskConfig(summary_attributes=True),
    "blocked-values": SecretMaskConfig(blocked_values=(r"T-\d+", r"user=(?P<secret>\w+)")),
}
UUID_CONFIGS = {
    "default": UUIDNormalizeConfig(),
    "logs-and-some-metrics": UUIDNormalizeConfig(log_attributes=("http.route", "run.id"),
                                                 metric_attributes=("http.route",)),
    "names-off": UUIDNormalizeConfig(span_names=False, hex_ids=False, ulids=False, replacement="<id>"),
    "patterns": UUIDNormalizeConfig(log_attributes=("http.route",), patterns=(
        PatternConfig(regex=r"T-\d+", replacement="T-{n}"), PatternConfig(regex=r"(\w+)@example\.com",
                                                                          replacement=r"\1@{domain}"))),
}


# -- the processors and the oracle --------------------------------------------------------------

_PROCESSORS: dict[tuple[object, ...], object] = {}


def _cached(kind: type, cfg: object, signal: Signal, backend: str) -> object:
    # Compiling a hyperscan database takes tens of milliseconds: one processor per configuration.
    key = (kind, id(cfg), signal, backend)
    if key not in _PROCESSORS:
        _PROCESSORS[key] = kind(cfg, signal, **(_kw(backend) if kind is SecretMask else _walker_kw(backend)))
    return _PROCESSORS[key]


def secret_both_ways(cfg: SecretMaskConfig, signal: Signal, raw: bytes, backend: str) -> None:
    wire: SecretMask = _cached(SecretMask, cfg, signal, backend)  # type: ignore[assignment]
    wire.masker.take_counts()
    out = wire(Payload(signal, raw=raw))
    expected, counts = secret_reference(cfg, signal, raw)
    if not cfg.summary_attributes:  # summary attributes are added to the decoded request
        assert out.raw_cached is not None  # edited (or kept) as bytes
    assert signal.request_type.FromString(out.serialize()) == expected
    assert wire.masker.take_counts() == counts


def uuid_both_ways(cfg: UUIDNormalizeConfig, signal: Signal, raw: bytes, backend: str) -> None:
    wire: UUIDNormalize = _cached(UUIDNormalize, cfg, signal, backend)  # type: ignore[assignment]
    wire.fn.take_counts()
    out = wire(Payload(signal, raw=raw))
    expected, counts = uuid_reference(cfg, signal, raw)
    if signal is not Signal.METRICS:  # metrics whose points normalization merges are re-encoded
        assert out.raw_cached is not None
    assert out.message == expected
    assert wire.fn.take_counts() == counts


def fused_both_ways(scfg: SecretMaskConfig, ucfg: UUIDNormalizeConfig, signal: Signal, raw: bytes, backend: str,
                    secret_first: bool = True) -> None:
    """secret_mask and uuid_normalize in one walk give what the oracle gives one after the other."""
    sm: SecretMask = _cached(SecretMask, scfg, signal, backend)  # type: ignore[assignment]
    un: UUIDNormalize = _cached(UUIDNormalize, ucfg, signal, backend)  # type: ignore[assignment]
    sm.masker.take_counts()
    un.fn.take_counts()
    fused = Fused(sm.single, un.single) if secret_first else Fused(un.single, sm.single)
    out = fused(Payload(signal, raw=raw))
    if secret_first:
        mid, scounts = secret_reference(scfg, signal, raw)
        expected, ucounts = uuid_reference(ucfg, signal, mid.SerializeToString())
    else:
        mid, ucounts = uuid_reference(ucfg, signal, raw)
        expected, scounts = secret_reference(scfg, signal, mid.SerializeToString())
    assert signal.request_type.FromString(out.serialize()) == expected
    assert sm.masker.take_counts() == scounts
    assert un.fn.take_counts() == ucounts


# -- random requests ------------------------------------------------------------------------------

_corpus_text = st.sampled_from([t for _, t, _ in SECRETS] + NON_SECRETS)
_id_text = st.one_of(
    st.uuids().map(lambda u: f"/v1/agents/{u}/runs"), st.uuids().map(lambda u: f"urn:uuid:{u}"),
    st.uuids().map(lambda u: f"{{{str(u).upper()}}}"), st.integers(0, 10**9).map(lambda i: f"/users/{i}/orders"),
    st.binary(min_size=8, max_size=20).map(bytes.hex), st.just("run 01ARZ3NDEKTSV4RRFFQ69G5FAV"),
)
_short = st.text(max_size=12)
_text = st.one_of(
    _corpus_text, _id_text, st.text(max_size=40),
    st.builds(lambda a, b, c: f"{a} {b} {c}", _short, st.one_of(_corpus_text, _id_text), _short),
    # long values, so that masking moves length prefixes across the one/two-byte varint boundary
    st.builds(lambda pad, s: pad + s, st.text(alphabet=string.ascii_letters + " ", min_size=90, max_size=200),
              st.one_of(_corpus_text, _id_text)),
    st.sampled_from(['{"query": "x", "headers": {"Authorization": "Bearer sk-proj-abcdefghij0123456789ABCD"}}',
                     "token=abc123 and password: hunter2", "x\x00token=abc", "naïve café token=zz9-Ωmega",
                     "Authorization: Basic dXNlcjpwYXNzd29yZA==", "4111 1111 1111 1111"]),
    # key names as values: the names of name/value pairs
    st.sampled_from(SENSITIVE_KEYS + PLAIN_KEYS),
)
_NAME_VALUE_KEYS = ["name", "Name", "NAME", "key", "Key", "KEY", "value", "Value", "VALUE"]
_key = st.one_of(st.sampled_from(SENSITIVE_KEYS + PLAIN_KEYS + _NAME_VALUE_KEYS + [
    "http.route", "url.path", "rpc.method", "run.id", "debug.token", "http.request.header.cookie", "token", ""]),
    st.text(max_size=10))
_scalar = st.one_of(
    _text.map(lambda s: AnyValue(string_value=s)), st.integers(-2**40, 2**40).map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)), st.binary(max_size=24).map(lambda b: AnyValue(bytes_value=b)),
    st.floats(allow_nan=False).map(lambda f: AnyValue(double_value=f)), st.just(AnyValue()),
)


def _array(items: list[AnyValue]) -> AnyValue:
    v = AnyValue()
    v.array_value.values.extend(items)
    return v


def _kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
    v = AnyValue()
    v.kvlist_value.values.extend(KeyValue(key=k, value=x) for k, x in pairs)
    return v


_name_value = st.builds(lambda name_key, name, value_key, value, extra: [(name_key, AnyValue(string_value=name)),
                                                                         (value_key, value), *extra],
                        st.sampled_from(["name", "Key", "KEY", "value", "nome"]),
                        st.sampled_from(SENSITIVE_KEYS + PLAIN_KEYS + ["", "db_password"]),
                        st.sampled_from(["value", "Value", "VALUE", "name", "val"]), _scalar,
                        st.lists(st.tuples(_key, _scalar), max_size=2)).flatmap(st.permutations)
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(_array), st.lists(st.tuples(_key, inner), max_size=3).map(_kvlist),
    _name_value.map(_kvlist)), max_leaves=6)
_attrs = st.lists(st.tuples(_key, _value), max_size=5).map(lambda ps: [KeyValue(key=k, value=v) for k, v in ps])


@st.composite
def trace_requests(draw: st.DrawFn) -> bytes:
    req = Signal.TRACES.request_type()
    for _ in range(draw(st.integers(1, 2))):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(draw(_attrs))
        for _ in range(draw(st.integers(1, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(_short)
            for _ in range(draw(st.integers(0, 3))):
                sp = ss.spans.add(trace_id=draw(st.binary(min_size=16, max_size=16)),
                                  span_id=draw(st.binary(min_size=8, max_size=8)), name=draw(_text),
                                  start_time_unix_nano=draw(st.integers(0, 2**63)), kind=draw(st.integers(0, 5)))
                sp.attributes.extend(draw(_attrs))
                for _ in range(draw(st.integers(0, 2))):
                    ev = sp.events.add(name=draw(_text))
                    ev.attributes.extend(draw(_attrs))
                for _ in range(draw(st.integers(0, 1))):
                    link = sp.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
                    link.attributes.extend(draw(_attrs))
                if draw(st.booleans()):
                    sp.status.message = draw(_text)
                    sp.status.code = 2
    return req.SerializeToString()


@st.composite
def log_requests(draw: st.DrawFn) -> bytes:
    req = Signal.LOGS.request_type()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(draw(_attrs))
    sl = rl.scope_logs.add()
    for _ in range(draw(st.integers(1, 4))):
        lr = sl.log_records.add(time_unix_nano=draw(st.integers(0, 2**63)), severity_number=9)
        if draw(st.booleans()):
            lr.body.CopyFrom(draw(_value))
        lr.attributes.extend(draw(_attrs))
    return req.SerializeToString()


@st.composite
def metric_requests(draw: st.DrawFn) -> bytes:
    req = Signal.METRICS.request_type()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(draw(_attrs))
    sm = rm.scope_metrics.add()
    for _ in range(draw(st.integers(1, 3))):
        m = sm.metrics.add(name=draw(_short))
        kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exponential_histogram", "summary"]))
        for _ in range(draw(st.integers(1, 3))):
            dp = getattr(m, kind).data_points.add(time_unix_nano=1)
            dp.attributes.extend(draw(_attrs))
            if kind != "summary" and draw(st.booleans()):
                ex = dp.exemplars.add(time_unix_nano=2)
                ex.filtered_attributes.extend(draw(_attrs))
    return req.SerializeToString()


REQUESTS = {Signal.TRACES: trace_requests(), Signal.LOGS: log_requests(), Signal.METRICS: metric_requests()}
_PROP = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Each generated request goes through every scanner/walker combination (generating is the slow part).

@pytest.mark.parametrize("cfg", list(SECRET_CONFIGS), ids=list(SECRET_CONFIGS))
@pytest.mark.parametrize("signal", list(Signal), ids=[s.value for s in Signal])
def test_secret_mask_wire_path_equals_the_decoded_path_on_random_requests(signal: Signal, cfg: str) -> None:
    @_PROP
    @given(raw=REQUESTS[signal])
    def check(raw: bytes) -> None:
        for backend in BACKENDS:
            secret_both_ways(SECRET_CONFIGS[cfg], signal, raw, backend)

    check()


@pytest.mark.parametrize("cfg", list(UUID_CONFIGS), ids=list(UUID_CONFIGS))
@pytest.mark.parametrize("signal", list(Signal), ids=[s.value for s in Signal])
def test_uuid_normalize_wire_path_equals_the_decoded_path_on_random_requests(signal: Signal, cfg: str) -> None:
    @_PROP
    @given(raw=REQUESTS[signal])
    def check(raw: bytes) -> None:
        for backend in BACKENDS:
            uuid_both_ways(UUID_CONFIGS[cfg], signal, raw, backend)

    check()


@pytest.mark.parametrize("secret_first", [True, False], ids=["secret-first", "uuid-first"])
@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.LOGS], ids=["traces", "logs"])
def test_fused_walk_equals_the_two_processors_one_after_the_other(signal: Signal, secret_first: bool) -> None:
    pairs = [("default", "logs-and-some-metrics"), ("summary", "patterns"), ("blocked-values", "names-off"),
             ("keys-off", "default")]

    @_PROP
    @given(raw=REQUESTS[signal], pair=st.sampled_from(pairs))
    def check(raw: bytes, pair: tuple[str, str]) -> None:
        for backend in BACKENDS:
            fused_both_ways(SECRET_CONFIGS[pair[0]], UUID_CONFIGS[pair[1]], signal, raw, backend, secret_first)

    check()


# -- the corpus and the shared load -------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_every_corpus_text_in_every_place_gives_the_decoded_result(backend: str) -> None:
    texts = [t for _, t, _ in SECRETS] + NON_SECRETS
    msg = make_traces(len(texts))
    spans = msg.resource_spans[0].scope_spans[0].spans
    for i, (sp, text) in enumerate(zip(spans, texts)):
        sp.name = text
        sp.status.message = text
        sp.attributes.extend([kv("tool.output", text), kv("nested", {"headers": {"x": text}, "list": [text, 1]}),
                              kv(SENSITIVE_KEYS[i % len(SENSITIVE_KEYS)], text), kv("http.route", text)])
        sp.events.add(name="e").attributes.append(kv("exception.message", text))
    logs = make_logs(len(texts))
    for lr, text in zip(logs.resource_logs[0].scope_logs[0].log_records, texts):
        lr.body.string_value = text
        lr.attributes.append(kv("http.route", text))
    for cfg in SECRET_CONFIGS.values():
        secret_both_ways(cfg, Signal.TRACES, msg.SerializeToString(), backend)
        secret_both_ways(cfg, Signal.LOGS, logs.SerializeToString(), backend)
    for ucfg in UUID_CONFIGS.values():
        uuid_both_ways(ucfg, Signal.TRACES, msg.SerializeToString(), backend)
        uuid_both_ways(ucfg, Signal.LOGS, logs.SerializeToString(), backend)
    for signal, raw in ((Signal.TRACES, msg.SerializeToString()), (Signal.LOGS, logs.SerializeToString())):
        fused_both_ways(SECRET_CONFIGS["default"], UUID_CONFIGS["logs-and-some-metrics"], signal, raw, backend)


def _shared_payloads():  # type: ignore[no-untyped-def]
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    # OTELPIPE_SHARED_BENCH, else the checkout's sibling `shared/`, else the project machine's copy
    candidates = [os.environ.get("OTELPIPE_SHARED_BENCH", ""), os.path.join(os.path.dirname(root), "shared", "bench"),
                  "/work/shared/bench"]
    path = next((os.path.join(c, "payloads.py") for c in candidates
                 if c and os.path.exists(os.path.join(c, "payloads.py"))), "")
    if not path:
        pytest.skip(f"the shared benchmark load generator is in none of {candidates} (set OTELPIPE_SHARED_BENCH)")
    spec = importlib.util.spec_from_file_location("shared_payloads", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("signal", list(Signal), ids=[s.value for s in Signal])
def test_shared_benchmark_load_gives_the_decoded_result(signal: Signal, backend: str) -> None:
    payloads = _shared_payloads()
    for raw in payloads.make_payloads(signal.value, 100, count=3, seed=11):
        secret_both_ways(SecretMaskConfig(), signal, raw, backend)
        uuid_both_ways(UUIDNormalizeConfig(log_attributes=("http.route",)), signal, raw, backend)
        # and chained, as in the traces pipeline: uuid_normalize gets secret_mask's spliced bytes
        masked = SecretMask(SecretMaskConfig(), signal, **_kw(backend))(Payload(signal, raw=raw))
        assert masked.raw_cached is not None and masked.raw_cached != raw
        uuid_both_ways(UUIDNormalizeConfig(), signal, masked.raw_cached, backend)
        # or fused into one walk (traces and logs), as the graph does when they are adjacent
        if signal is not Signal.METRICS:
            fused_both_ways(SecretMaskConfig(), UUIDNormalizeConfig(), signal, raw, backend)


# -- encodings the wire walker meets rarely -----------------------------------------------------

def _ld(field: int, content: bytes, pad: int = 0) -> bytes:
    """A length-delimited field whose length varint is padded with `pad` extra bytes (valid protobuf)."""
    n = len(content)
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    if pad:  # the same number with `pad` more (zero) groups: continuation bits, then a final 0
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes((field << 3 | 2,)) + bytes(out) + content


def _kv_bytes(key: str, value: bytes, *, value_first: bool = False, pad: int = 0) -> bytes:
    k, v = _ld(1, key.encode(), pad), _ld(2, value, pad)
    return v + k if value_first else k + v


def _span_bytes(*attrs: bytes, name: str = "op", extra: bytes = b"") -> bytes:
    return (_ld(1, b"\x11" * 16) + _ld(2, b"\x22" * 8) + _ld(5, name.encode())
            + b"".join(_ld(9, a) for a in attrs) + extra)


def _request(*spans: bytes, pad: int = 0) -> bytes:
    return _ld(1, _ld(2, b"".join(_ld(2, s, pad) for s in spans), pad), pad)


SECRET = "sk-proj-abcdefghij0123456789ABCD"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("raw", [
    _request(_span_bytes(_kv_bytes("tool.args", _ld(1, f"key={SECRET}".encode()), pad=2)), pad=3),  # padded varints
    _request(_span_bytes(_kv_bytes("tool.args", _ld(1, f"x {SECRET}".encode()), value_first=True))),  # value first
    _request(_span_bytes(_kv_bytes("api_key", _ld(7, b"\x00\x01\xff")))),  # bytes under a sensitive key
    _request(_span_bytes(_kv_bytes("password", b""))),  # an empty value under a sensitive key
    _request(_span_bytes(_kv_bytes("password", _ld(1, b"")))),  # an empty string under a sensitive key
    _request(_span_bytes(_kv_bytes("note", _ld(1, b"token=" + b"a1" * 200)), b"\x9a\x01\x03abc")),  # unknown field
    _request(_span_bytes(_kv_bytes("creds", _ld(6, _ld(1, _kv_bytes("token", _ld(1, b"t"))))))),  # map under a key
    _request(_span_bytes(name=f"GET /u/{U}?token=abc123", extra=_ld(15, _ld(2, f"failed {SECRET}".encode())))),
], ids=["padded", "value-first", "bytes", "no-value", "empty", "unknown-field", "map", "name-and-status"])
def test_awkward_but_valid_encodings(raw: bytes, backend: str) -> None:
    Signal.TRACES.request_type.FromString(raw)  # valid protobuf
    secret_both_ways(SecretMaskConfig(), Signal.TRACES, raw, backend)
    uuid_both_ways(UUIDNormalizeConfig(), Signal.TRACES, raw, backend)


def _map(*kvs: bytes) -> bytes:
    """An AnyValue holding a map of the given KeyValues."""
    return _ld(6, b"".join(_ld(1, k) for k in kvs))


def _s(text: str) -> bytes:
    return _ld(1, text.encode())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("attr,gone,kept", [
    (_kv_bytes("env", _ld(5, _ld(1, _map(_kv_bytes("name", _s("DB_PASSWORD")), _kv_bytes("value", _s("hunter2")))))),
     b"hunter2", b"DB_PASSWORD"),
    (_kv_bytes("env", _map(_kv_bytes("value", _s("hunter2"), value_first=True), _kv_bytes("Key", _s("api_key")))),
     b"hunter2", b"api_key"),
    (_kv_bytes("env", _map(_kv_bytes("name", _ld(7, b"password")), _kv_bytes("value", _s("hunter2")))),
     b"", b"hunter2"),
    (_kv_bytes("env", _map(_kv_bytes("name", _s("DB_HOST")), _kv_bytes("NAME", _s("token")),
                           _kv_bytes("VALUE", _s("aaa")), _kv_bytes("value", _s("bbb")),
                           _kv_bytes("other", _s("ccc")))),
     b"bbb", b"ccc"),
    (_kv_bytes("env", _map(_kv_bytes("name", _s("SECRET")), _kv_bytes("value", _map(_kv_bytes("a", _s("xyz")),
                                                                                    _kv_bytes("b", _ld(3, b"\x01")))))),
     b"xyz", b"SECRET"),
    (_kv_bytes("env", _map(_kv_bytes("name", _s("password")), _kv_bytes("value", _ld(7, b"\x00\xff")),
                           _kv_bytes("value", b""))), b"\x00\xff", b"password"),
    (_kv_bytes("debug.env", _map(_kv_bytes("name", _s("password")), _kv_bytes("value", _s("hunter2")))),
     b"", b"hunter2"),
    (_kv_bytes("env", _map(_kv_bytes("name", _s("session.id")), _kv_bytes("value", _s("s-1")))), b"", b"s-1"),
    (_kv_bytes("env", _map(_kv_bytes("name", _s("token")), _kv_bytes("value", _s("sk-proj-abcdefghij0123456789ABCD")))),
     b"sk-proj", b"token"),
], ids=["array-of-maps", "value-first", "name-not-a-string", "several-names", "map-value", "bytes-and-empty",
        "allowed", "identifier", "anchor-in-value"])
def test_name_value_pairs_in_maps_give_the_decoded_result(attr: bytes, gone: bytes, kept: bytes, backend: str) -> None:
    raw = _request(_span_bytes(attr))
    Signal.TRACES.request_type.FromString(raw)
    body = _ld(1, _ld(2, _ld(2, _ld(5, _map(_kv_bytes("name", _s("API_KEY")), _kv_bytes("Value", _s("k")))))))
    for cfg in (*SECRET_CONFIGS.values(), SecretMaskConfig(allowed_keys=("debug.*",))):
        secret_both_ways(cfg, Signal.TRACES, raw, backend)
        secret_both_ways(cfg, Signal.LOGS, body, backend)
    out = SecretMask(SecretMaskConfig(allowed_keys=("debug.*",)), Signal.TRACES, **_kw(backend))(
        Payload(Signal.TRACES, raw=raw)).serialize()
    assert (not gone or gone not in out) and kept in out


def test_a_malformed_entry_in_a_named_map_takes_the_decoded_path() -> None:
    # the second entry has two keys: the walkers do not guess (neither skips it: the map names a credential)
    raw = _request(_span_bytes(_kv_bytes("env", _map(_kv_bytes("name", _s("password")),
                                                     _ld(1, b"a") + _ld(1, b"b") + _ld(2, _s("x")),
                                                     _kv_bytes("value", _s("hunter2"))))))
    for native in (True, False):
        proc = SecretMask(SecretMaskConfig(), Signal.TRACES, native=native)
        run = proc.prepare(raw)
        assert run is not None
        with pytest.raises(WireFallback):
            proc.single.walker.rewrite(raw, [run])
    for backend in BACKENDS:
        secret_both_ways(SecretMaskConfig(), Signal.TRACES, raw, backend)


def test_a_keyvalue_with_two_keys_takes_the_decoded_path_and_counts_once() -> None:
    # Valid protobuf (the last key wins), but the wire walker does not guess: it falls back.
    kv_bytes = _ld(1, b"password") + _ld(2, _ld(1, SECRET.encode())) + _ld(1, b"note")
    raw = _request(_span_bytes(kv_bytes))
    proc = SecretMask(SecretMaskConfig(), Signal.TRACES)
    run = proc.prepare(raw)
    assert run is not None
    with pytest.raises(WireFallback):
        proc.single.walker.rewrite(raw, [run])
    proc.masker.take_counts()
    out = proc(Payload(Signal.TRACES, raw=raw))
    assert out.raw_cached is not None  # re-encoded the way protobuf does (one key), then walked
    assert out.message.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.string_value == "[REDACTED]"
    assert proc.masker.counts == {"openai_key": 1}  # the abandoned wire walk counted nothing
    for backend in BACKENDS:
        secret_both_ways(SecretMaskConfig(), Signal.TRACES, raw, backend)


def test_bytes_that_do_not_decode_are_refused_as_before() -> None:
    raw = _request(_span_bytes(_kv_bytes("note", _ld(1, b"token=\xff\xfe bad utf-8"))))
    with pytest.raises(DecodeError):
        Signal.TRACES.request_type.FromString(raw)
    with pytest.raises(DecodeError):  # the wire path falls back, and decoding fails as it always did
        SecretMask(SecretMaskConfig(), Signal.TRACES)(Payload(Signal.TRACES, raw=raw))
    truncated = Payload(Signal.TRACES, message=make_traces(2, attrs={"token": "abc"})).serialize()[:-3]
    with pytest.raises(DecodeError):
        SecretMask(SecretMaskConfig(), Signal.TRACES)(Payload(Signal.TRACES, raw=truncated, items=2))


@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
@pytest.mark.parametrize("raw", [b"\x0a\xff\xff\xff\x0f", b"\x0b\x00", b"\x0a\x05\x12\x10abc", b"\x0f"])
def test_malformed_bytes_raise_wire_fallback(raw: bytes, native: bool) -> None:
    walker = Walker(wire_plan(Signal.TRACES.request_type.DESCRIPTOR,
                              [{"resource_spans": {"scope_spans": {"spans": {"name": STRING}}}}]), 1, native=native)
    with pytest.raises(WireFallback):
        walker.rewrite(raw, [TextRun(0, lambda t, _f: t + "!")])


@pytest.mark.parametrize("backend", BACKENDS)
def test_options_that_look_at_every_string_or_add_attributes_give_the_decoded_result(backend: str) -> None:
    # user regexes cannot be anchored (every string is looked at), summary attributes add attributes:
    # both on the wire path too now, with the decoded path's result
    raw = Payload(Signal.TRACES, message=make_traces(2, attrs={"token": "abc", "note": "ticket T-123"})).serialize()
    for cfg in (SecretMaskConfig(summary_attributes=True), SecretMaskConfig(blocked_values=(r"T-\d+",))):
        secret_both_ways(cfg, Signal.TRACES, raw, backend)
    pat = UUIDNormalizeConfig(span_attributes=("note",), patterns=(PatternConfig(regex=r"T-\d+", replacement="T-{n}"),))
    uuid_both_ways(pat, Signal.TRACES, raw, backend)
    out = UUIDNormalize(pat, Signal.TRACES, **_walker_kw(backend))(Payload(Signal.TRACES, raw=raw))
    assert b"ticket T-{n}" in out.serialize()


# -- the scanner --------------------------------------------------------------------------------

def _occurrences(anchor: Anchor, data: bytes) -> list[tuple[int, int]]:
    """Every occurrence of the anchor (each start, with the longest match from there), by `re`."""
    rx = re.compile(anchor.regex, re.IGNORECASE if anchor.caseless else 0)
    out = []
    for start in range(len(data)):
        m = rx.match(data, start)
        if m is not None:
            out.append((start, m.end()))
    return out


_SECRET_ANCHORS = sr.anchors(sr.DETECTOR_NAMES, sk.KeyMatcher())
_SCANNERS: dict[tuple[int, str], AnchorScanner] = {}
_pieces = st.one_of(st.binary(max_size=12), _text.map(lambda s: s.encode()), st.sampled_from([
    b"token", b"Tokens", b"TOKEN", b"4111-1111 1111-1111", b"1234567890123", b"deadbeef" * 3, b"PRIVATE KEY",
    b"://u:p@h", b"API-Key", b"sk-", U.encode(), b"01ARZ3NDEKTSV4RRFFQ69G5FAV"]))


@pytest.mark.parametrize("backend", SCANNERS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(_pieces, max_size=8))
def test_every_anchor_occurrence_gets_an_offset_inside_it(backend: str, parts: list[bytes]) -> None:
    data = b"".join(parts)
    for anchors in (_SECRET_ANCHORS,):
        scanner = _SCANNERS.get((id(anchors), backend))
        if scanner is None:
            scanner = _SCANNERS[(id(anchors), backend)] = AnchorScanner(anchors, backend=backend)
        offsets, tags, ids = scanner.scan(data)
        assert offsets == sorted(offsets) and len(ids) == len(offsets)  # type: ignore[arg-type]
        expected_tags = set()
        for k, a in enumerate(anchors):
            mine = [o for o, i in zip(offsets, ids) if i == k]  # type: ignore[arg-type]
            occ = _occurrences(a, data)
            if occ and a.tag:
                expected_tags.add(a.tag)
            for start, end in occ:
                assert any(start <= o < end for o in mine), (a.regex, data[start:end])
            if a.shape is None and _fixed(a):
                # a fixed-length anchor: the offset is the occurrence's first byte with either backend
                assert {o for o in mine} <= {s for s, _ in occ}
        assert tags == expected_tags


def _fixed(a: Anchor) -> bool:
    return all(fixed_width(e) is not None for e, _ in (a.hs or ((a.regex, 0),)))


def test_scanner_falls_back_to_re_without_hyperscan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scanner_module, "_hyperscan", None)
    monkeypatch.setattr(scanner_module, "_hsscan", None)
    assert available_backends() == ("re",)
    scanner = AnchorScanner([Anchor(rb"sk-")])
    assert scanner.backend == "re"
    assert scanner.scan(b"a sk-1 sk-2")[0] == [2, 7]
    for backend in ("libhs", "binding"):
        with pytest.raises(RuntimeError):
            AnchorScanner([Anchor(rb"sk-")], backend=backend)
    proc = SecretMask(SecretMaskConfig(), Signal.TRACES)
    assert proc.scanner.backend == "re" and proc.describe() == {"scanner": "re"}
    raw = Payload(Signal.TRACES, message=make_traces(2, attrs={"token": "abc"})).serialize()
    out = proc(Payload(Signal.TRACES, raw=raw))
    assert out.serialize() == secret_reference(SecretMaskConfig(), Signal.TRACES, raw)[0].SerializeToString()


def test_the_binding_collects_matches_in_python_without_the_c_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    if "binding" not in available_backends():
        pytest.skip("the hyperscan binding is not installed on this platform (the `re` fallback is tested above)")
    monkeypatch.setattr(scanner_module, "_wirewalk", None)  # as on a machine without a C compiler
    proc = SecretMask(SecretMaskConfig(), Signal.TRACES, scanner_backend="binding", native=False)
    monkeypatch.undo()
    texts = [t for _, t, _ in SECRETS] + NON_SECRETS
    msg = make_traces(len(texts))
    for sp, text in zip(msg.resource_spans[0].scope_spans[0].spans, texts):
        sp.attributes.extend([kv("tool.output", f"x 4111 1111 1111 1111 {text}"), kv("token", text)])
    raw = msg.SerializeToString()
    proc.masker.take_counts()
    out = proc(Payload(Signal.TRACES, raw=raw))
    expected, counts = secret_reference(SecretMaskConfig(), Signal.TRACES, raw)
    assert out.message == expected and proc.masker.take_counts() == counts


def test_the_best_scanner_installed_is_the_one_used() -> None:
    best = available_backends()[0]
    assert SecretMask(SecretMaskConfig(), Signal.TRACES).scanner.backend == best
    if scanner_module._hsscan is not None:
        assert best == "libhs"


def test_shaped_anchor_runs_are_covered_in_long_runs() -> None:
    hexrun = shaped(rb"[0-9a-f]{4}", [(b"0123456789abcdef", 4)])
    data = b"zz" + b"a" * 11 + b"-" + b"0123456789" + b"q"
    for backend in SCANNERS:
        offsets = AnchorScanner([hexrun], backend=backend).scan(data)[0]
        for start, end in _occurrences(hexrun, data):
            assert any(start <= o < end for o in offsets)
    with pytest.raises(ValueError):
        shaped(rb"x", [(b"ab", 1), (b"bc", 1)])


# -- the rewriter -------------------------------------------------------------------------------

@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
def test_rewriter_fixes_every_length_prefix_when_sizes_cross_varint_boundaries(native: bool) -> None:
    short, long_ = "x" * 10, "y" * 300
    msg = make_traces(3, attrs={"http.route": long_, "other": "z"})
    msg.resource_spans[0].scope_spans[0].spans[1].attributes[0].value.string_value = short
    raw = msg.SerializeToString()
    plan = wire_plan(Signal.TRACES.request_type.DESCRIPTOR, [{
        "resource_spans": {"scope_spans": {"spans": {"attributes": Attrs(SelectedKeys(["http.route"]))}}}}])
    swap = {long_: short, short: long_}
    out = Walker(plan, 1, native=native).rewrite(raw, [TextRun(0, lambda t, _f: swap[t])])
    assert out is not None
    spans = Signal.TRACES.request_type.FromString(out).resource_spans[0].scope_spans[0].spans
    assert [s.attributes[0].value.string_value for s in spans] == [short, long_, short]
    assert all(s.attributes[1].value.string_value == "z" for s in spans)
    # nothing changed: no new bytes
    assert Walker(plan, 1, native=native).rewrite(raw, [TextRun(0, lambda t, _f: t)]) is None


def test_wire_plan_checks_field_types_against_the_descriptors() -> None:
    desc = Signal.TRACES.request_type.DESCRIPTOR
    with pytest.raises(TypeError):
        wire_plan(desc, [{"resource_spans": STRING}])
    with pytest.raises(TypeError):
        wire_plan(desc, [{"resource_spans": {"resource": Attrs(None)}}])
    with pytest.raises(KeyError):
        wire_plan(desc, [{"no_such_field": {}}])


def test_replace_raw_swaps_the_bytes_and_drops_the_stale_message() -> None:
    p = Payload(Signal.TRACES, message=make_traces(2))
    p.serialize()
    new = make_traces(2, name="renamed").SerializeToString()
    p.replace_raw(new)
    assert p.raw_cached is new and p._message is None and p.items == 2
    assert p.message.resource_spans[0].scope_spans[0].spans[0].name == "renamed-0"
