"""Running secret_mask's rules on strings: the `Masker`.

The detectors (`processors.privacy.secret_rules.DETECTORS`) are compiled into one regex whose
top level is an alternation with one branch per possible first character, so CPython's `re`
skips every character that starts no detector in a tight C loop and, at a candidate character,
tries only that character's detectors (`build_detector_regex`). Three ways to use it, with the
same result:

* `mask_text(s)`: search the whole string (the definition; used for strings the anchors cannot
  narrow down: not ASCII, or holding a FULL anchor, and for user `blocked_values`).
* `mask_at(s, starts)`: try the detectors only at the positions `starts`, which is exact when they
  hold every position where `mask_text` would accept a match. `positions` derives them from the
  anchor occurrences the scan found in the string (each anchor says where its detector's match
  starts relative to it).
* The C wire walker runs `mask_at` itself (processors/privacy/_wirewalk.c, `mask_string`): the
  same positions, the same `re` match at each, the same validators, from `engine()`. One match
  it makes without `re`: credential_pair's `key=value` / `key: value` form (`pair_groups`), the
  most frequent match in agent telemetry, by `pair_match`, a transcription of that one pattern
  that hands every case it does not cover back to the regex and is compared with it by
  tests/unit/processors/privacy/test_pair_match.py. The regex stays the definition.

Masks are recognisable: a value that already is a mask is never masked again, which makes
masking idempotent in both replace and hash mode. `counts` accumulates masked values per
detector (and `key` for whole values under a sensitive key) until `take_counts()`.
"""
from __future__ import annotations

import bisect
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from processors.privacy.secret_keys import SENSITIVE, KeyMatcher
from processors.privacy.secret_rules import (
    DETECTOR_NAMES,
    DETECTORS,
    FULL,
    GATED,
    PAIR,
    PAIR_KEY,
    PAIR_STOPWORDS,
    Validator,
)

#: The characters of a key (`_pair_ok` reads the key back from a separator) and of a token (a secret
#: whose `replace` is "token" reaches back over them).
KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_KEY_SET = frozenset(KEY_CHARS)
#: From a key term's occurrence to the separator of a `key=value` pair whose key holds it: the rest
#: of the key, an optional closing quote (escaped any number of times: JSON inside JSON) and blanks
#: (as `_pair_ok` reads back). The separator is `:` or `=`, or the `,` between the name and the value
#: of a name/value pair. (`_wirewalk.c` has it as `pair_separator`.)
PAIR_TAIL = re.compile(r"[A-Za-z0-9_.\-]*(?:\\*[\"'])?[ \t]*(?=[:=,])")
#: PAIR_TAIL in two parts: the rest of the key (greedy: giving back a key character cannot help the rest
#: match, which starts with none), then what follows it up to the separator.
_KEY_RUN = re.compile(r"[A-Za-z0-9_.\-]*")
_PAIR_REST = re.compile(r"(?:\\*[\"'])?[ \t]*(?=[:=,])")
#: telegram_bot_token's own pattern: whether it matches after a colon (it is tried there before
#: credential_pair, so a pair is ruled out at a colon only where it does not match: `_no_pair_at`)
_TELEGRAM = re.compile(next(d.pattern for d in DETECTORS if d.name == "telegram_bot_token"))


class Replacer:
    """Turns a secret into its mask: a fixed replacement, or a short keyed hash of it.

    Hash mode writes `[REDACTED:<hex>]` (the replacement with the hash added before a closing
    bracket, or after a colon): HMAC-SHA256 under `hash_key`, truncated to `hash_length` hex digits,
    so equal secrets stay correlatable without being revealed or brute-forced offline without the key.
    """

    __slots__ = ("_key", "_length", "_mask_re", "_prefix", "_suffix", "fixed", "replacement")

    def __init__(self, replacement: str = "[REDACTED]", hash_key: bytes | None = None, hash_length: int = 12) -> None:
        self.replacement = replacement
        #: the mask when every mask is the same text (replace mode), else None
        self.fixed = replacement if hash_key is None else None
        self._key = hash_key
        self._length = hash_length
        if replacement.endswith("]") and len(replacement) > 1:
            self._prefix, self._suffix = replacement[:-1] + ":", "]"
        else:
            self._prefix, self._suffix = replacement + ":", ""
        self._mask_re = None if hash_key is None else re.compile(
            re.escape(self._prefix) + f"[0-9a-f]{{{hash_length:d}}}" + re.escape(self._suffix))

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


