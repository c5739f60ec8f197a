"""Bytes anchors of secret_mask's rules, for the one scan over a request's wire bytes.

Every match of a value detector, and every key a key-name term matches, contains
one of these byte patterns inside the string that holds it; a request without any
is handed on untouched, and in one with some only the strings holding one are
looked at (`processors.anchorscan.AnchorScanner`). Each anchor carries where, relative
to it, its detector's match can start (`Masker.mask_anchored` tries only there).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from processors.privacy.anchorscan import Anchor, shaped
from processors.privacy.secret_detectors import AWS_SECRET_NAMES, FULL, GATED, PAIR
from processors.privacy.secret_keys import KeyMatcher

#: Bytes patterns that every match of a detector contains, inside the string holding the match,
#: each with where the detector's match starts relative to it.
_ANCHORS: dict[str, tuple[tuple[bytes, int | str], ...]] = {
    "openai_key": ((rb"sk-", 1),),  # the match starts at the `k` (it looks behind at the `s`)
    "anthropic_key": ((rb"sk-", 1),),
    "jwt": ((rb"eyJ", 2),),
    "bearer": ((rb"earer[ \t]", -1), (rb"EARER[ \t]", -1)),
    "aws_access_key_id": ((rb"AKIA", 0), (rb"ASIA", 0), (rb"ABIA", 0), (rb"ACCA", 0)),
    # the key id form, and the key-word form whose match starts at the `y` of `..._key`
    "aws_secret_key": ((rb"AKIA", 0), (rb"ASIA", 0),
                       *((re.escape(n.encode()), len(n) - 1) for n in AWS_SECRET_NAMES)),
    "url_password": ((rb"://[^\s/:@?#'\"<>]{0,256}:[^\s/@?#'\"<>]{1,256}@", FULL),),
    "telegram_bot_token": ((rb":A[A-Za-z0-9_\-]{34}", 0),),
    "huggingface_token": ((rb"hf_", 2),),
    "sendgrid_key": ((rb"SG\.", 1),),
    "slack_webhook": ((rb"hooks\.slack\.com/", 10),),  # the match starts at the `k` of `slack`
    "basic": ((rb"asic[ \t]", -1), (rb"ASIC[ \t]", -1)),
    "github_token": ((rb"gh[pousr]_", 3), (rb"github_pat_", 10)),
    "slack_token": ((rb"xox[abposre]-", 0), (rb"xapp-", 0)),
    "stripe_key": ((rb"k_live_", 1), (rb"k_test_", 1)),
    "google_api_key": ((rb"AIza", 0),),
    "private_key": ((rb"PRIVATE KEY", FULL),),
}
#: `token` as a key part, never `tokens`: in `tokens` + a non-capital the lower-case run goes on, so
#: the part is `tokens...` and cannot be `token` (the byte after a value may be any tag byte).
#: Each with the same occurrences written without look-aheads, for hyperscan: (expression, bytes
#: matched after the anchor's last byte).
_TOKEN_ANCHORS: tuple[tuple[bytes, tuple[tuple[bytes, int], ...]], ...] = (
    (rb"token(?!s(?![A-Z]))", ((rb"token[^s]", 1), (rb"tokens[A-Z]", 2), (rb"token$", 0))),
    (rb"Token(?!s(?![A-Z]))", ((rb"Token[^s]", 1), (rb"Tokens[A-Z]", 2), (rb"Token$", 0))),
    (rb"TOKEN(?!S(?![a-z]))", ((rb"TOKEN[^S]", 1), (rb"TOKENS[a-z]", 2), (rb"TOKEN$", 0))),
)
#: Digit runs in the card detector's shapes: 13 digits in a row, or 4-4-4-1 / 4-6-4 groups (space or
#: `-` between them). No boundary conditions: on the wire a string sits next to length and tag bytes
#: that may look like digits, so a pattern that looked at neighbours could miss a card at the start or
#: end of a value.
_D, _S = b"0123456789", b" -"
_CARD_ANCHORS = (
    (rb"[0-9]{13}", ((_D, 13),)),
    (rb"[0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}[ \-][0-9]", ((_D, 4), (_S, 1), (_D, 4), (_S, 1), (_D, 4), (_S, 1), (_D, 1))),
    (rb"[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4}", ((_D, 4), (_S, 1), (_D, 6), (_S, 1), (_D, 4))),
)


def term_anchors(keys: KeyMatcher) -> tuple[list[tuple[bytes, tuple[tuple[bytes, int], ...]]], list[bytes]]:
    """(case-sensitive, case-insensitive) bytes patterns found in every key, or `key=value` pair, that a
    term matches; the case-sensitive ones with their look-ahead-free forms (see `_TOKEN_ANCHORS`).

    Between two parts of a term a key may have any non-alphanumeric separators or
    none (camelCase), hence `api[^a-z0-9]*key`, searched case-insensitively. `token`
    is special: its plural is everywhere in LLM telemetry (`max_tokens`,
    `input_tokens`, prompt text) and is not a credential, so it is searched in its
    three possible part spellings with the plural excluded.
    """
    raw: list[tuple[bytes, tuple[tuple[bytes, int], ...]]] = []
    terms: list[tuple[str, ...]] = []
    for term in keys._terms:
        if term == ("token",):
            raw.extend(a for a in _TOKEN_ANCHORS if a not in raw)
        elif term not in terms:
            terms.append(term)

    def pattern(term: tuple[str, ...]) -> bytes:
        return b"[^a-z0-9]*".join(re.escape(p.encode()) for p in term)

    def covered(b: tuple[str, ...]) -> bool:
        # Every match of b's pattern is also a match of another term's pattern: skip b.
        for a in terms:
            if a == b:
                continue
            if len(a) == 1 and any(a[0] in part for part in b) and a[0] != "".join(b):
                return True
            if len(b) == 1 and re.search(pattern(a), b[0].encode()) and len(a) > 1:
                return True
        return False

    lower = [pattern(t) for t in terms if not covered(t)]
    return raw, lower


def anchors(enabled: Iterable[str], keys: KeyMatcher, key_names: bool = True) -> list[Anchor]:
    """The anchors of every enabled rule, for `AnchorScanner`.

    A string without any of them cannot contain a detected secret nor be a
    sensitive key, so a request without any is handed on untouched and, in one
    with some, only the strings holding one are looked at. The gated detectors'
    anchors are tagged with the detector's name (see `Masker`).
    """
    enabled = set(enabled)
    seen: set[bytes] = set()
    out: list[Anchor] = []
    for name, pats in _ANCHORS.items():
        if name in enabled:
            for p, start in pats:
                if p not in seen:
                    seen.add(p)
                    out.append(Anchor(p, tag=name if name in GATED else None, info=start))
    if keys._terms and ("credential_pair" in enabled or key_names):
        raw, lower = term_anchors(keys)
        out.extend(Anchor(p, hs=hs, info=PAIR) for p, hs in raw)
        out.extend(Anchor(p, caseless=True, info=PAIR) for p in lower)
    if "card_number" in enabled:
        out.extend(shaped(p, parts, tag="card_number", info=FULL) for p, parts in _CARD_ANCHORS)
    return out
