"""secret_mask: the detectors, the key-name rule, the processor on every signal, and its properties."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pipeline.component import Kind, make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import Secret, decode_dataclass
from pipeline.errors import ConfigError
from pipeline.model import Payload, Signal
from pipeline.testing import (
    TracesSink,
    any_value,
    kv,
    make_logs,
    make_metrics,
    make_traces,
    nop_settings,
)
from processors.privacy import secret_keys as sk
from processors.privacy import secret_rules as sr
from processors.privacy.masker import Masker
from processors.privacy.scanner import AnchorScanner, available_backends
from processors.privacy.secret_mask import (
    FACTORY,
    SUMMARY_COUNT_KEY,
    SecretMask,
    SecretMaskConfig,
    make_masker,
)
from tests.testdata.secret_corpus import (
    NON_SECRETS,
    PLAIN_KEYS,
    SECRETS,
    SENSITIVE_KEYS,
)

from .oracle import secret_reference

R = "[REDACTED]"


def masker(**kw: object) -> Masker:
    return make_masker(SecretMaskConfig(**kw))  # type: ignore[arg-type]


_ANCHORED: dict[int, SecretMask] = {}


def anchored(m: Masker, text: str) -> str:
    """`text` as the processor masks a string of a request: the detectors tried only where the anchor
    scan of its bytes says a match may start (`Masker.mask_anchored`), by `m`'s rules."""
    proc = _ANCHORED.get(id(m))
    if proc is None:
        proc = _ANCHORED[id(m)] = SecretMask(SecretMaskConfig(), Signal.TRACES)
    scan = proc.scanner.scan(text.encode())
    if not scan.offsets:
        return text
    return m.mask_anchored(text, 0, scan.offsets, scan.ids, [a.info for a in proc.scanner.anchors], scan.tags)


def mask(text: str, **kw: object) -> str:
    return masker(**kw).mask_text(text)


def attrs_of(span: object) -> dict[str, object]:
    out = {}
    for a in span.attributes:  # type: ignore[attr-defined]
        which = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, which) if which else None
    return out


# -- the corpus ---------------------------------------------------------------------------------

def test_corpus_is_big_enough() -> None:
    assert len(SECRETS) >= 100 and len(NON_SECRETS) >= 100
    kinds = {k for k, _, _ in SECRETS}
    assert kinds == set(sr.DETECTOR_NAMES), set(sr.DETECTOR_NAMES) - kinds


@pytest.mark.parametrize("kind,text,secret", SECRETS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(SECRETS)])
def test_corpus_secret_is_masked(kind: str, text: str, secret: str) -> None:
    m = masker()
    out = m.mask_text(text)
    assert secret not in out, f"{kind} leaked: {out!r}"
    assert R in out
    assert anchored(m, text) == out  # the anchored path agrees with the whole-string path


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("kind,text,secret", SECRETS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(SECRETS)])
def test_corpus_secret_is_masked_through_the_processor_bytes_path(kind: str, text: str, secret: str,
                                                                  backend: str) -> None:
    """The anchor scan, gating and windowed detection must never hide a secret: run each one through
    the wire path (with either scanner), and check it agrees with the decoded-message path."""
    msg = make_traces(1, attrs={"tool.output": text})
    msg.resource_spans[0].scope_spans[0].spans[0].status.message = text
    raw = Payload(Signal.TRACES, message=msg).serialize()
    proc = SecretMask(SecretMaskConfig(), Signal.TRACES, scanner_backend=backend)
    out = proc(Payload(Signal.TRACES, raw=raw))
    assert out.raw_cached is not None and out.raw_cached != raw  # new wire bytes, spliced
    span = out.message.resource_spans[0].scope_spans[0].spans[0]
    assert secret not in attrs_of(span)["tool.output"]
    assert secret not in span.status.message
    assert out.message == secret_reference(SecretMaskConfig(), Signal.TRACES, raw)[0]


@pytest.mark.parametrize("text", NON_SECRETS)
def test_corpus_non_secret_is_untouched(text: str) -> None:
    m = masker()
    assert m.mask_text(text) == text
    assert anchored(m, text) == text
    assert m.counts == {}


def test_corpus_non_secrets_pass_the_processor_untouched_as_values() -> None:
    msg = make_traces(1, attrs={f"note.{i}": t for i, t in enumerate(NON_SECRETS)})
    out = SecretMask(SecretMaskConfig(), Signal.TRACES)(Payload(Signal.TRACES, message=msg))
    span = out.message.resource_spans[0].scope_spans[0].spans[0]
    assert list(attrs_of(span).values()) == NON_SECRETS


@pytest.mark.parametrize("key", SENSITIVE_KEYS)
def test_sensitive_keys(key: str) -> None:
    assert sk.KeyMatcher().classify(key) == sk.SENSITIVE


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_keys(key: str) -> None:
    assert sk.KeyMatcher().classify(key) == sk.NOT_SENSITIVE


