"""The C walker's own match of credential_pair (`pair_match` in processors/privacy/_wirewalk.c) against
the detector regex it stands in for: at every `:` and `=` of any ASCII string it must say what the regex
says (the same match end and value span), or hand the position to the regex."""
from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.privacy import walker as walker_module
from processors.privacy.masker import Compiled, Masker, Replacer
from processors.privacy.secret_keys import KeyMatcher
from processors.privacy.secret_rules import DETECTOR_NAMES

_wirewalk = walker_module._wirewalk  # None where it was not built: test_wirewalk_native.py fails then
NONE, MATCH, DEFER = 0, 1, 2

# Pieces that make the pattern's cases: blanks up to and past three, quotes escaped any number of times,
# `//`, PEM headers, the scheme words in any case, key characters, pair stoppers, backslashes, telegram's
# digits-colon-A, and the separators themselves.
PIECES = ["api_key", "token", "Authorization", "\"", "'", "\\", "\\\"", "\\\\'", " ", "\t", "  ", "    ", ":", "=",
          "//", "-----BEGIN RSA PRIVATE KEY-----", "bearer", "Bearer ", "BASIC\t", "TokeN ", "basic", "sk-proj-abc123",
          "x", "9", "_", "-", "&", ",", ";", "<", ")", "]", "}", "@", "/", ".", "12345", "A", "AAAA", "\n", "\x0b",
          "\x1c", "\x00", "~", "+", "%2F", "A" + "b" * 34, "A" + "b" * 33]


def _compiled(masker: Masker) -> Compiled:
    c = masker.variant()
    assert c is not None
    return c


_DEFAULT = _compiled(Masker(keys=KeyMatcher(), replacer=Replacer()))
# credential_pair first at a colon (no url_password or telegram before it), and not at all
_ALONE = _compiled(Masker(keys=KeyMatcher(), replacer=Replacer(), enabled=["credential_pair", "bearer"]))
_NO_PAIR = _compiled(Masker(keys=KeyMatcher(), replacer=Replacer(),
                            enabled=[n for n in DETECTOR_NAMES if n != "credential_pair"]))


def _agrees(c: Compiled, s: str) -> list[str]:
    """Every separator of s where pair_match and the regex disagree."""
    assert _wirewalk is not None
    bad = []
    for p, ch in enumerate(s):
        if ch not in ":=":
            continue
        group = c.pair[0] if ch == ":" else c.pair[1]
        if not group:
            continue
        kind, end, vs, ve = _wirewalk.pair_match(s.encode("ascii"), p)
        m = c.rx.match(s, p)
        if kind == DEFER:
            continue
        if kind == NONE and m is not None:
            bad.append(f"{p}: C none, regex {m.lastindex} {m.span()}")
        if kind == MATCH:
            rule = c.rules[group]
            assert rule is not None
            want = None if m is None else (m.lastindex, m.end(), m.span(rule[1]))
            if want != (group, end, (vs, ve)):
                bad.append(f"{p}: C {(group, end, (vs, ve))}, regex {want}")
    return bad


def test_the_pair_groups_are_where_credential_pair_is_tried_last_or_alone() -> None:
    assert all(_DEFAULT.pair) and all(_ALONE.pair)
    assert _NO_PAIR.pair == (0, 0)
    for c in (_DEFAULT, _ALONE):
        for g in c.pair:
            rule = c.rules[g]
            assert rule is not None and rule[0] == "credential_pair"


def test_the_usual_pairs_are_matched_in_c_as_the_regex_matches_them() -> None:
    assert _wirewalk is not None
    cases = {
        '{"Authorization": "Bearer sk-proj-abcdefghij0123456789"}': (16, MATCH),
        "https://h.example.com/x?api_key=sk-ant-api03-abc&x=1": (31, MATCH),
        "timed out calling tool (token=eyJhbGciOi.x.y)": (29, MATCH),
        'password: \\\\\\"hunter2\\\\\\"': (8, MATCH),
        "token=    four-blanks": (5, NONE),
        "key:  //not-a-value": (3, NONE),
        "redis://:secret@host": (5, DEFER),
        "bot12345:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1": (8, DEFER),  # telegram_bot_token's shape: tried first
        "bot12345:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw": (8, MATCH),  # one character short of it
        "private_key=-----BEGIN RSA PRIVATE KEY-----abc": (11, DEFER),
        "=value": (0, NONE),
        "(=value": (1, NONE),
    }
    for s, (p, kind) in cases.items():
        assert s[p] in ":=", s
        assert _wirewalk.pair_match(s.encode(), p)[0] == kind, s
        assert _agrees(_DEFAULT, s) == [], s
        assert _agrees(_ALONE, s) == [], s


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14))
def test_pair_match_says_what_the_regex_says(pieces: list[str]) -> None:
    s = "".join(pieces)
    assert _agrees(_DEFAULT, s) == []
    assert _agrees(_ALONE, s) == []


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_pair_match_on_any_ascii(s: str) -> None:
    assert _agrees(_DEFAULT, s) == []
    assert _agrees(_ALONE, s) == []