def _by_first(enabled: Iterable[str], keys: KeyMatcher) -> dict[str, list[tuple[str, str]]]:
    """The enabled detectors (name, pattern) by the characters they can start with, in table order."""
    by_first: dict[str, list[tuple[str, str]]] = {}
    for d in DETECTORS:
        if d.name not in enabled or (d.validator == PAIR_KEY and not keys.terms):
            continue
        for c in d.first:
            by_first.setdefault(c, []).append((d.name, d.pattern))
    return by_first


def build_detector_regex(enabled: Iterable[str], keys: KeyMatcher,
                         pairs_at_separators: bool = True) -> re.Pattern[str] | None:
    """One regex for the enabled detectors: an alternation of one branch per first character, each
    the detectors that can start there. Groups are named `<detector>__<n>` (and `<detector>__<n>__v`
    for the secret part), since a detector appears once per first character. Without
    `pairs_at_separators`, credential_pair's `key=value` / `key: value` form is left out (`Compiled.other`)."""
    by_first = _by_first(enabled, keys)
    branches = []
    k = 0
    for c, dets in by_first.items():
        alts = []
        for name, rest in dets:
            k += 1
            if not pairs_at_separators and c in _SEPARATORS and name == PAIR_DETECTOR:
                continue
            alts.append(f"(?P<{name}__{k}>" + rest.replace("(?P<v>", f"(?P<{name}__{k}__v>") + ")")
        if alts:
            branches.append(f"{re.escape(c)}(?:{'|'.join(alts)})")
    return re.compile("|".join(branches)) if branches else None


def separators_regex(enabled: Iterable[str], keys: KeyMatcher) -> re.Pattern[str] | None:
    """The separators (`:`, `=`) where credential_pair's `key=value` form is tried (`Compiled.seps`)."""
    by_first = _by_first(enabled, keys)
    seps = [c for c in _SEPARATORS if any(name == PAIR_DETECTOR for name, _ in by_first.get(c, []))]
    return re.compile(f"[{''.join(seps)}]") if seps else None


PAIR_DETECTOR = "credential_pair"
_SEPARATORS = ":="

#: The detectors that may come before credential_pair at a `:` for the C walker to match the pair
#: itself (it rules them out first: url_password needs `//` after the colon, telegram_bot_token five
#: digits before it and an `A` after it).
_BEFORE_PAIR_AT_COLON = ("url_password", "telegram_bot_token")


def pair_groups(rx: re.Pattern[str], enabled: Iterable[str], keys: KeyMatcher) -> tuple[int, int]:
    """The group numbers of credential_pair's `key:value` and `key=value` branches in `rx` (built by
    `build_detector_regex` from the same arguments), for the C walker's own match of that pattern
    (_wirewalk.c `pair_match`, which is exact for it and is checked against this regex by
    tests/unit/processors/privacy/test_pair_match.py); 0 for a branch where another detector may
    match first, so the regex must run."""
    by_first = _by_first(enabled, keys)
    out = []
    k = 0
    numbers: dict[str, int] = {}
    for c, dets in by_first.items():
        for name, _ in dets:
            k += 1
            if c in ":=" and name == "credential_pair":
                numbers[c] = rx.groupindex[f"{name}__{k}"]
    for c, before in ((":", _BEFORE_PAIR_AT_COLON), ("=", ())):
        names = [name for name, _ in by_first.get(c, [])]
        ok = bool(names) and names[-1] == "credential_pair" and all(n in before for n in names[:-1])
        out.append(numbers[c] if ok else 0)
    return out[0], out[1]


#: What masking needs to know about a match, by the number of the detector group that matched
#: (`m.lastindex`: the detector's group encloses its secret-part group, so it is always the last
#: group to close): (detector name, number of the secret-part group or 0, how far the secret reaches
#: back before the match (-1: over the token run), validator or None). None for other groups.
Rule = tuple[str, int, int, Validator | None]