# -- key names ----------------------------------------------------------------------------------

def test_key_parts_split_on_separators_and_camel_case() -> None:
    assert sk.key_parts("http.request.header.authorization") == ["http", "request", "header", "authorization"]
    assert sk.key_parts("x-api-Token") == ["x", "api", "token"]
    assert sk.key_parts("APIKey") == ["api", "key"]
    assert sk.key_parts("sessionId2") == ["session", "id", "2"]


def test_plural_and_qualified_terms_are_not_credentials() -> None:
    km = sk.KeyMatcher()
    assert km.classify("gen_ai.usage.input_tokens") == sk.NOT_SENSITIVE
    assert km.classify("max_tokens") == sk.NOT_SENSITIVE
    assert km.classify("llm.token_count.completion") == sk.NOT_SENSITIVE
    assert km.classify("auth.token") == sk.SENSITIVE


def test_allowed_keys_exact_and_prefix() -> None:
    km = sk.KeyMatcher(allowed_keys=("X-Debug-Token", "internal.secret.*"))
    assert km.classify("x-debug-token") == sk.ALLOWED
    assert km.classify("internal.secret.hash") == sk.ALLOWED
    assert km.classify("internal.password") == sk.SENSITIVE


def test_custom_blocked_keys_replace_the_defaults() -> None:
    km = sk.KeyMatcher(blocked_keys=("pin", "otp_code"))
    assert km.classify("card.pin") == sk.SENSITIVE
    assert km.classify("user.otpCode") == sk.SENSITIVE
    assert km.classify("password") == sk.NOT_SENSITIVE


def test_key_cache_is_bounded() -> None:
    km = sk.KeyMatcher()
    for i in range(sk._KEY_CACHE_MAX + 100):
        km.classify(f"attr.{i}")
    assert len(km.known) == sk._KEY_CACHE_MAX
    assert km.classify("late.password") == sk.SENSITIVE


# -- value detectors, one by one ------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("Authorization: Bearer abcDEF123456xyz", "Authorization: " + R),  # the pair rule takes the whole value
    ("got Bearer abcDEF123456xyz back", f"got Bearer {R} back"),
    ("Bearer token", "Bearer token"),
    ("Bearer authentication.", "Bearer authentication."),
    ("auth Basic " + base64.b64encode(b"bob:pw").decode(), f"auth Basic {R}"),
    ("Basic realm", "Basic realm"),
    ("Basic YWJjZGVm", "Basic YWJjZGVm"),  # base64 of 'abcdef', no user:password
    ("id eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. end", f"id {R} end"),
    ("key sk-abcdefghij1234567890ABCD!", f"key {R}!"),
    ("task-abcdefghijklmnopqrstuvwxyz", "task-abcdefghijklmnopqrstuvwxyz"),
    ("sk-abcdefghijklmnopqrstuvwxyz", "sk-abcdefghijklmnopqrstuvwxyz"),  # letters only, lower case: a slug
    ("k=sk-ant-api03-abcdefghijklmnopqrstu0", f"k={R}"),
    ("id AKIAIOSFODNN7EXAMPLE.", f"id {R}."),
    ("AKIAIOSFODNN7EXAMPLEX", "AKIAIOSFODNN7EXAMPLEX"),  # 17 characters after AKIA: not a key id
    ("AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", R),
    ("clone ghp_" + "a1B2" * 9 + " now", f"clone {R} now"),
    ("xoxb-1234567890-abcdefghij", R),
    ("rk_live_abcdefghijklmnop12", R),
    ("AIza" + "B" * 30 + "c1-_9", R),
    ("postgres://app:s3cret@db/x", f"postgres://app:{R}@db/x"),
    ("https://example.com:8443/path@x", "https://example.com:8443/path@x"),
    ("?token=abc&page=2", f"?token={R}&page=2"),
    ("password: invalid", "password: invalid"),
    ("session_id=abc123;", f"session_id={R};"),
    ("mytoken=abc", "mytoken=abc"),
    ("4111 1111 1111 1111", R),
    ("4111-1111-1111-1111", R),
    ("4111 1111-1111 1111", "4111 1111-1111 1111"),  # mixed separators
    ("41111 11111 11111 1", "41111 11111 11111 1"),  # not card grouping
    ("4111111111111112", "4111111111111112"),  # Luhn fails
    ("9111111111111111", "9111111111111111"),  # no issuer starts with 9
])
def test_detectors(text: str, expected: str) -> None:
    assert mask(text) == expected


def test_pem_block_is_masked_whole_and_truncated_block_to_the_end() -> None:
    block = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBx\n-----END EC PRIVATE KEY-----"
    assert mask(f"a\n{block}\nb") == f"a\n{R}\nb"
    assert mask("x -----BEGIN PRIVATE KEY-----\nMIIEv") == f"x {R}"


