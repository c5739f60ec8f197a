"""Secret detection as pure functions: the value detectors and the masker.

Kept apart from the processor so every rule can be unit-tested on plain strings
and reused (a logs-only redactor, a CLI `otelpipe mask` check). Everything is
compiled once per configuration; nothing here holds global mutable state.

Two mechanisms, as the secret_mask processor applies them:

* Key names (`KeyMatcher`, in `processors.secret_keys`): an attribute whose
  key *names* a credential (`http.request.header.authorization`, not
  `gen_ai.usage.input_tokens`) has its whole value replaced.
* Values (`Masker.mask_text`): known secret shapes anywhere inside a string are
  replaced, keeping the surrounding text (`Authorization: Bearer [REDACTED]`,
  `postgres://app:[REDACTED]@db:5432/x`).

Masks are recognisable: a value that already is a mask token is never masked
again, which makes masking idempotent in both replace and hash mode. The bytes
anchors that find candidates in a request's wire bytes are in
`processors.secret_anchors`.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from processors.privacy.secret_keys import NOT_SENSITIVE, SENSITIVE, KeyMatcher

# --------------------------------------------------------------------------------------------
# Value detectors
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Detector:
    """One secret shape.

    For speed every detector is written as `first` (the characters its match can
    start with) and `rest` (the regex after that character, which may look behind
    at it). All detectors are joined into one regex that begins with the union of
    the `first` characters: CPython's `re` then skips every other character in a
    tight C loop and only tries the detectors where one may start. A detector may
    be anchored on a rarer character inside the secret (`sk-` on `k`, `eyJ` on `J`):
    `back` says how many characters before the anchor belong to the secret. The
    secret part is the group `v` when the detector has one (`Bearer <v>`), else
    the whole match.
    """

    name: str
    first: str
    rest: str
    description: str
    back: int = 0  # -1: the secret starts where the run of token characters before the anchor starts
    gated: bool = False  # only compiled in for requests whose bytes contain the detector's anchor


_T = r"A-Za-z0-9_\-"
#: A PEM block, from its BEGIN line to its END line (or the end of a truncated value); its newlines
#: may be real or JSON escapes (`\n`), so the body is anything up to the END line.
_PEM = r"-----BEGIN[A-Z0-9 ]{0,40}-----[^\x00]*?(?:-----END[A-Z0-9 ]{0,40}-----|(?=\x00)|\Z)"
#: The value of a `key=value` pair: a run of these characters, where a backslash may not start the
#: escape of a closing quote (`\"`, `\\\"`: the value is then inside a JSON string inside JSON), so
#: masking it leaves the escaping intact. No two branches start with the same character: linear.
_PAIR_CHAR = r"[^\s&,;\"'<>()\[\]{}\x00\\]"
_PAIR_BACKSLASH = r"\\(?!\\*[\"'])"
_PAIR_VALUE = rf"(?:{_PAIR_CHAR}|{_PAIR_BACKSLASH}){_PAIR_CHAR}*(?:{_PAIR_BACKSLASH}{_PAIR_CHAR}*)*"
#: An optional opening quote, escaped as often as the JSON it is in is nested.
_OPEN_QUOTE = r"(?:\\*[\"'])?"
#: Where the key-word form of an AWS secret key can be (the `y` of `..._key` matched last).
AWS_SECRET_NAMES = ("ecret_access_key", "ECRET_ACCESS_KEY", "ecret-access-key", "ecretAccessKey", "ws_secret_key",
                     "WS_SECRET_KEY")
DETECTORS: tuple[Detector, ...] = (
    Detector("card_number", "0123456789",
             r"(?<![0-9A-Za-z.][0-9])(?:[0-9]{12,18}|[0-9]{3}(?:"
             r" [0-9]{4} [0-9]{4} (?:[0-9]{4} [0-9]{1,3}|[0-9]{1,4})| [0-9]{6} [0-9]{4,5}|"
             r"-[0-9]{4}-[0-9]{4}-(?:[0-9]{4}-[0-9]{1,3}|[0-9]{1,4})|-[0-9]{6}-[0-9]{4,5}))"
             r"(?![0-9A-Za-z]|\.[0-9])",
             "payment card numbers that pass the Luhn check and have a card issuer prefix", gated=True),
    Detector("url_password", ":", r"//[^\s/:@?#'\"<>\x00]{0,256}:(?P<v>[^\s/@?#'\"<>\x00]{1,256})@",
             "the password of `scheme://user:password@host` and `redis://:password@host` (user and host are kept)"),
    # before credential_pair: at a `:` the first detector that matches is the only one tried
    Detector("telegram_bot_token", ":", r"(?<=[0-9]{5}:)(?P<v>A[A-Za-z0-9_\-]{34})(?![A-Za-z0-9_\-])",
             "Telegram bot tokens (`123456789:AA...`; the bot id before the colon is kept)"),
    Detector("credential_pair", ":=",
             rf"(?<=[A-Za-z0-9_\-\"' ][:=])[ \t]{{0,3}}{_OPEN_QUOTE}(?!//)"
             rf"(?P<v>{_PEM}|(?:(?i:bearer|basic|token)[ \t]+)?{_PAIR_VALUE})",
             "`password=...`, `token: ...`, `\"api_key\": \"...\"` pairs in query strings, log lines and JSON, also "
             "inside a JSON string inside JSON (the key before the separator must pass the key-name rule; a PEM "
             "block after it goes whole), and `{\"name\": \"DB_PASSWORD\", \"value\": \"...\"}` name/value pairs"),
    # the name/value form of credential_pair: the separator is the `,` after the name's string; the
    # value is the quoted string after `"value":` (JSON) or `'value':` (a Python dict's repr). At the
    # top level a string holds any escape (`\"` is a quote inside it); inside a JSON string (the quotes
    # escaped) it ends at the first escaped quote, however often escaped.
    *(Detector("credential_pair", ",",
               rf"(?<=[\"'],)[ \t]{{0,3}}{q}(?:value|Value|VALUE){q}[ \t]{{0,3}}:[ \t]{{0,3}}{q}"
               rf"(?P<v>(?:[^{q}\\\x00]|\\[^\x00])+)",
               "credential_pair's name/value form: the quoted string after `\"value\":` when the string before "
               "it names a credential") for q in ('\"', "'")),
    *(Detector("credential_pair", ",",
               rf"(?<=[\"'],)[ \t]{{0,3}}\\+{q}(?:value|Value|VALUE)\\+{q}[ \t]{{0,3}}:[ \t]{{0,3}}\\+{q}"
               rf"(?P<v>(?!\\*{q})[^{q}\\\x00]*(?:\\(?!\\*{q})[^{q}\\\x00]*)*)",
               "credential_pair's name/value form inside a JSON string") for q in ('\"', "'")),
    Detector("private_key", "-",
             r"----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----[^\x00]*?"
             r"(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----|(?=\x00)|\Z)",
             "PEM private key blocks (RSA, EC, OPENSSH, PGP, ...), to the END line or the end of a truncated value",
             gated=True),
    Detector("bearer", "Bb",
             r"(?<![A-Za-z0-9_][Bb])(?:(?<=b)earer|(?<=B)(?:earer|EARER))[ \t]+"
             r"(?P<v>[A-Za-z0-9\-_~+/]+(?:\.[A-Za-z0-9\-_~+/]+)*=*)",
             "HTTP Bearer credentials (the scheme word is kept)"),
    Detector("basic", "Bb",
             r"(?<![A-Za-z0-9_][Bb])(?:(?<=b)asic|(?<=B)(?:asic|ASIC))[ \t]+"
             r"(?P<v>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])",
             "HTTP Basic credentials (base64 of user:password; the scheme word is kept)"),
    Detector("github_token", "_",
             r"(?:(?<=gh[pousr]_)(?<![A-Za-z0-9_]gh[pousr]_)[A-Za-z0-9]{30,255}"
             r"|(?<=github_pat_)(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])",
             "GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)", -1),
    Detector("anthropic_key", "k", rf"(?<=sk)(?<![{_T}]sk)-ant-[{_T}]{{20,}}", "Anthropic API keys (sk-ant-...)", 1),
    Detector("openai_key", "k", rf"(?<=sk)(?<![{_T}]sk)-(?:proj-|svcacct-|admin-|None-)?[{_T}]{{20,}}",
             "OpenAI API keys (sk-..., sk-proj-...)", 1),
    Detector("stripe_key", "_", r"(?<=[sr]k_)(?<![A-Za-z0-9_][sr]k_)(?:live|test)_[A-Za-z0-9]{16,}",
             "Stripe secret and restricted keys (sk_live_, rk_live_, and their _test_ forms)", 2),
    Detector("huggingface_token", "_", r"(?<=hf_)(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{30,64}(?![A-Za-z0-9_])",
             "Hugging Face access tokens (hf_...)", 2),
    Detector("aws_secret_key", "A",
             r"(?<![A-Za-z0-9]A)(?:KIA|SIA)[A-Z0-9]{16}[^A-Za-z0-9\n\x00]{1,20}[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
             "AWS secret access keys written next to their key id (`AKIA... wJalr...`) or after their name and "
             "blanks (`aws_secret_access_key wJalr...`); after `=` or `:` the key-name rule and credential_pair "
             "mask them"),
    Detector("aws_secret_key", "yY",
             "(?:" + "|".join(f"(?<={n})" for n in AWS_SECRET_NAMES) + ")"
             r"[ \t]+[\"']?(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
             "aws_secret_key's key-word form: `aws_secret_access_key wJalr...`"),
    Detector("aws_access_key_id", "A", r"(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
             "AWS access key ids (AKIA..., ASIA...)"),
    Detector("google_api_key", "A", rf"(?<![{_T}]A)Iza[{_T}]{{35}}(?![{_T}])", "Google API keys (AIza...)"),
    Detector("jwt", "J", rf"(?<=eyJ)(?<![{_T}]eyJ)[{_T}]{{8,}}\.[{_T}]{{2,}}\.[{_T}]*", "JSON Web Tokens", 2),
    Detector("slack_token", "x", r"(?<![A-Za-z0-9\-]x)(?:ox[abposre]|app)-[A-Za-z0-9\-]{10,}",
             "Slack tokens (xoxb-, xoxp-, xapp-, ...)"),
    Detector("slack_webhook", "k",
             r"(?<=hooks\.slack)\.com/(?:services|workflows|triggers)/"
             r"(?P<v>T[A-Z0-9]{6,16}(?:/[A-Za-z0-9]{6,40}){1,2}/[A-Za-z0-9]{16,64})(?![A-Za-z0-9])",
             "Slack webhook URLs (`https://hooks.slack.com/services/T.../B.../...`; the host is kept)"),
    Detector("sendgrid_key", "G",
             r"(?<=SG)(?<![A-Za-z0-9_\-.]SG)\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])",
             "SendGrid API keys (SG.<22>.<43>)", 1),
)
#: A detector may be written as several entries of one name (one per form, e.g. credential_pair's
#: `key=value` and name/value forms): they are counted, switched and gated as one.
DETECTOR_NAMES: tuple[str, ...] = tuple(dict.fromkeys(d.name for d in DETECTORS))

#: Values that follow a credential word in logs without being credentials.
_PAIR_STOPWORDS = frozenset({
    "null", "none", "nil", "true", "false", "undefined", "required", "invalid", "expired", "missing",
    "empty", "redacted", "masked", "hidden", "n/a", "na", "set", "unset", "yes", "no", "ok", "present",
})

_KEY_CHARS_STR = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"


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
    """A credential-looking token: has a digit, or mixes cases, or is long; ordinary words are not."""
    if len(token) < min_len:
        return False
    if any(c.isdigit() for c in token):
        return True
    if any(c.isupper() for c in token) and any(c.islower() for c in token):
        return True
    return len(token) >= long_len


def _aws_secret_ok(token: str) -> bool:
    """Real secret keys are random base64: all three character classes, or a / or +."""
    if "/" in token or "+" in token:
        return True
    return any(c.isupper() for c in token) and any(c.islower() for c in token) and any(c.isdigit() for c in token)


#: Where, relative to an anchor occurrence's first byte, a match of its detector can start (see
#: `Masker.mask_at`): an offset; FULL when it cannot be told cheaply (the string is scanned whole);
#: PAIR for a key term (a `key=value` match starts at the separator after the key holding it).
FULL = "full"
PAIR = "pair"


# --------------------------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------------------------

class Replacer:
    """Turns a secret into its mask: a fixed replacement, or a short keyed hash of it.

    Hash mode writes `[REDACTED:<hex>]` (the replacement with the hash added before a
    closing bracket, or after a colon): HMAC-SHA256 under `hash_key`, truncated to
    `hash_length` hex digits, so equal secrets stay correlatable without being
    revealed or brute-forced offline without the key.
    """

    __slots__ = ("replacement", "_key", "_length", "_prefix", "_suffix", "_mask_re")

    def __init__(self, replacement: str = "[REDACTED]", hash_key: bytes | None = None, hash_length: int = 12) -> None:
        self.replacement = replacement
        self._key = hash_key
        self._length = hash_length
        if replacement.endswith("]") and len(replacement) > 1:
            self._prefix, self._suffix = replacement[:-1] + ":", "]"
        else:
            self._prefix, self._suffix = replacement + ":", ""
        if hash_key is None:
            self._mask_re = None
        else:
            self._mask_re = re.compile(re.escape(self._prefix) + f"[0-9a-f]{{{hash_length:d}}}"
                                       + re.escape(self._suffix))

    def __call__(self, secret: str) -> str:
        if self._key is None:
            return self.replacement
        digest = hmac.new(self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"{self._prefix}{digest[:self._length]}{self._suffix}"

    def is_mask(self, value: str) -> bool:
        """True for a value that already is one of this replacer's masks (never mask twice)."""
        if value == self.replacement:
            return True
        return self._mask_re is not None and self._mask_re.fullmatch(value) is not None