class Compiled(NamedTuple):
    """The detector regex for one set of detectors, with its rules by group number."""

    rx: re.Pattern[str]
    rules: tuple[Rule | None, ...]
    #: `pair_groups(rx, ...)`: where the C walker may match credential_pair without the regex
    pair: tuple[int, int] = (0, 0)
    #: the same detectors without credential_pair at `:` and `=` (None: no other), and those separators
    #: (None: credential_pair is not tried at either): `mask_text` finds their candidates apart
    other: re.Pattern[str] | None = None
    seps: re.Pattern[str] | None = None


class Masker:
    """Masks secrets inside strings and whole values under sensitive keys (see the module docstring).

    Gated detectors (card numbers start on any digit, PEM blocks on `-`) are compiled in only for
    requests whose bytes hold their anchor: `variant(gated)` is the regex without the others (at
    most 2**len(GATED) variants, cached).
    """

    def __init__(self, *, keys: KeyMatcher, replacer: Replacer, enabled: Iterable[str] = DETECTOR_NAMES,
                 blocked_values: Iterable[str] = ()) -> None:
        self.keys = keys
        self.replacer = replacer
        self.enabled = frozenset(enabled)
        self.user = tuple(re.compile(p) for p in blocked_values)
        self.counts: dict[str, int] = {}
        #: credential_pair's validator, bound once: the C walker tells it by identity and runs its own
        #: copy of it (`pair_key_ok`)
        self.pair_check: Validator = self._pair_ok
        validators = {d.name: d.validator for d in DETECTORS if d.validator is not None}
        self._validators = {name: self.pair_check if isinstance(v, str) else v for name, v in validators.items()}
        self._back = {d.name: (-1 if d.replace == "token" else d.replace if isinstance(d.replace, int) else 0)
                      for d in DETECTORS}
        self._variants: dict[frozenset[str], Compiled | None] = {}
        self._telegram = _TELEGRAM if "telegram_bot_token" in self.enabled else None

    def variant(self, gated: frozenset[str] = GATED) -> Compiled | None:
        """The detector regex for a request whose gate anchors are `gated` (None: no detector)."""
        c = self._variants.get(gated, False)
        if c is False:
            key = gated & self.enabled & GATED
            if key not in self._variants:
                enabled = (self.enabled - GATED) | key
                rx = build_detector_regex(enabled, self.keys)
                self._variants[key] = None if rx is None else Compiled(
                    rx, self._rules(rx), pair_groups(rx, enabled, self.keys),
                    build_detector_regex(enabled, self.keys, pairs_at_separators=False),
                    separators_regex(enabled, self.keys))
            c = self._variants[key]
            if gated <= GATED:  # only subsets of GATED are kept under their own key: bounded
                self._variants[gated] = c
        return c  # type: ignore[return-value]

    def _rules(self, rx: re.Pattern[str]) -> tuple[Rule | None, ...]:
        index = rx.groupindex
        rules: list[Rule | None] = [None] * (rx.groups + 1)
        for g, i in index.items():
            name, sep, _ = g.rpartition("__")
            if sep and name in self._back:  # `<detector>__<n>`, not `<detector>__<n>__v`
                rules[i] = (name, index.get(g + "__v", 0), self._back[name], self._validators.get(name))
        return tuple(rules)

    # -- strings -------------------------------------------------------------------------------

    def mask_text(self, s: str, gated: frozenset[str] = GATED) -> str:
        """`s` with every detected secret replaced (the same object when nothing matched).

        The definition: from the start of `s`, the leftmost match of the detector regex is masked
        when its detector's validator accepts it (and it is not a mask already), and the search goes
        on after it; a rejected match is searched again one character further, so a secret inside it
        is still found. `_search` gives that sequence of matches without running the regex at a
        separator whose key fails the key-name rule, where it could only be rejected: there each
        match would run to the end of its value, and a string of many such pairs
        (`tokenizer=tokenizer=...`) would be matched again and again to its end, quadratic in it.
        """
        c = self.variant(gated)
        if c is not None:
            s = self._search(c, s)
        return self.apply_user(s) if self.user else s

    def mask_at(self, s: str, starts: Sequence[int], gated: frozenset[str] = GATED) -> str:
        """`mask_text(s)` trying the detectors only at the sorted positions `starts`.

        Exact when `starts` holds every position where `mask_text` would accept a match:
        `mask_text` visits positions left to right and only an accepted match changes anything
        (text, counts, where the next search starts); at a position it rejects, or where nothing
        matches, it just moves on. Visiting a subset of positions that keeps every accepted one, in
        the same order and with the same test at each, accepts the same matches.
        """
        c = self.variant(gated)
        if c is not None and starts:
            out: list[str] = []
            last = pos = 0
            for p in starts:
                if p < pos:
                    continue
                if p >= len(s):
                    break
                if self._no_pair_at(c, s, p):
                    continue  # (what the regex would reject here, without running it over the value)
                m = c.rx.match(s, p)
                if m is None:
                    continue
                span = self._decide(c, s, m, p, last)
                if span is None:
                    pos = p + 1
                    continue
                out.append(s[last:span[0]])
                out.append(self.replacer(s[span[0]:span[1]]))
                last = span[1]
                pos = max(m.end(), p + 1)
            if out:
                out.append(s[last:])
                s = "".join(out)
        return self.apply_user(s) if self.user else s

    def mask_anchored(self, s: str, base: int, offsets: Sequence[int], ids: Sequence[int], info: Sequence[object],
                      gated: frozenset[str]) -> str:
        """The rules on a string of a request whose bytes start at `base`, from the anchor occurrences
        the scan found in the request (`offsets`, sorted, with their anchors `ids` and the anchors'
        `info`): `mask_at` at the positions they give, `mask_text` where they cannot tell."""
        starts = positions(s, base, offsets, ids, info)
        return self.mask_text(s, gated) if starts is None else self.mask_at(s, starts, gated)

    def _search(self, c: Compiled, s: str) -> str:
        """`mask_text`'s matches, found as `mask_at` finds them at the candidate positions: the next
        match of the other detectors (`c.other`, searched in C, kept while it lies ahead) and the next
        separator (`c.seps`) where `_no_pair_at` cannot rule a pair out, whichever comes first; at it
        the whole regex is tried, as its search would try it there. Every branch of the regex starts
        with its own literal character, so the regex matches at a position only where one of the two
        kinds of candidate is; and `c.other` matches where the whole regex's other branches do."""
        other, seps = c.other, c.seps
        o = other.search(s) if other is not None else None
        sep = seps.search(s) if seps is not None else None
        out: list[str] = []
        last = pos = 0
        while True:
            while sep is not None and (sep.start() < pos or self._no_pair_at(c, s, sep.start())):
                sep = seps.search(s, max(pos, sep.start() + 1))  # type: ignore[union-attr]
            if o is not None and o.start() < pos:
                o = other.search(s, pos)  # type: ignore[union-attr]
            if o is None and sep is None:
                break
            if o is not None and (sep is None or o.start() <= sep.start()):
                p = o.start()
            else:
                assert sep is not None
                p = sep.start()
            m = c.rx.match(s, p)
            span = None if m is None else self._decide(c, s, m, p, last)
            if m is None or span is None:
                pos = p + 1  # not a secret after all: a real one inside the rejected match is still found
                continue
            out.append(s[last:span[0]])
            out.append(self.replacer(s[span[0]:span[1]]))
            last = span[1]
            pos = max(m.end(), p + 1)
        if not out:
            return s
        out.append(s[last:])
        return "".join(out)

    def _decide(self, c: Compiled, s: str, m: re.Match[str], p: int, last: int) -> tuple[int, int] | None:
        """The span of `s` to mask for match `m` starting at `p` (counted under its detector), or None
        when the match is not a secret after all (a validator says no, or it already is a mask).
        `last`: where the previous mask ended (a secret never reaches back over it)."""
        name, vgroup, back, check = c.rules[m.lastindex]  # type: ignore[index, misc]
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

    def apply_user(self, s: str) -> str:
        """The user's `blocked_values` on `s`: every match (its group `secret`, else all of it) masked."""
        for rx in self.user:
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
        """credential_pair's validator: the match starts at the separator; the key is the run of key
        characters before it (after an optional closing quote and blanks) and must pass the key-name
        rule, and the value must not be a stopword. (_wirewalk.c has it as `pair_key_ok`.)"""
        if not self._sensitive_key_before(s, p):
            return False
        return s[start:end].lower() not in PAIR_STOPWORDS

    def _sensitive_key_before(self, s: str, p: int) -> bool:
        """Whether the key before the separator at p passes the key-name rule. Read back from p (not from a
        copy of s[:p], which made many pairs in one string quadratic)."""
        i = p
        while i and s[i - 1] in " \t":
            i -= 1
        if i and s[i - 1] in "\"'":
            i -= 1
            while i and s[i - 1] == "\\":
                i -= 1  # `\"`: a key inside a JSON string
        end = i
        while i and s[i - 1] in _KEY_SET:
            i -= 1
        return i < end and self.keys.classify(s[i:end]) == SENSITIVE

    def _no_pair_at(self, c: Compiled, s: str, p: int) -> bool:
        """True where the detector regex is sure to find nothing to mask at p: at a separator where
        credential_pair is the only detector that may match (`c.pair`: at `=`, and at `:` unless a
        url_password or telegram_bot_token may match first, as _wirewalk.c's pair_match decides) and the key
        before it fails the key-name rule. Checked first so that a string of many rejected pairs is not
        matched value by value (each value runs to the end of a run of value characters: quadratic)."""
        ch = s[p]
        if ch == "=":
            if not c.pair[1]:
                return False
        elif ch == ":":
            telegram = self._telegram
            if not c.pair[0] or s.startswith("//", p + 1) or (
                    telegram is not None and s.startswith("A", p + 1) and telegram.match(s, p + 1) is not None):
                return False
        else:
            return False
        return not self._sensitive_key_before(s, p)

    # -- whole values ----------------------------------------------------------------------------

    def mask_value(self, value: str) -> str:
        """The mask for a whole value under a sensitive key (unchanged if already a mask)."""
        if self.replacer.is_mask(value):
            return value
        self.counts["key"] = self.counts.get("key", 0) + 1
        return self.replacer(value)

    def take_counts(self) -> dict[str, int]:
        """The counts so far, and start again from none (the same dict object: the C walker holds it)."""
        c = dict(self.counts)
        self.counts.clear()
        return c

    def restore_counts(self, counts: dict[str, int]) -> None:
        """Set the counts back to `counts` (a walk that was abandoned counted nothing)."""
        self.counts.clear()
        self.counts.update(counts)