def test_luhn() -> None:
    assert sr.luhn_ok("4111111111111111") and not sr.luhn_ok("4111111111111112")
    assert sr.card_number_ok("3782 822463 10005") and not sr.card_number_ok("3782-822463 10005")


def test_detectors_can_be_switched_off_one_by_one() -> None:
    text = "card 4111111111111111 and sk-proj-abcdefghij0123456789ABCD"
    assert mask(text, detectors={"card_number": False}) == f"card 4111111111111111 and {R}"
    assert mask(text, value_detection=False) == text


def test_blocked_values_whole_match_or_secret_group() -> None:
    m = masker(blocked_values=(r"EMP-\d{6}", r"pin=(?P<secret>\d{4})"))
    assert m.mask_text("user EMP-123456 pin=1234 ok") == f"user {R} pin={R} ok"
    assert m.counts["blocked_values"] == 2


def test_custom_replacement() -> None:
    assert mask("token=abc", replacement="***") == "token=***"


# -- hash mode ----------------------------------------------------------------------------------

def test_hash_mode_is_keyed_short_and_stable() -> None:
    m = masker(mode="hash", hash_key=Secret("k1"), hash_length=8)
    out = m.mask_text("token=abc and token=abc and token=xyz")
    expect = hmac.new(b"k1", b"abc", hashlib.sha256).hexdigest()[:8]
    assert out.startswith(f"token=[REDACTED:{expect}] and token=[REDACTED:{expect}]")
    assert re.fullmatch(r"token=\[REDACTED:[0-9a-f]{8}\] and token=\[REDACTED:[0-9a-f]{8}\] and "
                        r"token=\[REDACTED:[0-9a-f]{8}\]", out)
    assert out.split()[-1] != out.split()[0]
    other = masker(mode="hash", hash_key=Secret("k2"), hash_length=8).mask_text("token=abc")
    assert other != out.split()[0]
    assert m.mask_text(out) == out  # masks are never hashed again


def test_hash_mode_requires_a_key() -> None:
    issues: list = []
    decode_dataclass(SecretMaskConfig, {"mode": "hash"}, "processors.secret_mask", issues)
    assert any(i.path == "processors.secret_mask.hash_key" for i in issues), issues


# -- config -------------------------------------------------------------------------------------

def test_default_config_validates_and_factory_shape() -> None:
    issues: list = []
    decode_dataclass(SecretMaskConfig, {}, "processors.secret_mask", issues)
    assert issues == []
    assert FACTORY.type == "secret_mask" and FACTORY.kind is Kind.PROCESSOR
    assert set(FACTORY.signals) == set(Signal)


@pytest.mark.parametrize("raw,path", [
    ({"detectors": {"jwtt": False}}, "detectors.jwtt"),
    ({"blocked_values": ["ok", "("]}, "blocked_values[1]"),
    ({"blocked_values": [".*"]}, "blocked_values[0]"),
    ({"replacement": ""}, "replacement"),
    ({"mode": "hash", "hash_key": "k", "hash_length": 3}, "hash_length"),
    ({"mode": "encrypt"}, "mode"),
    ({"allowed_keyz": ["a"]}, "allowed_keyz"),
    ({"replacement": "sk-proj-abcdefghij0123456789ABCD"}, "replacement"),
])
def test_bad_config_is_reported_with_its_key_path(raw: dict, path: str) -> None:
    issues: list = []
    decode_dataclass(SecretMaskConfig, raw, "processors.secret_mask", issues)
    assert any(i.path == f"processors.secret_mask.{path}" for i in issues), issues


def test_unknown_detector_suggests_the_closest() -> None:
    issues: list = []
    decode_dataclass(SecretMaskConfig, {"detectors": {"jwtt": False}}, "processors.secret_mask", issues)
    assert "did you mean 'jwt'" in str(issues[0])


def test_loads_in_a_pipeline_config() -> None:
    text = """
receivers: {}
processors:
  secret_mask: {blocked_values: ["["]}
exporters: {}
service: {pipelines: {}}
"""
    with pytest.raises(ConfigError) as ei:
        load_text(text, make_factory_map([FACTORY]))
    assert "processors.secret_mask.blocked_values[0]: invalid regular expression" in str(ei.value)


# -- the processor ------------------------------------------------------------------------------

def run(signal: Signal, msg: object, **kw: object) -> Payload:
    return SecretMask(SecretMaskConfig(**kw), signal)(Payload(signal, message=msg))  # type: ignore[arg-type]