def build_detector_regex(enabled: Iterable[str], keys: KeyMatcher) -> re.Pattern[str] | None:
    """One regex for all enabled detectors, shaped for CPython's `re`.

    The top level is an alternation in which every branch starts with one literal
    character (a detector's possible first character) followed by the detectors
    that can start there. `re` then (a) skips every character that starts no
    detector in a tight C loop, and (b) at a candidate character tries only the
    branch of that character. Groups are named `<detector>__<n>` (and
    `<detector>__<n>__v` for the secret part), since a detector appears once per
    first character. No detector matches a NUL, so many strings can be scanned at
    once joined by NULs without a match spanning two of them.
    """
    by_first: dict[str, list[tuple[str, str]]] = {}
    for d in DETECTORS:
        if d.name not in enabled:
            continue
        if d.name == "credential_pair" and not keys._terms:
            continue
        for c in d.first:
            by_first.setdefault(c, []).append((d.name, d.rest))
    if not by_first:
        return None
    branches = []
    k = 0
    for c, dets in by_first.items():
        alts = []
        for name, rest in dets:
            k += 1
            alts.append(f"(?P<{name}__{k}>" + rest.replace("(?P<v>", f"(?P<{name}__{k}__v>") + ")")
        branches.append(f"{re.escape(c)}(?:{'|'.join(alts)})")
    return re.compile("|".join(branches))


