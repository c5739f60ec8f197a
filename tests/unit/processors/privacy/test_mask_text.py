"""`Masker.mask_text` against the plain search it stands for.

mask_text is the definition the walkers are tested against: from the start of the string the leftmost
match of the detector regex is masked when its validator accepts it, and a rejected match is searched
again one character further. It no longer runs that search as written (at a separator whose key fails
the key-name rule the match could only be rejected, and a string of such pairs was matched again and
again to its end: quadratic); `reference` below is the search as written, and the two must mask the
same spans and count the same detectors on strings built from the detectors' pieces, on any text and
on non-ASCII text (which the walkers always hand to mask_text).
"""
from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.privacy.masker import Compiled, Masker, Replacer
from processors.privacy.secret_keys import KeyMatcher
from processors.privacy.secret_rules import DETECTOR_NAMES, GATED

from .test_pair_match import PIECES

MORE = ["é", "密码=", "password=", "token=null", "[REDACTED]", "://u:p@h", "http://user:pw@host/x",
        "12345:A" + "b" * 34, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "4111 1111 1111 1111",
        "sk-ant-" + "a1" * 12, "AKIAIOSFODNN7EXAMPLE", '{"name": "DB_PASSWORD", "value": "hunter2"}', '"value":',
        "tokenizer=", "ghp_" + "a1" * 18]

MASKERS = {
    "default": Masker(keys=KeyMatcher(), replacer=Replacer()),
    "pair first at a colon": Masker(keys=KeyMatcher(), replacer=Replacer(), enabled=["credential_pair", "bearer"]),
    "no credential_pair": Masker(keys=KeyMatcher(), replacer=Replacer(),
                                 enabled=[n for n in DETECTOR_NAMES if n != "credential_pair"]),
    "hash mode": Masker(keys=KeyMatcher(), replacer=Replacer(hash_key=b"k")),
}


def reference(masker: Masker, c: Compiled, s: str) -> str:
    """mask_text as it was written before: one regex search after another."""
    out: list[str] = []
    last = 0
    m = c.rx.search(s)
    while m is not None:
        span = masker._decide(c, s, m, m.start(), last)
        if span is None:
            m = c.rx.search(s, m.start() + 1)
            continue
        out.append(s[last:span[0]])
        out.append(masker.replacer(s[span[0]:span[1]]))
        last = span[1]
        m = c.rx.search(s, max(m.end(), m.start() + 1))
    if not out:
        return s
    out.append(s[last:])
    return "".join(out)


def agree(s: str) -> None:
    for name, masker in MASKERS.items():
        c = masker.variant(GATED)
        assert c is not None
        want = reference(masker, c, s)
        want_counts = masker.take_counts()
        got = masker.mask_text(s, GATED)
        assert (got, masker.take_counts()) == (want, want_counts), (name, s)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES + MORE), max_size=16))
def test_mask_text_masks_what_the_plain_search_masks(pieces: list[str]) -> None:
    agree("".join(pieces))


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=60))
def test_mask_text_on_any_text(s: str) -> None:
    agree(s)


def test_the_regex_without_pairs_is_the_regex_less_those_branches() -> None:
    c = MASKERS["default"].variant(GATED)
    assert c is not None and c.other is not None and c.seps is not None
    assert c.seps.pattern == "[:=]"
    assert c.rx.match("token=abcdef", 5) is not None and c.other.match("token=abcdef", 5) is None
    assert c.other.match("x://u:p@h", 1) is not None  # url_password stays at `:`
    assert MASKERS["no credential_pair"].variant(GATED).seps is None  # type: ignore[union-attr]
    assert re.compile("[:=]").search(c.other.pattern) is not None  # other detectors still start at `:`