def test_spans_names_attributes_events_links_and_resource() -> None:
    msg = make_traces(1, attrs={"http.request.header.authorization": "Bearer abc", "gen_ai.usage.input_tokens": 12,
                                "tool.args": '{"q": "x", "key": "sk-proj-abcdefghij0123456789ABCD"}'})
    rs = msg.resource_spans[0]
    rs.resource.attributes.append(kv("deploy.api_key", "k-123"))
    span = rs.scope_spans[0].spans[0]
    span.name = "call with token=abc123"
    span.status.message = "401 for ghp_" + "a1B2" * 9
    ev = span.events.add(name="exception")
    ev.attributes.append(kv("exception.message", "timed out (token=xyz987)"))
    link = span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    link.attributes.append(kv("peer.password", "p"))
    out = run(Signal.TRACES, msg)
    span = out.message.resource_spans[0].scope_spans[0].spans[0]
    a = attrs_of(span)
    assert a["http.request.header.authorization"] == R
    assert a["gen_ai.usage.input_tokens"] == 12
    assert a["tool.args"] == '{"q": "x", "key": "' + R + '"}'
    assert span.name == f"call with token={R}"
    assert span.status.message == f"401 for {R}"
    assert attrs_of(span.events[0])["exception.message"] == f"timed out (token={R})"
    assert attrs_of(span.links[0])["peer.password"] == R
    assert attrs_of(out.message.resource_spans[0].resource)["deploy.api_key"] == R
    assert span.trace_id == (1).to_bytes(16, "big")


def test_sensitive_key_masks_every_leaf_of_arrays_and_maps_but_not_numbers() -> None:
    msg = make_traces(1, attrs={"http.request.header.cookie": ["a=1", "b=2"],
                                "credentials": {"user": "bob", "pass": "x", "n": 3}, "api_key": b"\x01\x02",
                                "session.id": 42})
    span = run(Signal.TRACES, msg).message.resource_spans[0].scope_spans[0].spans[0]
    vals = {a.key: a.value for a in span.attributes}
    assert [v.string_value for v in vals["http.request.header.cookie"].array_value.values] == [R, R]
    inner = {kv.key: kv.value for kv in vals["credentials"].kvlist_value.values}
    assert inner["user"].string_value == R and inner["pass"].string_value == R and inner["n"].int_value == 3
    assert vals["api_key"].string_value == R
    assert vals["session.id"].int_value == 42


def test_nested_map_keys_get_the_key_rule() -> None:
    msg = make_traces(1, attrs={"request": {"headers": {"Authorization": "abc", "Accept": "json"}}})
    span = run(Signal.TRACES, msg).message.resource_spans[0].scope_spans[0].spans[0]
    headers = span.attributes[0].value.kvlist_value.values[0].value.kvlist_value.values
    assert {h.key: h.value.string_value for h in headers} == {"Authorization": R, "Accept": "json"}


def test_allowed_keys_are_left_alone_by_both_mechanisms() -> None:
    msg = make_traces(1, attrs={"debug.token": "abc", "debug.note": "token=abc", "other.token": "abc"})
    span = run(Signal.TRACES, msg, allowed_keys=("debug.*",)).message.resource_spans[0].scope_spans[0].spans[0]
    assert attrs_of(span) == {"debug.token": "abc", "debug.note": "token=abc", "other.token": R}


def test_key_matching_off_still_detects_values() -> None:
    msg = make_traces(1, attrs={"password": "hunter2", "note": "password=hunter2"})
    span = run(Signal.TRACES, msg, key_matching=False).message.resource_spans[0].scope_spans[0].spans[0]
    assert attrs_of(span) == {"password": "hunter2", "note": f"password={R}"}


def test_logs_bodies_nested_and_attributes_and_resource() -> None:
    msg = make_logs(3)
    recs = msg.resource_logs[0].scope_logs[0].log_records
    recs[0].body.string_value = "login with password=hunter2 ok"
    recs[1].body.CopyFrom(any_value({"event": "auth", "token": "abc", "items": ["sk-proj-abcdefghij0123456789ABCD"]}))
    recs[2].attributes.append(kv("http.request.header.x-api-key", "k"))
    msg.resource_logs[0].resource.attributes.append(kv("db.url", "postgres://a:b@h/db"))
    out = run(Signal.LOGS, msg).message
    recs = out.resource_logs[0].scope_logs[0].log_records
    assert recs[0].body.string_value == f"login with password={R} ok"
    body = {kv.key: kv.value for kv in recs[1].body.kvlist_value.values}
    assert body["event"].string_value == "auth" and body["token"].string_value == R
    assert body["items"].array_value.values[0].string_value == R
    assert attrs_of(recs[2])["http.request.header.x-api-key"] == R
    assert attrs_of(out.resource_logs[0].resource)["db.url"] == f"postgres://a:{R}@h/db"