_BACK = {d.name: d.back for d in DETECTORS}
GATED: frozenset[str] = frozenset(d.name for d in DETECTORS if d.gated)
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_KEY_CHARS = frozenset(_KEY_CHARS_STR)
_SEP = "\x00"
#: No stopword is longer than this, and lower-casing never shortens a string: a longer value
#: is not a stopword without being lower-cased and looked up.
_STOPWORD_MAX = max(map(len, _PAIR_STOPWORDS))


#: From a key term's occurrence to the separator of a `key=value` pair whose key holds it:
#: the rest of the key, an optional closing quote (escaped any number of times: JSON inside JSON)
#: and blanks (as `Masker._pair_ok` reads back). The separator is `:` or `=`, or the `,` between the
#: name and the value of a name/value pair.
PAIR_TAIL = re.compile(r"[A-Za-z0-9_.\-]*(?:\\*[\"'])?[ \t]*(?=[:=,])")
#: `PAIR_TAIL` from the start of the key, with groups for the whole tail (`tail`: it ends at the
#: separator) and the key (`key`), to be followed by a detector regex (see `_compile`). The
#: quantifiers are possessive, which changes nothing: a shorter run of key characters, no quote
#: or fewer blanks would leave a key character, quote or blank before the separator.
_PAIR_HEAD = r"(?P<tail>(?P<key>[A-Za-z0-9_.\-]*+)(?:\\*+[\"'])?+[ \t]*+)(?=[:=,])"
#: A class of everything but what `\s` matches in ASCII text, left open (see `_for_ascii`).
_ASCII_NOT_SPACE = "[^" + "".join(f"\\x{ord(c):02x}" for c in map(chr, range(128)) if c.isspace())
_NEG_SPACE_CLASS = re.compile(r"(?<!\\)\[\^\\s")  # `[^\s` opening a class (not `\[^\s`)


