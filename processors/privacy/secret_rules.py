"""secret_mask's value rules, as data: one `Detector` entry per secret shape, in one table.

Read `DETECTORS` top to bottom: each entry says what it finds (`description`), where a match
starts (`first`, the characters it can start with) and what it is (`pattern`, the regex after that
first character; it may look behind at it), which bytes every match contains (`anchors`: the scan
finds those in the request's wire bytes, and the detector is only tried where they say its match
can start), whether a match is a secret after all (`validator`), and what is replaced (`replace`).
Several entries may share a name (one per form): they are counted, switched and gated as one.

The other half of secret_mask, the key-name rule (`password`, `x-api-token`: the whole value
goes), is in `processors.privacy.secret_keys`; `credential_pair` joins the two (a `key=value`
pair whose key passes the key-name rule), and its anchors are the key terms themselves. How the
entries are compiled and run is `processors.privacy.masker`.
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from processors.privacy.scanner import Anchor, shaped
from processors.privacy.secret_keys import KeyMatcher

#: Where, relative to an anchor occurrence's first byte, a match of its detector can start: an
#: offset; FULL when it cannot be told cheaply (the string holding it is searched whole); PAIR for a
#: key term (the match starts at the separator after the key holding the term).
FULL = "full"
PAIR = "pair"
Start = int | str
#: A validator: is a match a secret after all? Called as check(s, m, p, start, end): `m` is the match,
#: `p` where the detector's match starts in `s` (at its `first` character), s[start:end] the part to
#: replace. (credential_pair's, `PAIR_KEY`, needs the key rules: the masker supplies it.)
Validator = Callable[[str, "re.Match[str]", int, int, int], bool]
PAIR_KEY = "pair_key"
#: `anchors` of credential_pair: the terms of the configured key rules (see `term_anchors`).
KEY_TERMS = "key_terms"


@dataclass(frozen=True, slots=True)
class Detector:
    """One secret shape (see the module docstring).

    `replace`: "v", the pattern's group `v` (`Bearer <v>`: the scheme word stays); an int n, the
    whole match and the n characters before its first one (a detector anchored on a rarer character
    inside the secret: `sk-` is matched at its `k`); "token", the match and the run of token
    characters before it. `gated`: compiled in only for requests whose bytes hold one of the
    detector's anchors (its first characters are everywhere in ordinary telemetry).
    """

    name: str
    first: str
    pattern: str
    anchors: tuple[tuple[bytes, Start] | Anchor, ...] | str
    description: str
    validator: Validator | str | None = None
    replace: int | str = 0
    gated: bool = False


# -- pieces of patterns -------------------------------------------------------------------------

_T = r"A-Za-z0-9_\-"
#: A PEM block, from its BEGIN line to its END line (or the end of a truncated value); its newlines
#: may be real or JSON escapes (`\n`), so the body is anything up to the END line.
_PEM = r"-----BEGIN[A-Z0-9 ]{0,40}-----[^\x00]*?(?:-----END[A-Z0-9 ]{0,40}-----|(?=\x00)|\Z)"
#: The value of a `key=value` pair: a run of these characters, where a backslash may not start the
#: escape of a closing quote (`\"`, `\\\"`: the value is then inside a JSON string inside JSON), so
#: masking it leaves the escaping intact. No two branches start with the same character: linear.
#: The characters `\s` matches in a str pattern (str.isspace()), written out. A class holding `\s` is
#: tested per character through sre's category check; an explicit class becomes a bitmap, which made
#: credential_pair's value (the most matched rule on agent telemetry) about 30 % cheaper to match.
#: tests/unit/processors/privacy/test_secret_rules.py checks it against `\s` over every code point.
WS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PAIR_CHAR = rf"[^{WS}&,;\"'<>()\[\]{{}}\x00\\]"
_PAIR_BACKSLASH = r"\\(?!\\*[\"'])"
_PAIR_VALUE = rf"(?:{_PAIR_CHAR}|{_PAIR_BACKSLASH}){_PAIR_CHAR}*(?:{_PAIR_BACKSLASH}{_PAIR_CHAR}*)*"
#: An optional opening quote, escaped as often as the JSON it is in is nested.
_OPEN_QUOTE = r"(?:\\*[\"'])?"
#: Where the key-word form of an AWS secret key can be (the `y` of `..._key` matched last).
AWS_SECRET_NAMES = ("ecret_access_key", "ECRET_ACCESS_KEY", "ecret-access-key", "ecretAccessKey", "ws_secret_key",
                    "WS_SECRET_KEY")
#: Digit runs in the card detector's shapes: 13 digits in a row, or 4-4-4-1 / 4-6-4 groups (space or
#: `-` between them). No boundary conditions: on the wire a string sits next to length and tag bytes
#: that may look like digits, so a pattern that looked at neighbours could miss a card at the start or
#: end of a value.
_D, _S = b"0123456789", b" -"
_CARD_SHAPES = (
    shaped(rb"[0-9]{13}", ((_D, 13),), tag="card_number", info=FULL),
    shaped(rb"[0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}[ \-][0-9]", ((_D, 4), (_S, 1), (_D, 4), (_S, 1), (_D, 4), (_S, 1),
                                                              (_D, 1)), tag="card_number", info=FULL),
    shaped(rb"[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4}", ((_D, 4), (_S, 1), (_D, 6), (_S, 1), (_D, 4)), tag="card_number",
           info=FULL),
)


# -- validators ---------------------------------------------------------------------------------

_DIGIT = re.compile("[0-9]")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_issuer_ok(d: str) -> bool:
    n = len(d)
    if d[0] == "4":
        return n in (13, 16, 19)
    two = int(d[:2])
    if 51 <= two <= 55 or 2221 <= int(d[:4]) <= 2720:
        return n == 16
    if two in (34, 37):
        return n == 15
    if two in (36, 38, 39) or 300 <= int(d[:3]) <= 305:
        return 14 <= n <= 19
    if d.startswith("6011") or two == 65 or 644 <= int(d[:3]) <= 649 or two == 62 or two == 35:
        return 16 <= n <= 19
    return False


def card_number_ok(text: str) -> bool:
    """A plausible card number: 13-19 digits, consistent grouping, issuer prefix, Luhn-valid."""
    digits = text.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19:
        return False
    if len(digits) != len(text):
        seps = {c for c in text if c in " -"}
        if len(seps) != 1:
            return False
        groups = [len(g) for g in re.split(r"[ \-]", text)]
        if not (all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4) and groups not in ([4, 6, 5], [4, 6, 4]):
            return False
    return _card_issuer_ok(digits) and luhn_ok(digits)


def basic_credential_ok(value: str) -> bool:
    """Basic credentials are base64 of `user:password`; prose after the word 'Basic' is not."""
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return ":" in text and text.isprintable()


def looks_random(token: str, min_len: int = 8, long_len: int = 24) -> bool:
    """A credential-looking token: has a digit, or mixes cases, or is long; ordinary words are not.
    (Tokens are ASCII: every pattern that hands one over matches ASCII characters only.)"""
    n = len(token)
    if n < min_len:
        return False
    if n >= long_len or _DIGIT.search(token) is not None:
        return True
    return token.lower() != token and token.upper() != token


def _aws_secret_ok(token: str) -> bool:
    """Real secret keys are random base64: all three character classes, or a / or +."""
    if "/" in token or "+" in token:
        return True
    return token.lower() != token and token.upper() != token and _DIGIT.search(token) is not None


def _bearer_ok(s: str, m: re.Match[str], p: int, start: int, end: int) -> bool:
    return looks_random(s[start:end])


def _basic_ok(s: str, m: re.Match[str], p: int, start: int, end: int) -> bool:
    return basic_credential_ok(s[start:end])


def _openai_ok(s: str, m: re.Match[str], p: int, start: int, end: int) -> bool:
    return looks_random(s[p + 1:m.end()], 20, 1 << 30)  # the match starts at the `k` of `sk-`


def _card_ok(s: str, m: re.Match[str], p: int, start: int, end: int) -> bool:
    return card_number_ok(s[p:m.end()])


def _aws_secret_key_ok(s: str, m: re.Match[str], p: int, start: int, end: int) -> bool:
    return _aws_secret_ok(s[p:m.end()][-40:])


def _huggingface_ok(s: str, m: re.Match[str], p: int, start: int, end: int) -> bool:
    return looks_random(s[p + 1:m.end()], 30, 1 << 30)  # the match starts at the `_` of `hf_`


# -- the table ----------------------------------------------------------------------------------

DETECTORS: tuple[Detector, ...] = (
    Detector("card_number", "0123456789",
             r"(?<![0-9A-Za-z.][0-9])(?:[0-9]{12,18}|[0-9]{3}(?:"
             r" [0-9]{4} [0-9]{4} (?:[0-9]{4} [0-9]{1,3}|[0-9]{1,4})| [0-9]{6} [0-9]{4,5}|"
             r"-[0-9]{4}-[0-9]{4}-(?:[0-9]{4}-[0-9]{1,3}|[0-9]{1,4})|-[0-9]{6}-[0-9]{4,5}))"
             r"(?![0-9A-Za-z]|\.[0-9])",
             _CARD_SHAPES, "payment card numbers that pass the Luhn check and have a card issuer prefix",
             validator=_card_ok, gated=True),
    Detector("url_password", ":", rf"//[^{WS}/:@?#'\"<>\x00]{{0,256}}:(?P<v>[^{WS}/@?#'\"<>\x00]{{1,256}})@",
             ((rb"://[^\s/:@?#'\"<>]{0,256}:[^\s/@?#'\"<>]{1,256}@", FULL),),
             "the password of `scheme://user:password@host` and `redis://:password@host` (user and host are kept)",
             replace="v"),
    # before credential_pair: at a `:` the first detector that matches is the only one tried
    Detector("telegram_bot_token", ":", r"(?<=[0-9]{5}:)(?P<v>A[A-Za-z0-9_\-]{34})(?![A-Za-z0-9_\-])",
             ((rb":A[A-Za-z0-9_\-]{34}", 0),),
             "Telegram bot tokens (`123456789:AA...`; the bot id before the colon is kept)", replace="v"),
    Detector("credential_pair", ":=",
             rf"(?<=[A-Za-z0-9_\-\"' ][:=])[ \t]{{0,3}}{_OPEN_QUOTE}(?!//)"
             rf"(?P<v>{_PEM}|(?:(?i:bearer|basic|token)[ \t]+)?{_PAIR_VALUE})",
             KEY_TERMS,
             "`password=...`, `token: ...`, `\"api_key\": \"...\"` pairs in query strings, log lines and JSON, also "
             "inside a JSON string inside JSON (the key before the separator must pass the key-name rule; a PEM "
             "block after it goes whole), and `{\"name\": \"DB_PASSWORD\", \"value\": \"...\"}` name/value pairs",
             validator=PAIR_KEY, replace="v"),
    # the name/value form of credential_pair: the separator is the `,` after the name's string; the
    # value is the quoted string after `"value":` (JSON) or `'value':` (a Python dict's repr). At the
    # top level a string holds any escape (`\"` is a quote inside it); inside a JSON string (the quotes
    # escaped) it ends at the first escaped quote, however often escaped.
    *(Detector("credential_pair", ",",
               rf"(?<=[\"'],)[ \t]{{0,3}}{q}(?:value|Value|VALUE){q}[ \t]{{0,3}}:[ \t]{{0,3}}{q}"
               rf"(?P<v>(?:[^{q}\\\x00]|\\[^\x00])+)",
               KEY_TERMS, "credential_pair's name/value form: the quoted string after `\"value\":` when the string "
               "before it names a credential", validator=PAIR_KEY, replace="v") for q in ('"', "'")),
    *(Detector("credential_pair", ",",
               rf"(?<=[\"'],)[ \t]{{0,3}}\\+{q}(?:value|Value|VALUE)\\+{q}[ \t]{{0,3}}:[ \t]{{0,3}}\\+{q}"
               rf"(?P<v>(?!\\*{q})[^{q}\\\x00]*(?:\\(?!\\*{q})[^{q}\\\x00]*)*)",
               KEY_TERMS, "credential_pair's name/value form inside a JSON string", validator=PAIR_KEY,
               replace="v") for q in ('"', "'")),
    Detector("private_key", "-",
             r"----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----[^\x00]*?"
             r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----|(?=\x00)|\Z)",
             (Anchor(rb"PRIVATE KEY", tag="private_key", info=FULL),),
             "PEM private key blocks (RSA, EC, OPENSSH, PGP, ...), to the END line or the end of a truncated value",
             gated=True),
    Detector("bearer", "Bb",
             r"(?<![A-Za-z0-9_][Bb])(?:(?<=b)earer|(?<=B)(?:earer|EARER))[ \t]+"
             r"(?P<v>[A-Za-z0-9\-_~+/]+(?:\.[A-Za-z0-9\-_~+/]+)*=*)",
             ((rb"earer[ \t]", -1), (rb"EARER[ \t]", -1)),
             "HTTP Bearer credentials (the scheme word is kept)", validator=_bearer_ok, replace="v"),
    Detector("basic", "Bb",
             r"(?<![A-Za-z0-9_][Bb])(?:(?<=b)asic|(?<=B)(?:asic|ASIC))[ \t]+"
             r"(?P<v>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])",
             ((rb"asic[ \t]", -1), (rb"ASIC[ \t]", -1)),
             "HTTP Basic credentials (base64 of user:password; the scheme word is kept)", validator=_basic_ok,
             replace="v"),
    Detector("github_token", "_",
             r"(?:(?<=gh[pousr]_)(?<![A-Za-z0-9_]gh[pousr]_)[A-Za-z0-9]{30,255}"
             r"|(?<=github_pat_)(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])",
             ((rb"gh[pousr]_", 3), (rb"github_pat_", 10)),
             "GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)", replace="token"),
    Detector("anthropic_key", "k", rf"(?<=sk)(?<![{_T}]sk)-ant-[{_T}]{{20,}}", ((rb"sk-", 1),),
             "Anthropic API keys (sk-ant-...)", replace=1),
    Detector("openai_key", "k", rf"(?<=sk)(?<![{_T}]sk)-(?:proj-|svcacct-|admin-|None-)?[{_T}]{{20,}}",
             ((rb"sk-", 1),), "OpenAI API keys (sk-..., sk-proj-...)", validator=_openai_ok, replace=1),
    Detector("stripe_key", "_", r"(?<=[sr]k_)(?<![A-Za-z0-9_][sr]k_)(?:live|test)_[A-Za-z0-9]{16,}",
             ((rb"k_live_", 1), (rb"k_test_", 1)),
             "Stripe secret and restricted keys (sk_live_, rk_live_, and their _test_ forms)", replace=2),
    Detector("huggingface_token", "_", r"(?<=hf_)(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{30,64}(?![A-Za-z0-9_])",
             ((rb"hf_", 2),), "Hugging Face access tokens (hf_...)", validator=_huggingface_ok, replace=2),
    Detector("aws_secret_key", "A",
             r"(?<![A-Za-z0-9]A)(?:KIA|SIA)[A-Z0-9]{16}[^A-Za-z0-9\n\x00]{1,20}[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
             ((rb"AKIA", 0), (rb"ASIA", 0)),
             "AWS secret access keys written next to their key id (`AKIA... wJalr...`) or after their name and "
             "blanks (`aws_secret_access_key wJalr...`); after `=` or `:` the key-name rule and credential_pair "
             "mask them", validator=_aws_secret_key_ok),
    Detector("aws_secret_key", "yY",
             "(?:" + "|".join(f"(?<={n})" for n in AWS_SECRET_NAMES) + ")"
             r"[ \t]+[\"']?(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
             tuple((re.escape(n.encode()), len(n) - 1) for n in AWS_SECRET_NAMES),  # the match starts at the `y`
             "aws_secret_key's key-word form: `aws_secret_access_key wJalr...`", replace="v"),
    Detector("aws_access_key_id", "A", r"(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
             ((rb"AKIA", 0), (rb"ASIA", 0), (rb"ABIA", 0), (rb"ACCA", 0)), "AWS access key ids (AKIA..., ASIA...)"),
    Detector("google_api_key", "A", rf"(?<![{_T}]A)Iza[{_T}]{{35}}(?![{_T}])", ((rb"AIza", 0),),
             "Google API keys (AIza...)"),
    Detector("jwt", "J", rf"(?<=eyJ)(?<![{_T}]eyJ)[{_T}]{{8,}}\.[{_T}]{{2,}}\.[{_T}]*", ((rb"eyJ", 2),),
             "JSON Web Tokens", replace=2),
    Detector("slack_token", "x", r"(?<![A-Za-z0-9\-]x)(?:ox[abposre]|app)-[A-Za-z0-9\-]{10,}",
             ((rb"xox[abposre]-", 0), (rb"xapp-", 0)), "Slack tokens (xoxb-, xoxp-, xapp-, ...)"),
    Detector("slack_webhook", "k",
             r"(?<=hooks\.slack)\.com/(?:services|workflows|triggers)/"
             r"(?P<v>T[A-Z0-9]{6,16}(?:/[A-Za-z0-9]{6,40}){1,2}/[A-Za-z0-9]{16,64})(?![A-Za-z0-9])",
             ((rb"hooks\.slack\.com/", 10),),  # the match starts at the `k` of `slack`
             "Slack webhook URLs (`https://hooks.slack.com/services/T.../B.../...`; the host is kept)", replace="v"),
    Detector("sendgrid_key", "G",
             r"(?<=SG)(?<![A-Za-z0-9_\-.]SG)\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])",
             ((rb"SG\.", 1),), "SendGrid API keys (SG.<22>.<43>)", replace=1),
)
DETECTOR_NAMES: tuple[str, ...] = tuple(dict.fromkeys(d.name for d in DETECTORS))
GATED: frozenset[str] = frozenset(d.name for d in DETECTORS if d.gated)
#: Values that follow a credential word in logs without being credentials (credential_pair).
PAIR_STOPWORDS = frozenset({
    "null", "none", "nil", "true", "false", "undefined", "required", "invalid", "expired", "missing",
    "empty", "redacted", "masked", "hidden", "n/a", "na", "set", "unset", "yes", "no", "ok", "present",
})


def _check_table() -> None:
    for d in DETECTORS:
        has_v = "(?P<v>" in d.pattern
        if has_v != (d.replace == "v"):
            raise AssertionError(f"{d.name}: replace='v' exactly when the pattern has a group v")
        if d.gated and not all(isinstance(a, Anchor) and a.tag == d.name for a in d.anchors):
            raise AssertionError(f"{d.name}: a gated detector's anchors are tagged with its name")


_check_table()


# -- anchors ------------------------------------------------------------------------------------

#: `token` as a key part, never `tokens`: in `tokens` + a non-capital the lower-case run goes on, so
#: the part is `tokens...` and cannot be `token` (the byte after a value may be any tag byte). Each
#: with the same occurrences written without look-aheads, for hyperscan: (expression, bytes matched
#: after the anchor's last byte).
_TOKEN_ANCHORS: tuple[tuple[bytes, tuple[tuple[bytes, int], ...]], ...] = (
    (rb"token(?!s(?![A-Z]))", ((rb"token[^s]", 1), (rb"tokens[A-Z]", 2), (rb"token$", 0))),
    (rb"Token(?!s(?![A-Z]))", ((rb"Token[^s]", 1), (rb"Tokens[A-Z]", 2), (rb"Token$", 0))),
    (rb"TOKEN(?!S(?![a-z]))", ((rb"TOKEN[^S]", 1), (rb"TOKENS[a-z]", 2), (rb"TOKEN$", 0))),
)


def term_anchors(keys: KeyMatcher) -> list[Anchor]:
    """Anchors found in every key, and every `key=value` pair, that a key term matches.

    Between two parts of a term a key may have any non-alphanumeric separators or none
    (camelCase), hence `api[^a-z0-9]*key`, searched case-insensitively. `token` is special: its
    plural is everywhere in LLM telemetry (`max_tokens`, `input_tokens`, prompt text) and is not a
    credential, so it is searched in its three possible part spellings with the plural excluded.
    A term whose every match another term's pattern also matches is left out.
    """
    out: list[Anchor] = []
    terms: list[tuple[str, ...]] = []
    for term in keys.terms:
        if term == ("token",):
            if not out:
                out.extend(Anchor(p, hs=hs, info=PAIR) for p, hs in _TOKEN_ANCHORS)
        elif term not in terms:
            terms.append(term)

    def pattern(term: tuple[str, ...]) -> bytes:
        return b"[^a-z0-9]*".join(re.escape(p.encode()) for p in term)

    def covered(b: tuple[str, ...]) -> bool:
        for a in terms:
            if a == b:
                continue
            if len(a) == 1 and any(a[0] in part for part in b) and a[0] != "".join(b):
                return True
            if len(b) == 1 and re.search(pattern(a), b[0].encode()) and len(a) > 1:
                return True
        return False

    out.extend(Anchor(pattern(t), caseless=True, info=PAIR) for t in terms if not covered(t))
    return out


def anchors(enabled: Iterable[str], keys: KeyMatcher, key_names: bool = True) -> list[Anchor]:
    """The anchors of every enabled detector (and of the key-name rule when `key_names`), for the scan.

    A string without any cannot contain a detected secret nor be a sensitive key. Each anchor's
    `info` is where its detector's match starts relative to it; gated detectors' anchors carry
    the detector's name as their tag.
    """
    enabled = set(enabled)
    seen: set[bytes] = set()
    out: list[Anchor] = []
    want_terms = key_names and bool(keys.terms)
    for d in DETECTORS:
        if d.name not in enabled:
            continue
        if isinstance(d.anchors, str):  # KEY_TERMS
            want_terms = want_terms or bool(keys.terms)
            continue
        for a in d.anchors:
            anchor = a if isinstance(a, Anchor) else Anchor(a[0], info=a[1])
            if anchor.regex not in seen:
                seen.add(anchor.regex)
                out.append(anchor)
    if want_terms:
        out.extend(term_anchors(keys))
    return out