def test_metric_data_point_and_exemplar_attributes() -> None:
    msg = make_metrics(2)
    m = msg.resource_metrics[0].scope_metrics[0].metrics[0]
    m.sum.data_points[0].attributes.append(kv("http.request.header.authorization", "Bearer x"))
    m.sum.data_points[1].attributes.append(kv("url", "https://u:pw@h/"))
    ex = m.sum.data_points[1].exemplars.add(as_int=1)
    ex.filtered_attributes.append(kv("token", "t"))
    out = run(Signal.METRICS, msg).message
    dps = out.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points
    assert attrs_of(dps[0])["http.request.header.authorization"] == R
    assert attrs_of(dps[1])["url"] == f"https://u:{R}@h/"
    assert dps[1].exemplars[0].filtered_attributes[0].value.string_value == R
    assert all(SUMMARY_COUNT_KEY not in attrs_of(dp) for dp in dps)


def test_summary_attribute_counts_masked_values_per_span_and_record() -> None:
    msg = make_traces(2, attrs={"token": "a", "note": "password=b c password=d"})
    out = run(Signal.TRACES, msg, summary_attributes=True).message
    for span in out.resource_spans[0].scope_spans[0].spans:
        assert attrs_of(span)[SUMMARY_COUNT_KEY] == 2  # two values changed (one of them twice)
    logs = make_logs(2)
    logs.resource_logs[0].scope_logs[0].log_records[0].body.string_value = "token=x"
    recs = run(Signal.LOGS, logs, summary_attributes=True).message.resource_logs[0].scope_logs[0].log_records
    assert attrs_of(recs[0])[SUMMARY_COUNT_KEY] == 1 and SUMMARY_COUNT_KEY not in attrs_of(recs[1])


def test_a_value_holding_a_nul_still_gets_masked() -> None:
    msg = make_traces(1, attrs={"a": "x\x00token=abc", "b": "sk-proj-abcdefghij0123456789ABCD"})
    span = run(Signal.TRACES, msg).message.resource_spans[0].scope_spans[0].spans[0]
    assert attrs_of(span) == {"a": f"x\x00token={R}", "b": R}


# -- the wire path ------------------------------------------------------------------------------

def test_clean_request_keeps_its_wire_bytes_and_is_not_decoded() -> None:
    raw = Payload(Signal.TRACES, message=make_traces(20, attrs={"gen_ai.usage.input_tokens": 5,
                                                                "gen_ai.request.model": "gpt-4o"})).serialize()
    p = Payload(Signal.TRACES, raw=raw, items=20)  # as a receiver makes it: bytes, counted from the envelope
    out = SecretMask(SecretMaskConfig(), Signal.TRACES)(p)
    assert out is p and out.raw_cached is raw
    assert p._message is None  # the prefilter answered from the bytes alone


def test_candidate_without_a_change_keeps_its_wire_bytes() -> None:
    raw = Payload(Signal.TRACES, message=make_traces(3, attrs={"note": "Bearer token missing"})).serialize()
    p = Payload(Signal.TRACES, raw=raw)
    out = SecretMask(SecretMaskConfig(), Signal.TRACES)(p)
    assert out.raw_cached is raw  # decoded and walked, nothing masked: no re-encode


def test_changed_request_gets_new_wire_bytes_with_the_masks() -> None:
    raw = Payload(Signal.TRACES, message=make_traces(3, attrs={"token": "abc"})).serialize()
    p = Payload(Signal.TRACES, raw=raw)
    out = SecretMask(SecretMaskConfig(), Signal.TRACES)(p)
    assert out is p and p._message is None  # edited on the wire: never decoded
    assert out.raw_cached is not None and out.raw_cached != raw
    assert out.serialize() is out.raw_cached  # the exporter sends the spliced bytes as they are
    decoded = Signal.TRACES.request_type.FromString(out.serialize())
    assert all(attrs_of(s)["token"] == R for s in decoded.resource_spans[0].scope_spans[0].spans)


@pytest.mark.parametrize("backend", available_backends())
def test_scan_anchors_cover_the_detectors(backend: str) -> None:
    scanner = AnchorScanner(sr.anchors(sr.DETECTOR_NAMES, sk.KeyMatcher()), backend=backend)
    assert scanner.backend == backend
    assert scanner.scan(b"gen_ai.usage.input_tokens max_tokens=4096 chat gpt-4o refund policy")[0] == []
    for text in ("Token=x", "TOKEN: y", "x.apiKey", "AUTHORIZATION", "4111 1111 1111 1111", "PRIVATE KEY",
                 "u://a:b@h", "sk-x", "AKIA", "tokenSig", "token", "x_token\n"):
        assert scanner.scan(text.encode())[0], text
    for text in ("tokens", "input_tokens\x12", "TOKENS", "Tokens"):  # the plural is not the term
        assert scanner.scan(text.encode())[0] == [], text