def test_pair_match_refuses_what_the_walker_never_hands_it() -> None:
    assert _wirewalk is not None
    for data, p in ((b"caf\xc3\xa9=x", 4), (b"a=b", 3), (b"a=b", -1)):
        try:
            _wirewalk.pair_match(data, p)
        except ValueError:
            continue
        raise AssertionError((data, p))


def test_the_detector_regex_is_still_what_pair_match_copies() -> None:
    """If credential_pair's pattern changes, pair_match must change with it (this test then fails first)."""
    from processors.privacy.secret_rules import DETECTORS

    pattern = next(d.pattern for d in DETECTORS if d.name == "credential_pair" and d.first == ":=")
    assert pattern.startswith(r"(?<=[A-Za-z0-9_\-\"' ][:=])[ \t]{0,3}(?:\\*[\"'])?(?!//)(?P<v>-----BEGIN")
    assert re.search(r"\|\(\?:\(\?i:bearer\|basic\|token\)\[ \\t\]\+\)\?", pattern), pattern


# Strings made of one piece repeated: anchors inside one long key run, value runs that every later
# separator starts inside, rejected and accepted pairs in turn, colons after five digits and an `A`. The
# walkers keep each run's answer for the positions inside it (scanning it again for each was quadratic: one
# request held the loop for minutes), and hand a colon to the regex only where telegram_bot_token matches.
REPEATED = ["tokenizer=", "token-", "api_keyX", "token", "token=-----BEGIN ", "token=\\\\", 'token=\\"', "12345:",
            "tokenizer=\\\\x", "x://a:", "password: a&", "token=null ", "secret_token=abc;x",
            "Authorization: Bearer x ", "bot12345:A", "id: 7;", "12345:A" + "b" * 34, "12345:A" + "b" * 34 + "."]


def test_repeated_pieces_mask_alike_on_both_walkers_and_the_definition() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from pipeline.model import Payload, Signal
    from processors.privacy.secret_mask import SecretMask, SecretMaskConfig

    walkers = {n: SecretMask(SecretMaskConfig(), Signal.TRACES, native=n) for n in (True, False)}
    for piece in REPEATED:
        text = piece * (3000 // len(piece))
        req = ExportTraceServiceRequest()
        span = req.resource_spans.add().scope_spans.add().spans.add(name="x")
        span.attributes.add(key="note").value.string_value = text
        raw = req.SerializeToString()
        outs = {}
        for native, sm in walkers.items():
            out = ExportTraceServiceRequest.FromString(sm(Payload(Signal.TRACES, raw=raw, items=1)).serialize())
            outs[native] = (out.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.string_value,
                            sm.masker.take_counts())
        assert outs[True] == outs[False], piece
        assert outs[True][0] == walkers[True].masker.mask_text(text), piece  # the definition: search it all
        walkers[True].masker.take_counts()


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="tokenapi_KEY-.\\\"' \t:=,x", max_size=40), st.integers(0, 40))
def test_the_split_pair_tail_is_pair_tail(s: str, q: int) -> None:
    """masker.positions finds PAIR_TAIL's end in two steps (the key's run, then _PAIR_REST) so that it can
    reuse the first for every anchor inside one run; the two must end where PAIR_TAIL ends."""
    from processors.privacy import masker

    q = min(q, len(s))
    whole = masker.PAIR_TAIL.match(s, q)
    run = masker._KEY_RUN.match(s, q)
    assert run is not None
    rest = masker._PAIR_REST.match(s, run.end())
    assert (None if whole is None else whole.end()) == (None if rest is None else rest.end())
