"""Regular expressions as the Collector runs them: RE2 (Go's regexp syntax), in linear time.

OTTL (`IsMatch`, `replace_pattern`, `delete_matching_keys`...), the attributes processor's patterns
and its regexp match properties all run user-written patterns against data that senders control.
CPython's `re` backtracks (a pattern like `(a+)+$` takes exponential time on `aaaa…b`, blocking
the event loop); RE2 never does, and it is the syntax the Collector's configs are written in (no
look-arounds or backreferences; `(?P<name>…)` and `(?<name>…)` groups).
"""
from __future__ import annotations

import re
from typing import Any, Protocol

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors come back as exceptions (and into `otelpipe validate`), not on stderr


class Match(Protocol):
    def group(self, *which: int | str) -> Any: ...


class Pattern(Protocol):
    groups: int
    groupindex: dict[str, int]

    def search(self, text: str) -> Any: ...

    def fullmatch(self, text: str) -> Any: ...

    def sub(self, *args: Any) -> str: ...


class _Guarded:
    """A compiled RE2 pattern whose `search` first checks the literals every match contains (a C-speed
    `in`): calling into RE2 costs about a microsecond even when the text cannot match."""

    __slots__ = ("_rx", "_literals", "fullmatch", "groupindex", "groups", "sub")

    def __init__(self, rx: Any, literals: tuple[str, ...]) -> None:
        self._rx = rx
        self._literals = literals
        self.fullmatch = rx.fullmatch
        self.sub = rx.sub
        self.groups: int = rx.groups
        self.groupindex: dict[str, int] = rx.groupindex

    def search(self, text: str) -> Any:
        for lit in self._literals:
            if lit not in text:
                return None
        return self._rx.search(text)


def compile_re2(pattern: str) -> Pattern:
    """The compiled pattern; ValueError with RE2's reason if it is not valid RE2 syntax."""
    from processors.ottl.prefilter import ALWAYS, regex_literals

    try:
        rx = re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(f"invalid regular expression {pattern!r}: {reason}") from None
    if backtracking_is_bounded(pattern):
        # Same matches as RE2 for this subset, and CPython's `re` is ten times cheaper per call.
        return re.compile(pattern, re.ASCII)  # type: ignore[return-value]
    need = regex_literals(pattern)
    if need == ALWAYS or len(need) != 1:
        return rx  # type: ignore[no-any-return]
    return _Guarded(rx, tuple(lit.decode() for lit in next(iter(need))))


_RISKY = re.compile(r"[*+|$]|\\(?:[bBsSpPQAzCxX0-9]|$)|\{\d*,\}|\(\?|\[\[|\)[?{]")
_VARIABLE = re.compile(r"\?|\{\d*,\d+\}")


def backtracking_is_bounded(pattern: str) -> bool:
    """Whether CPython's `re` runs `pattern` in time linear in the text and with RE2's semantics:
    no unbounded repetition (`*`, `+`, `{n,}`), no alternation, no quantified group, at most three
    optional or ranged items, none of the constructs whose meaning differs (`$`, `\\b`, `\\s`, flags,
    Unicode classes, POSIX classes). Everything else goes to RE2."""
    stripped = re.sub(r"\\[.\-/_:=@#%&!~,;'\"<> ^{}()\[\]?*+|$]", "x", pattern)  # an escaped punctuation mark
    if _RISKY.search(stripped):
        return False
    return len(_VARIABLE.findall(stripped)) <= 3