@pytest.mark.parametrize("backend", available_backends())
def test_card_gate_ignores_uuids_but_not_cards(backend: str) -> None:
    scanner = AnchorScanner(sr.anchors(sr.DETECTOR_NAMES, sk.KeyMatcher()), backend=backend)
    assert "card_number" not in scanner.scan(b"/users/47d58fa3-c550-1830-0372-555fd235f118/x")[1]
    # a length byte that looks like a digit right before
    assert scanner.scan(b"\x344111111111111111\x12")[1] == {"card_number"}
    assert scanner.scan(b"x 4111-1111-1111-1111 y")[1] == {"card_number"}
    assert scanner.scan(b"x 3782 822463 10005 y")[1] == {"card_number"}


async def test_factory_creates_a_processor_and_counts_per_detector() -> None:
    settings = nop_settings("secret_mask", signal=Signal.TRACES)
    sink = TracesSink()
    proc = FACTORY.create(settings, SecretMaskConfig(), sink)
    assert proc.mutates_data is True
    msg = make_traces(2, attrs={"token": "a", "x": "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."})
    await proc.consume(Payload(Signal.TRACES, message=msg))
    await proc.shutdown()
    assert sink.items == 2
    tel = settings.telemetry
    assert tel.value("otelpipe_processor_masked_values_total", detector="key", processor="secret_mask") == 2
    assert tel.value("otelpipe_processor_masked_values_total", detector="jwt") == 2


# -- properties ---------------------------------------------------------------------------------

_PROP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_M = masker()
_MH = masker(mode="hash", hash_key=Secret("prop-key"))
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120)
_corpus = st.sampled_from(SECRETS)


@_PROP
@given(prefix=_text, item=_corpus, suffix=_text, hashed=st.booleans())
def test_no_corpus_secret_passes_even_in_random_text(prefix: str, item: tuple, suffix: str, hashed: bool) -> None:
    _, text, secret = item
    m = _MH if hashed else _M
    full = f"{prefix} {text} {suffix}"
    out = m.mask_text(full)
    assert secret not in out
    assert anchored(m, full) == out


@_PROP
@given(prefix=_text, item=_corpus, suffix=_text, hashed=st.booleans())
def test_masking_is_idempotent(prefix: str, item: tuple, suffix: str, hashed: bool) -> None:
    m = _MH if hashed else _M
    once = m.mask_text(f"{prefix}\n{item[1]}\n{suffix}")
    assert m.mask_text(once) == once


@_PROP
@given(text=_text)
def test_masking_is_idempotent_on_any_text(text: str) -> None:
    once = _M.mask_text(text)
    assert _M.mask_text(once) == once


@_PROP
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=":=_-ABJbkx0123456789"),
                    max_size=200))
def test_text_without_any_detector_anchor_is_never_changed(text: str) -> None:
    assert _M.mask_text(text) is text


@_PROP
@given(text=_text)
def test_text_without_a_match_is_returned_unchanged(text: str) -> None:
    compiled = _M.variant()
    assert compiled is not None
    rx = compiled.rx
    if rx.search(text) is None:
        assert _M.mask_text(text) is text


@_PROP
@given(texts=st.lists(_text, max_size=8))
def test_anchored_and_whole_string_masking_agree(texts: list[str]) -> None:
    for t in texts:
        assert anchored(_M, t) == _M.mask_text(t)


def test_any_value_helper_used_in_tests_round_trips() -> None:
    assert any_value({"a": [1, "b"]}).kvlist_value.values[0].value.array_value.values[1] == AnyValue(string_value="b")


@pytest.mark.parametrize("text", ["5150-5865-3498-4401 0", "x 4111 1111 1111 1111-5", "4111111111111111 22"])
def test_card_followed_by_other_digits_is_still_masked(text: str) -> None:
    # Found by hypothesis: a greedy digit run that swallowed a following number made the
    # whole match fail validation and the card leaked.
    assert "1111 1111" not in mask(text) and "5865-3498" not in mask(text) and "4111111111111111" not in mask(text)


# -- what leaked in issue 9 -----------------------------------------------------------------------

_PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\\nq1w2e3r4t5y6u7i8o9p0AbCdEfGh"