def _for_ascii(pattern: str) -> str:
    r"""`pattern` for ASCII text only: `[^\s...]` spelled out as `[^\x09...\x20...]`.

    The same matches on ASCII text, found faster: `re` tests `\s` on every
    character as a Unicode category, a spelled-out class as one bitmap lookup,
    and the secret values that the detectors run over are long. Left as it is if
    `\s` occurs anywhere else.
    """
    out = _NEG_SPACE_CLASS.sub(lambda _: _ASCII_NOT_SPACE, pattern)
    return pattern if "\\s" in out else out


#: A validator: is a match a secret after all? Called as check(s, m, p, start, end): `p` is where
#: the detector's match starts in `s` (not always `m.start()`, see `_compile`), the match ends at
#: `m.end()`, and s[start:end] is the secret part to mask.
_Check = Callable[[str, re.Match[str], int, int, int], bool]
#: What the masking loops need to know about a match, by the number of the detector group that
#: matched (`m.lastindex`: the detector's group encloses its secret-part group, so it is always the
#: last group to close): (detector name, number of the secret-part group or 0 when the secret is
#: the whole match, `Detector.back`, validator or None). Precomputed per compiled regex so a match
#: costs one tuple index instead of a group-name lookup, a dict of `back`s and a dict of validators.
_Rule = tuple[str, int, int, "_Check | None"]
_Rules = tuple["_Rule | None", ...]
#: The detectors whose match starts at a `key=value` separator (or a name/value pair's `,`).
_AT_SEPARATOR = frozenset(d.name for d in DETECTORS if set(d.first) & {":", "=", ","})
_NEVER = re.compile(r"(?!)")


class _Compiled(NamedTuple):
    """A detector regex for one set of detectors, with what `Masker` needs to run it (see `_compile`)."""

    rx: re.Pattern[str]
    rules: _Rules
    #: `rx.match` (bound once: the wire path calls it for nearly every string)
    match: Callable[[str, int], re.Match[str] | None]
    #: `match` of `_PAIR_HEAD` + the detectors that start at a separator, and its rules
    pair_match: Callable[[str, int], re.Match[str] | None]
    pair_rules: _Rules