def positions(s: str, base: int, offsets: Sequence[int], ids: Sequence[int], info: Sequence[object]
              ) -> list[int] | None:
    """Where detectors may match in the string `s` (its bytes at `base` of the request), sorted, from
    the anchor occurrences inside it; None when they cannot tell (the string is not ASCII, so byte
    offsets are not character offsets, or it holds a FULL anchor)."""
    if not s.isascii():
        return None
    starts: list[int] = []
    n = len(s)
    key_lo = key_hi = 0  # a key's run of characters [key_lo, key_hi) and the separator after it (or -1)
    key_at = -1
    for j in range(bisect.bisect_left(offsets, base), len(offsets)):
        q = offsets[j] - base
        if q >= n:
            break
        a = info[ids[j]]
        if isinstance(a, int):
            starts.append(q + a)
        elif a == PAIR:
            # PAIR_TAIL from q, found once per run of key characters: anchors repeated inside one long key
            # (`tokentoken...`, `api_keyX...`) would each scan it again, quadratic in the string (_wirewalk.c
            # mask_positions does the same)
            if not key_lo <= q < key_hi:
                key_lo, key_hi = q, _KEY_RUN.match(s, q).end()  # type: ignore[union-attr]
                m = _PAIR_REST.match(s, key_hi)
                key_at = -1 if m is None else m.end()
            if key_at >= 0:
                starts.append(key_at)
        else:
            assert a == FULL
            return None
    return sorted(set(starts)) if len(starts) > 1 else starts