@pytest.mark.parametrize("text,expected", [
    # a PEM block after a sensitive key goes whole (BEGIN line, body, END line), escaped `\n` or not
    ('{"private_key": "-----BEGIN PRIVATE KEY-----\\n' + _PEM_BODY + '\\n-----END PRIVATE KEY-----\\n", "a": "b"}',
     '{"private_key": "' + R + '\\n", "a": "b"}'),
    ("private_key: -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1x\n-----END RSA PRIVATE KEY-----\nnext: 1",
     f"private_key: {R}\nnext: 1"),
    ('"-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIBx0a1b2c3\\n-----END EC PRIVATE KEY-----\\n"', f'"{R}\\n"'),
    # AWS secret after its name and blanks
    ("aws_access_key_id AKIAIOSFODNN7EXAMPLE aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     f"aws_access_key_id {R} aws_secret_access_key {R}"),
    ("aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     f"aws configure set aws_secret_access_key {R}"),
    ("aws_secret_access_key is not set", "aws_secret_access_key is not set"),
    # JSON inside a JSON string: the escaped quotes stay, the secret goes
    ('{"arguments": "{\\"q\\": \\"x\\", \\"api_key\\": \\"abc123XYZ\\"}"}',
     '{"arguments": "{\\"q\\": \\"x\\", \\"api_key\\": \\"' + R + '\\"}"}'),
    ('{"a": "{\\"b\\": \\"{\\\\\\"password\\\\\\": \\\\\\"hunter2x\\\\\\"}\\"}"}',
     '{"a": "{\\"b\\": \\"{\\\\\\"password\\\\\\": \\\\\\"' + R + '\\\\\\"}\\"}"}'),
    # name/value pairs in JSON text
    ('[{"name": "DB_PASSWORD", "value": "s3cr3t pass"}, {"name": "DB_HOST", "value": "db"}]',
     f'[{{"name": "DB_PASSWORD", "value": "{R}"}}, {{"name": "DB_HOST", "value": "db"}}]'),
    ('{"Key": "API_KEY", "Value": "abc"}', f'{{"Key": "API_KEY", "Value": "{R}"}}'),
    ('{"name": "DB_PASSWORD", "value": "a\\"b c"}', f'{{"name": "DB_PASSWORD", "value": "{R}"}}'),
    ("{'name': 'DB_PASSWORD', 'value': 'it\\'s \"x\"'}", f"{{'name': 'DB_PASSWORD', 'value': '{R}'}}"),
    ('{"name": "max_tokens", "value": "4096"}', '{"name": "max_tokens", "value": "4096"}'),
    # connection strings and URLs
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=abc+/def==;EndpointSuffix=core.windows.net",
     f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={R};EndpointSuffix=core.windows.net"),
    ("redis://:hunter2pw@cache:6379/0", f"redis://:{R}@cache:6379/0"),
    ("redis://:@cache:6379/0", "redis://:@cache:6379/0"),
    # provider tokens
    ("token hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh ok", f"token {R} ok"),
    ("hf_hub_download", "hf_hub_download"),
    ("key SG.abcdefghijABCDEFGHIJ12.abcdefghijABCDEFGHIJabcdefghijABCDEFGHIJ123 ok", f"key {R} ok"),
    ("SG. Smith approved", "SG. Smith approved"),
    ("https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcDEF123ghiJKL456mnoPQR",
     f"https://hooks.slack.com/services/{R}"),
    ("https://hooks.slack.com/services/new", "https://hooks.slack.com/services/new"),
    ("https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq/getMe",
     f"https://api.telegram.org/bot123456789:{R}/getMe"),
    ("elapsed 123456789:42", "elapsed 123456789:42"),
])
def test_issue_9_leaks_are_masked_and_look_alikes_kept(text: str, expected: str) -> None:
    assert mask(text) == expected


@pytest.mark.parametrize("name", ["huggingface_token", "sendgrid_key", "slack_webhook", "telegram_bot_token"])
def test_new_detectors_can_be_switched_off(name: str) -> None:
    kind_text = next(t for k, t, _ in SECRETS if k == name and "=" not in t and "token" not in t.lower().split(name)[0])
    assert mask(kind_text) != kind_text
    assert mask(kind_text, detectors={name: False}) == kind_text


def test_name_value_pairs_in_kvlists_mask_the_value() -> None:
    env = [{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "DB_HOST", "value": "db.internal"},
           {"Key": "api_token", "Value": "abc", "Other": "kept"}, {"name": "PASSWORD_LENGTH", "value": "16"},
           {"name": "SECRET", "value": ["a", "b"]}, {"key": "password", "value": 5}]
    msg = make_traces(1, attrs={"container.env": env})
    logs = make_logs(1)
    logs.resource_logs[0].scope_logs[0].log_records[0].body.CopyFrom(any_value({"name": "TOKEN", "value": "t0k"}))
    span = run(Signal.TRACES, msg).message.resource_spans[0].scope_spans[0].spans[0]
    items = [{kv.key: kv.value for kv in item.kvlist_value.values}
             for item in span.attributes[0].value.array_value.values]
    assert items[0]["value"].string_value == R and items[0]["name"].string_value == "DB_PASSWORD"
    assert items[1]["value"].string_value == "db.internal"
    assert items[2]["Value"].string_value == R and items[2]["Other"].string_value == "kept"
    assert items[3]["value"].string_value == "16"
    assert [v.string_value for v in items[4]["value"].array_value.values] == [R, R]
    assert items[5]["value"].int_value == 5
    body = run(Signal.LOGS, logs).message.resource_logs[0].scope_logs[0].log_records[0].body
    assert {kv.key: kv.value.string_value for kv in body.kvlist_value.values} == {"name": "TOKEN", "value": R}


def test_name_value_pairs_follow_the_key_rule_settings() -> None:
    env = [{"name": "DB_PASSWORD", "value": "hunter2"}]
    for kw in ({"key_matching": False}, {"allowed_keys": ("db_password",)}, {"allowed_keys": ("value",)}):
        out = run(Signal.TRACES, make_traces(1, attrs={"env": env}), **kw)
        span = out.message.resource_spans[0].scope_spans[0].spans[0]
        item = {kv.key: kv.value.string_value
                for kv in span.attributes[0].value.array_value.values[0].kvlist_value.values}
        assert item["value"] == "hunter2", kw


def test_semantic_convention_identifiers_are_kept_and_credentials_next_to_them_masked() -> None:
    ids = {"session.id": "3f2c8a4e-9b1d-4c7e-a5f3-0d8e6b2a1c94", "gen_ai.conversation.id": "conv_123",
           "user.id": "u_42", "enduser.id": "alice", "client.id": "agent-7", "session.previous_id": "s-1"}
    creds = {"session_token": "st-1", "session.token": "st-2", "sessionid": "sid-3", "cookie": "a=b",
             "http.request.header.set-cookie": "sessionid=abc", "session_id": "s-4"}
    span = run(Signal.TRACES, make_traces(1, attrs={**ids, **creds})).message.resource_spans[0].scope_spans[0].spans[0]
    assert attrs_of(span) == {**ids, **{k: R for k in creds}}
    # value detection still applies to an identifier, and `session.id=...` in text is not a credential pair
    span = run(Signal.TRACES, make_traces(1, attrs={"session.id": "Bearer abcDEF123456xyz", "note": "session.id=abc"})
               ).message.resource_spans[0].scope_spans[0].spans[0]
    assert attrs_of(span) == {"session.id": f"Bearer {R}", "note": "session.id=abc"}


def test_blocked_keys_naming_an_identifier_mask_it_and_allowed_keys_still_win() -> None:
    blocked = (*sk.DEFAULT_BLOCKED_KEYS, "session.id")
    km = sk.KeyMatcher(blocked, ())
    assert km.classify("session.id") == sk.SENSITIVE and km.classify("Session.Id") == sk.SENSITIVE
    assert km.classify("user.id") == sk.NOT_SENSITIVE
    assert sk.KeyMatcher(blocked, ("session.id",)).classify("session.id") == sk.ALLOWED
    assert sk.KeyMatcher(identifier_keys=()).classify("session.id") == sk.SENSITIVE
    span = run(Signal.TRACES, make_traces(1, attrs={"session.id": "s-1", "user.id": "u"}), blocked_keys=blocked
               ).message.resource_spans[0].scope_spans[0].spans[0]
    assert attrs_of(span) == {"session.id": R, "user.id": "u"}
    span = run(Signal.TRACES, make_traces(1, attrs={"session.id": "s-1"}), identifier_keys=()
               ).message.resource_spans[0].scope_spans[0].spans[0]
    assert attrs_of(span) == {"session.id": R}


def test_identifier_keys_config_is_validated() -> None:
    issues: list = []
    decode_dataclass(SecretMaskConfig, {"identifier_keys": ["session.id", ""]}, "processors.secret_mask", issues)
    assert [(i.path, i.message) for i in issues] == [("processors.secret_mask.identifier_keys",
                                                      "must not contain empty keys")]


async def test_new_detectors_are_counted_under_their_names() -> None:
    settings = nop_settings("secret_mask", signal=Signal.TRACES)
    sink = TracesSink()
    proc = FACTORY.create(settings, SecretMaskConfig(), sink)
    texts = {"huggingface_token": "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
             "sendgrid_key": "SG.abcdefghijABCDEFGHIJ12.abcdefghijABCDEFGHIJabcdefghijABCDEFGHIJ123",
             "slack_webhook": "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcDEF123ghiJKL456mnoPQR",
             "telegram_bot_token": "bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq",
             "aws_secret_key": "aws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    env = [{"name": "DB_PASSWORD", "value": "hunter2"}]
    attrs = {f"tool.output.{i}": text for i, text in enumerate(texts.values())}
    await proc.consume(Payload(Signal.TRACES, message=make_traces(1, attrs={**attrs, "env": env})))
    await proc.shutdown()
    tel = settings.telemetry
    for name in texts:
        assert tel.value("otelpipe_processor_masked_values_total", detector=name, processor="secret_mask") == 1, name
    assert tel.value("otelpipe_processor_masked_values_total", detector="key", processor="secret_mask") == 1
