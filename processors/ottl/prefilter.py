"""What a request's wire bytes must contain for a statement or condition to have any effect.

Protobuf stores strings (attribute keys, string values, span and metric names, log bodies) as
their UTF-8 bytes, so `span.attributes["http.route"] == "/health"` can only be true in a request
whose bytes contain both `http.route` and `/health`. A requirement is kept in disjunctive normal
form: a set of alternatives, each a set of byte strings that must all be present. `ALWAYS` (one
empty alternative) means the bytes cannot tell; `NEVER` (no alternative) means the expression can
never be true. A request for which no statement's requirement holds is handed on without being
decoded, and keeps its wire bytes.

This is sound as long as requirements are only derived where a value must lie verbatim in the
bytes: string comparisons (`==`) against paths that hold strings as such, keys of attribute maps,
regex and glob literals matched against string-only targets. `!=`, `not` and anything computed
(converters, math) give ALWAYS.
"""
from __future__ import annotations

import re
from typing import Any

from processors.ottl.regex import Pattern, compile_re2

_hyperscan: Any
try:  # a native multi-literal matcher; pyproject installs it on x86_64, where the wheels bundle the library
    import hyperscan as _hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    _hyperscan = None

Need = frozenset[frozenset[bytes]]

ALWAYS: Need = frozenset({frozenset()})
NEVER: Need = frozenset()
_MAX_ALTERNATIVES = 32


def lits(*texts: str) -> Need:
    """All of `texts` must be present (empty strings require nothing)."""
    return frozenset({frozenset(t.encode() for t in texts if t)})


def and_(a: Need, b: Need) -> Need:
    if a == ALWAYS:
        return b
    if b == ALWAYS:
        return a
    out = frozenset(x | y for x in a for y in b)
    if len(out) > _MAX_ALTERNATIVES:  # either side alone is still a necessary condition
        return a if len(a) <= len(b) else b
    return _simplify(out)


def or_(a: Need, b: Need) -> Need:
    out = a | b
    if frozenset() in out:
        return ALWAYS
    if len(out) > _MAX_ALTERNATIVES:
        return ALWAYS
    return _simplify(out)


def _simplify(need: Need) -> Need:
    if frozenset() in need:
        return ALWAYS
    # drop alternatives that are supersets of another (they add nothing)
    return frozenset(x for x in need if not any(y < x for y in need))


def holds(need: Need, raw: bytes) -> bool:
    """Whether `raw` may satisfy `need` (every literal of some alternative is in it)."""
    for alt in need:
        for lit in alt:
            if lit not in raw:
                break
        else:
            return True
    return False


class Checker:
    """`holds(need, raw)` for one fixed requirement, with every literal looked for in one pass.

    CPython's `in` takes about 25 us per absent literal in a 67 KB request; hyperscan (a dependency
    on x86_64) finds all literals together in about 5 us, each reported once (SINGLEMATCH).
    Without it the literals are checked one by one with `in`.
    """

    __slots__ = ("_alts", "_db", "_scratch", "need")

    def __init__(self, need: Need, *, backend: str = "auto") -> None:
        self.need = need
        literals = sorted({lit for alt in need for lit in alt})
        self._alts = [frozenset(literals.index(lit) for lit in alt) for alt in need]
        self._db: Any = None
        self._scratch: Any = None
        if literals and backend != "re" and _hyperscan is not None:
            try:
                db = _hyperscan.Database(mode=_hyperscan.HS_MODE_BLOCK)
                db.compile(expressions=[re.escape(lit) for lit in literals], ids=list(range(len(literals))),
                           elements=len(literals), flags=[_hyperscan.HS_FLAG_SINGLEMATCH] * len(literals))
                self._scratch = _hyperscan.Scratch(db)
                self._db = db
            except Exception:  # e.g. a CPU without the instructions the library needs: `in` does the job
                self._db = None

    @property
    def backend(self) -> str:
        return "hyperscan" if self._db is not None else "re"

    def __call__(self, raw: bytes) -> bool:
        if self._db is None:
            return holds(self.need, raw)
        found: set[int] = set()

        def on_match(i: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
            found.add(i)

        self._db.scan(raw, match_event_handler=on_match, scratch=self._scratch)
        return any(alt <= found for alt in self._alts)


_REGEX_META = set(".^$*+?()[]{}|\\")
_SAFE_ESCAPES = set(".^$*+?()[]{}|\\/-_:=@#%&!~,;'\"<> ")


def regex_literals(pattern: str) -> Need:
    """Literal runs every match of `pattern` contains (conservative: ALWAYS when unsure).

    Only top-level literal characters count: anything inside a group or a class, or before a
    quantifier that may drop it, is skipped; an alternation or an inline flag gives up.
    """
    if "|" in pattern or "(?" in pattern:
        return ALWAYS
    runs: list[str] = []
    cur: list[str] = []

    def cut() -> None:
        if cur:
            runs.append("".join(cur))
            cur.clear()

    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                return ALWAYS
            nxt = pattern[i + 1]
            if nxt in _SAFE_ESCAPES:
                cur.append(nxt)
            elif nxt in "dDsSwWbBAz":
                cut()  # a one-character class or an assertion
            else:
                return ALWAYS  # \pL, \x41, \Q...\E, \n, octal...: not worth decoding here
            i += 2
        elif c == "[":
            cut()
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
        elif c == "(":
            cut()
            depth, j = 1, i + 1
            while j < n and depth:
                if pattern[j] == "\\":
                    j += 2
                    continue
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
            i = j
        elif c in "*?{":
            if cur:
                cur.pop()  # the character before may occur zero times
            cut()
            if c == "{":
                j = pattern.find("}", i)
                i = n if j < 0 else j + 1
            else:
                i += 1
        elif c == "+":
            cut()  # one occurrence is certain (kept), what follows is not adjacent
            i += 1
        elif c in _REGEX_META:
            cut()
            i += 1
        else:
            cur.append(c)
            i += 1
    cut()
    return lits(*runs) if runs else ALWAYS


def glob_literals(pattern: str) -> Need:
    """Literal runs of a glob (`*`, `?`, `[...]`, `{a,b}`, `\\` escapes)."""
    if "{" in pattern:
        return ALWAYS
    runs: list[str] = []
    cur: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            cur.append(pattern[i + 1])
            i += 2
            continue
        if c in "*?[":
            if cur:
                runs.append("".join(cur))
                cur.clear()
            if c == "[":
                j = pattern.find("]", i + 1)
                i = n if j < 0 else j + 1
                continue
        else:
            cur.append(c)
        i += 1
    if cur:
        runs.append("".join(cur))
    return lits(*runs) if runs else ALWAYS


def glob_to_regex(pattern: str) -> Pattern:
    """The Collector's glob (gobwas/glob without separators): `*` any run, `?` one character,
    `[abc]`/`[!abc]`/`[a-z]` classes, `{a,b}` alternatives, `\\` escapes; the whole string must match."""
    out: list[str] = []
    i, n = 0, len(pattern)
    depth = 0
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise ValueError(f"unclosed '[' in glob {pattern!r}")
            body = pattern[i + 1:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
            continue
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError(f"unclosed '{{' in glob {pattern!r}")
    return compile_re2("(?s)" + "".join(out))