def _rules(rx: re.Pattern[str], validators: Mapping[str, _Check]) -> _Rules:
    """The `_Rule` of every detector group of `rx` (named as `build_detector_regex` names them),
    by group number; other groups (`_PAIR_HEAD`'s, the secret parts) get None."""
    index = rx.groupindex
    rules: list[_Rule | None] = [None] * (rx.groups + 1)
    for g, i in index.items():
        name, sep, _ = g.rpartition("__")
        if sep and name in _BACK:  # `<detector>__<n>`, not `<detector>__<n>__v`
            rules[i] = (name, index.get(g + "__v", 0), _BACK[name], validators.get(name))
    return tuple(rules)


# Validators (see `_Check`).

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


_VALIDATORS: dict[str, _Check] = {
    "bearer": _bearer_ok,
    "basic": _basic_ok,
    "openai_key": _openai_ok,
    "card_number": _card_ok,
    "aws_secret_key": _aws_secret_key_ok,
    "huggingface_token": _huggingface_ok,
}


class Masker:
    """Masks secrets inside strings and whole values under sensitive keys.

    `counts` accumulates masked values per detector (and `key` for key-name
    masks) until the caller collects them with `take_counts()`.

    Detectors whose first character is frequent in ordinary telemetry (card
    numbers start on any digit, PEM blocks on `-`) are *gated*: `mask_many` takes
    the set of gated detectors whose bytes anchor occurs in the request and uses a
    regex compiled without the others (at most 2**len(GATED) variants, cached).
    """

    def __init__(self, *, keys: KeyMatcher, replacer: Replacer, enabled: Iterable[str] = DETECTOR_NAMES,
                 blocked_values: Iterable[str] = ()) -> None:
        self.keys = keys
        self.replacer = replacer
        self.enabled = frozenset(enabled)
        self._user = tuple(re.compile(p) for p in blocked_values)
        self.counts: dict[str, int] = {}
        self._validators: Mapping[str, _Check] = {**_VALIDATORS, "credential_pair": self._pair_ok}
        #: credential_pair's validator after the pair regex (see `_compile`), bound once so that
        #: `mask_anchored`, which has it written out, can tell it by identity
        self._pair_key_check = self._pair_key_ok
        #: the mask in replace mode, where every mask is the same text (None in hash mode)
        self._fixed = replacer.replacement if replacer._key is None else None
        self._all = self._compile(self.enabled)
        self._rx = None if self._all is None else self._all.rx
        self._variants: dict[frozenset[str], _Compiled | None] = {self.enabled & GATED: self._all}
        self._next = 0  # see mask_anchored

    def _compile(self, enabled: frozenset[str]) -> _Compiled | None:
        """The regex of the detectors `enabled`, with its rules, and the regex `mask_anchored`
        runs from a key holding a key term.

        The latter is `_PAIR_HEAD` followed by the regex of the enabled detectors that can
        start at a separator, so one call finds the separator of a `key=value` pair and
        matches the detectors there, as `rx.match` at the separator would: at a `:` or `=`
        the only alternatives `rx` can take are those detectors, in the same order. (Its
        groups are numbered differently and `m.start()` is at the key, hence its own rules;
        its credential_pair validator reads the key from the `key` group instead of back
        from the separator.) It only ever runs on ASCII strings, hence `_for_ascii`.
        """
        rx = build_detector_regex(enabled, self.keys)
        if rx is None:
            return None
        sep_rx = build_detector_regex(enabled & _AT_SEPARATOR, self.keys)
        pair_rules: _Rules = ()
        if sep_rx is None:
            pair_match = _NEVER.match
        else:
            pair = re.compile(_for_ascii(f"{_PAIR_HEAD}(?:{sep_rx.pattern})"))
            assert pair.groupindex["tail"] == 1 and pair.groupindex["key"] == 2  # see mask_anchored
            pair_match = pair.match
            pair_rules = _rules(pair, {**self._validators, "credential_pair": self._pair_key_check})
            assert all(r is None or r[1] for r in pair_rules)  # each has a secret part (see mask_anchored)
        return _Compiled(rx, _rules(rx, self._validators), rx.match, pair_match, pair_rules)

    def _regex(self, gated: frozenset[str]) -> _Compiled | None:
        """The detector regexes (with their rules) for a request whose gated anchors are `gated`.

        Looked up first under `gated` itself: the wire path asks once per string with the
        same set, and intersecting it with `enabled` first would build a new frozenset
        (and hash it) every time. Only subsets of GATED are kept under their own key, so
        the cache stays bounded whatever callers pass.
        """
        variants = self._variants
        if gated in variants:
            return variants[gated]
        key = gated & self.enabled
        if key not in variants:
            variants[key] = self._compile((self.enabled - GATED) | key)
        c = variants[key]
        if gated <= GATED:
            variants[gated] = c
        return c

    # -- strings -------------------------------------------------------------------------------

    def mask_text(self, s: str, gated: frozenset[str] | None = None) -> str:
        """`s` with every detected secret replaced (the same object when nothing matched).

        `gated`: the gated detectors to compile in (see `mask_many`); all of them by default.
        """
        c = self._all if gated is None else self._regex(gated)
        if c is not None:
            m = c.rx.search(s)
            if m is not None:
                s = self._apply(c, s, m, None)
        if self._user:
            s = self._apply_user(s)
        return s

    def mask_many(self, texts: list[str], gated: frozenset[str] = GATED) -> dict[int, str]:
        """Mask a batch of strings; returns {index: new text} for those that changed.

        The strings are joined with NULs and scanned in one call, which saves the
        per-call cost of `re` on hundreds of short attribute values.
        """
        out: dict[int, str] = {}
        if not texts:
            return out
        c = self._regex(gated)
        if c is not None:
            joined = _SEP.join(texts)
            if joined.count(_SEP) != len(texts) - 1:  # a NUL inside a value: one by one
                for i, t in enumerate(texts):
                    new = self.mask_text(t)
                    if new is not t:
                        out[i] = new
                return out
            m = c.rx.search(joined)
            if m is not None:
                starts: list[int] = []
                masked = self._apply(c, joined, m, starts)
                if starts:
                    pieces = masked.split(_SEP)
                    bounds = list(itertools.accumulate(len(t) + 1 for t in texts))
                    for pos in starts:
                        i = bisect.bisect_right(bounds, pos)
                        out[i] = pieces[i]
        if self._user:
            for i, t in enumerate(texts):
                cur = out.get(i, t)
                new = self._apply_user(cur)
                if new is not cur:
                    out[i] = new
        return out

    def mask_at(self, s: str, starts: list[int], gated: frozenset[str] = GATED) -> str:
        """`mask_text(s)`, with the detectors tried only where a match may start.

        Exact when `starts` holds every position where `mask_text` would accept a
        match (the wire path derives them from the anchor occurrences in `s`, see
        `_ANCHORS`): `mask_text` visits positions left to right and only an
        accepted match changes anything (text, counts, where the next search
        starts); at a position it rejects, or where nothing matches, it just
        moves on. Visiting a subset of positions that keeps every accepted one,
        in the same order and with the same test at each, accepts the same
        matches. (A position where some detector is rejected may hide another
        detector that would match there; `mask_text` never tries that one
        either, since a match at a position is the first alternative that
        matches there, in both loops.)
        """
        c = self._regex(gated)
        if c is not None and starts:
            s = self._apply_at(c, s, sorted(set(starts)) if len(starts) > 1 else starts)
        if self._user:
            s = self._apply_user(s)
        return s

    def mask_anchored(self, s: str, base: int, scan: tuple[list[int], list[int], frozenset[str]],
                      info: Sequence[object]) -> str:
        """`mask_text(s, gated)` for a string of a request, from the request's anchor occurrences.

        `s` was decoded from the bytes at `base` of a request whose scan found
        `scan = (offsets, ids, gated)`: anchors (see `anchors`) at the sorted byte
        offsets `offsets`, `ids[i]` being the index of the anchor at offsets[i], whose
        `info` is info[ids[i]]: a position relative to the occurrence where its
        detector's match starts, PAIR or FULL. Detectors are tried only at those
        positions (`mask_at`); over the whole of `s` when one of its anchors is FULL,
        and when `s` is not ASCII (byte offsets are then not character offsets).

        This is the wire path's loop, run once for every string that holds an anchor,
        so it is `mask_at` and `_apply_at` in one pass, without building, sorting or
        deduplicating a list of positions: the anchors come in offset order, so the
        positions they give usually do too, and each is handled as it comes. Only
        positions where something may happen need to be in order (one past the end
        matches nothing anywhere; one that is skipped, being inside the previous mask,
        stays skipped wherever it sorts after the last position that was tried; a
        repeated one is, at its second visit, either past `pos` or a position that
        matched nothing), so when a later anchor gives an earlier position than the
        last one tried, or one before the string (rare), the string is done again by
        `_mask_anchored_sorted`, which sorts. Counts are added at the end for that
        reason. A key term (PAIR) is matched from the start of its key with the
        pair regex of `_compile`, in one call instead of `PAIR_TAIL` and `rx`. The
        steps of `_decide`, and credential_pair's check of the key, are written out
        inline. The first anchor of `s` is usually the one after the previous
        string's last one (the walker goes through the request in order), so that
        index is kept as a hint, and checked, before bisecting.
        """
        offsets, ids, gated = scan
        if not s.isascii():
            return self.mask_text(s, gated)
        c = self._variants.get(gated, False)
        if c is False:
            c = self._regex(gated)
        if c is None:
            return self._apply_user(s) if self._user else s
        _, rules, match, pair_match, pair_rules = c  # type: ignore[misc]
        n = len(s)
        j = self._next
        if not (j < len(offsets) and offsets[j] >= base and (j == 0 or offsets[j - 1] < base)):
            j = bisect.bisect_left(offsets, base)
        out: list[str] | None = None  # the pieces of the new text, from the second mask on
        first: str | None = None  # the detector of the first mask (most strings have one) ...
        more: list[str] | None = None  # ... and of the others
        last = pos = prev = 0
        for j in range(j, len(offsets)):  # noqa: B020 (j: the first anchor of `s`, then each in turn)
            q = offsets[j] - base
            if q >= n:
                break
            a = info[ids[j]]
            if a.__class__ is int:
                p = q + a
                if p < prev:  # also a position before the string (prev starts at 0): rare
                    return self._mask_anchored_sorted(s, base, scan, info)
                if p < pos:
                    continue
                prev = p
                m = match(s, p)  # None past the end of `s`
                if m is None:
                    continue
                name, vgroup, back, check = rules[m.lastindex]  # type: ignore[index, misc]
                if vgroup:
                    start, end = m.span(vgroup)
                else:
                    end = m.end()
                    if back >= 0:
                        start = p - back
                        if start < last:
                            start = last
                    else:
                        start = p
                        while start > last and s[start - 1] in _TOKEN_CHARS:
                            start -= 1
                if check is not None and not check(s, m, p, start, end):
                    pos = p + 1
                    continue
            elif a == PAIR:
                if q and s[q - 1] in _KEY_CHARS:
                    q = len(s[:q].rstrip(_KEY_CHARS_STR))  # the start of the key holding the term
                m = pair_match(s, q)
                if m is None:
                    continue
                p = m.end(1)  # the separator
                if p < prev:
                    return self._mask_anchored_sorted(s, base, scan, info)
                if p < pos:
                    continue
                prev = p
                name, vgroup, back, check = pair_rules[m.lastindex]  # type: ignore[index, misc]
                start, end = m.span(vgroup)  # every detector starting at a separator has a secret part
                if check is self._pair_key_check:  # `_pair_key_ok`, written out
                    key = m.group(2)
                    k = self.keys._cache.get(key)  # `KeyMatcher.classify` once the key is cached
                    if k is None:
                        k = self.keys.classify(key) if key else NOT_SENSITIVE
                    if k != SENSITIVE or (end - start <= _STOPWORD_MAX and s[start:end].lower() in _PAIR_STOPWORDS):
                        pos = p + 1
                        continue
                elif check is not None and not check(s, m, p, start, end):
                    pos = p + 1
                    continue
            else:  # FULL
                return self.mask_text(s, gated)
            fixed = self._fixed
            if fixed is not None:
                # is_mask(s[start:end]) in replace mode, without the slice
                if end - start == len(fixed) and s.startswith(fixed, start):
                    pos = p + 1
                    continue
                mask = fixed
            else:
                secret = s[start:end]
                if self.replacer.is_mask(secret):
                    pos = p + 1
                    continue
                mask = self.replacer(secret)
            if first is None:
                first = name
                first_start, first_mask = start, mask
            else:
                if out is None:
                    out = [s[:first_start], first_mask]
                    more = []
                out.append(s[last:start])
                out.append(mask)
                more.append(name)  # type: ignore[union-attr]
            last = end
            e = m.end()
            pos = e if e > p else p + 1
        self._next = j
        if first is not None:
            counts = self.counts
            counts[first] = counts.get(first, 0) + 1
            if out is None:
                s = "".join((s[:first_start], first_mask, s[last:]))
            else:
                for name in more:  # type: ignore[union-attr]
                    counts[name] = counts.get(name, 0) + 1
                out.append(s[last:])
                s = "".join(out)
        if self._user:
            s = self._apply_user(s)
        return s

    def _mask_anchored_sorted(self, s: str, base: int, scan: tuple[list[int], list[int], frozenset[str]],
                              info: Sequence[object]) -> str:
        """`mask_anchored` for an ASCII string whose positions are not in order: all of them, sorted."""
        offsets, ids, gated = scan
        starts: list[int] = []
        n = len(s)
        for j in range(bisect.bisect_left(offsets, base), len(offsets)):
            q = offsets[j] - base
            if q >= n:
                break
            a = info[ids[j]]
            if a.__class__ is int:
                starts.append(q + a)
            elif a == PAIR:
                m = PAIR_TAIL.match(s, q)
                if m is not None:
                    starts.append(m.end())
            else:  # FULL
                return self.mask_text(s, gated)
        return self.mask_at(s, starts, gated)

    def _apply(self, c: _Compiled, s: str, m: re.Match[str] | None, starts: list[int] | None) -> str:
        rx, rules = c.rx, c.rules
        out: list[str] = []
        last = 0
        decide = self._decide
        while m is not None:
            span = decide(rules, s, m, m.start(), last)
            if span is None:
                # Not a secret after all: look again one character further, so a real
                # secret inside the rejected match is still found.
                m = rx.search(s, m.start() + 1)
                continue
            start, end = span
            out.append(s[last:start])
            out.append(self.replacer(s[start:end]))
            if starts is not None:
                starts.append(start)
            last = end
            m = rx.search(s, max(m.end(), m.start() + 1))
        if not out:
            return s
        out.append(s[last:])
        return "".join(out)

    def _apply_at(self, c: _Compiled, s: str, at: list[int]) -> str:
        """`_apply` trying only the sorted positions `at` (see `mask_at`): the same loop, in which
        `rx.search(s, pos)` becomes the first `rx.match` at a position of `at` that is >= pos."""
        rx, rules = c.rx, c.rules
        out: list[str] = []
        last = 0
        pos = 0
        n = len(s)
        decide = self._decide
        match = rx.match
        for p in at:
            if p < pos:
                continue
            if p >= n:
                break
            m = match(s, p)
            if m is None:
                continue
            span = decide(rules, s, m, p, last)
            if span is None:
                pos = p + 1
                continue
            start, end = span
            out.append(s[last:start])
            out.append(self.replacer(s[start:end]))
            last = end
            pos = max(m.end(), p + 1)
        if not out:
            return s
        out.append(s[last:])
        return "".join(out)

    def _decide(self, rules: _Rules, s: str, m: re.Match[str], p: int, last: int) -> tuple[int, int] | None:
        """The span of `s` to mask for match `m` starting at `p` (counted under its detector), or
        None when the match is not a secret after all (a validator says no, or it already is a
        mask). `last`: where the previous mask ended (a secret never reaches back over it).
        `mask_anchored` has the same steps inline."""
        name, vgroup, back, check = rules[m.lastindex]  # type: ignore[index, misc]
        if vgroup:
            start, end = m.span(vgroup)
        else:
            start = p
            if back < 0:
                while start > last and s[start - 1] in _TOKEN_CHARS:
                    start -= 1
            else:
                start = max(start - back, last)
            end = m.end()
        if (check is not None and not check(s, m, p, start, end)) or self.replacer.is_mask(s[start:end]):
            return None
        self.counts[name] = self.counts.get(name, 0) + 1
        return start, end

    def _apply_user(self, s: str) -> str:
        for rx in self._user:
            if rx.search(s) is None:
                continue
            group = "secret" if "secret" in rx.groupindex else 0
            out: list[str] = []
            last = 0
            for m in rx.finditer(s):
                start, end = m.span(group)
                if start < 0 or start == end or start < last:
                    continue
                secret = s[start:end]
                if self.replacer.is_mask(secret):
                    continue
                out.append(s[last:start])
                out.append(self.replacer(secret))
                last = end
                self.counts["blocked_values"] = self.counts.get("blocked_values", 0) + 1
            if out:
                out.append(s[last:])
                s = "".join(out)
        return s

    def _pair_ok(self, s: str, m: re.Match[str], p: int, start: int, end: int) -> bool:
        # The match starts at the separator; the key is the run of key characters before
        # it (after an optional closing quote and spaces) and must pass the key-name rule.
        head = s[:p].rstrip(" \t")
        if head.endswith(("\"", "'")):
            head = head[:-1].rstrip("\\")  # `\"`: a key inside a JSON string
        key = head[len(head.rstrip(_KEY_CHARS_STR)):]
        if not key or self.keys.classify(key) != SENSITIVE:
            return False
        return s[start:end].lower() not in _PAIR_STOPWORDS

    def _pair_key_ok(self, s: str, m: re.Match[str], p: int, start: int, end: int) -> bool:
        # `_pair_ok` for a match of the pair regex (see `_compile`; `mask_anchored` has it written
        # out): the key is its `key` group (the same run of key characters, read forwards from
        # its start), and the cached classification comes first.
        key = m.group(2)
        if not key:
            return False
        keys = self.keys
        c = keys._cache.get(key)  # `KeyMatcher.classify` without the call once the key is cached
        if c is None:
            c = keys.classify(key)
        if c != SENSITIVE:
            return False
        return end - start > _STOPWORD_MAX or s[start:end].lower() not in _PAIR_STOPWORDS

    # -- whole values ----------------------------------------------------------------------------

    def mask_value(self, value: str) -> str:
        """The mask for a whole value under a sensitive key (unchanged if already a mask)."""
        if self.replacer.is_mask(value):
            return value
        self.counts["key"] = self.counts.get("key", 0) + 1
        return self.replacer(value)

    def take_counts(self) -> dict[str, int]:
        c = self.counts
        self.counts = {}
        return c
