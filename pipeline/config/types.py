"""Strict decoding of YAML data into typed, frozen config dataclasses.

Every component's config is a plain frozen dataclass; this module turns the
YAML mapping into one, collecting *every* problem (unknown key with the closest
valid name, wrong type, bad duration or size) with its dotted key path instead
of stopping at the first. After a dataclass is built, its own `validate()` runs
and its messages are reported under the same path.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import (
    Any,
    Literal,
    Protocol,
    Self,
    Union,
    get_args,
    get_origin,
    runtime_checkable,
)

from pipeline.errors import ConfigIssue
from pipeline.redact import redact_text


@typing.runtime_checkable
class ParsesItself(Protocol):
    """A config value type that parses its own YAML value (`pipeline.net.endpoint.Endpoint`).

    The decoder calls `from_config(raw)` with the value as written; a ValueError becomes an issue at
    the key path, with its message (which must not quote a secret). Parsing happens once, when the
    config is read, and the component gets the parsed value.
    """

    @classmethod
    def from_config(cls, value: object) -> Self: ...


class Duration(float):
    """Seconds, written in YAML as a string with a unit: `200ms`, `10s`, `5m`, `1h30m`."""

    __slots__ = ()


class ByteSize(int):
    """Bytes, written as an integer or a string with a unit: `4MiB`, `512KiB`, `1GB`."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem a config block's `validate()` found: the key it concerns, relative to the block
    (`"max_interval"`, `"headers.X-Token"`; `""` for the block as a whole), and what is wrong.

    The decoder prefixes the key with the block's path and adds the file, so a
    component never needs to know where its config sits.
    """

    key: str
    message: str
    warning: bool = False  # reported (`otelpipe validate`, the start-up log) without making the config invalid


@runtime_checkable
class Validates(Protocol):
    """A config block that checks itself after decoding; the decoder reports what it returns."""

    def validate(self) -> list[Issue]: ...


class Secret:
    """A value that must never be printed: str/repr give `[REDACTED]`; `.reveal()` at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "[REDACTED]"

    __repr__ = __str__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B|[KMGT]i?|)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}


def parse_duration(value: object) -> Duration:
    """`"1m30s"` → 90.0. Raises ValueError saying how to write one."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '5s' or '200ms', got {value!r}")
    if isinstance(value, (int, float)):
        if value == 0:
            return Duration(0.0)
        raise ValueError(f"a duration needs a unit: write '{value}s' or '{value}ms', not {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '5s' or '200ms', got {type(value).__name__}")
    text = value.strip()
    if text in ("0", ""):
        if text == "":
            raise ValueError("expected a duration like '5s' or '200ms', got an empty string")
        return Duration(0.0)
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {value!r}: use a number with a unit (ns, us, ms, s, m, h), "
                         "e.g. '5s' or '1m30s'")
    return Duration(total)


def parse_size(value: object) -> ByteSize:
    """`"4MiB"` → 4194304; plain integers are bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '4MiB' or a number of bytes, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return ByteSize(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return ByteSize(int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]))
    raise ValueError(f"invalid size {value!r}: write a number of bytes or a number with a unit, "
                     "e.g. '4MiB', '512KiB', '1GB'")


def closest(word: str, choices: typing.Iterable[str]) -> str | None:
    """The closest valid name to a misspelt one, for 'did you mean' hints."""
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    best = closest(word, choices)
    return f"; did you mean '{best}'?" if best else ""


def join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS_CACHE[cls] = hints
    return hints


def _type_name(tp: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             Duration: "a duration like '5s'", ByteSize: "a size like '4MiB'", Secret: "a string"}
    if tp in names:
        return names[tp]
    origin = get_origin(tp)
    if origin in (list, tuple, typing.Sequence):
        return "a list"
    if origin in (dict, Mapping) or (dataclasses.is_dataclass(tp)):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _quote(value: object) -> str:
    """A bad value as an error message shows it: a URL in it loses its user info and query values."""
    return repr(redact_text(value)) if isinstance(value, str) else repr(value)


def _describe(value: object, *, show_text: bool = True) -> str:
    """What was written instead of the expected type.

    `show_text=False` where a mapping or list was expected: a string there is often a header value
    or an API key written one level too high (`headers: "Bearer ..."`), so its text is not repeated.
    """
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, str):
        return f"string {_quote(value)}" if show_text else "a string"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def decode(tp: Any, value: object, path: str, issues: list[ConfigIssue]) -> Any:
    """Decode `value` as type `tp`; append problems to `issues`; return the value (or a default on error)."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return decode(get_args(tp)[0], value, path, issues)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return decode(non_none[0], value, path, issues)
        for a in non_none:
            trial: list[ConfigIssue] = []
            out = decode(a, value, path, trial)
            if not trial:
                return out
        issues.append(ConfigIssue(path, f"expected {' or '.join(_type_name(a) for a in non_none)}, "
                                        f"got {_describe(value)}"))
        return None
    if origin is Literal:
        choices = get_args(tp)
        if value in choices and type(value) is type(choices[0]):
            return value
        issues.append(ConfigIssue(path, f"invalid value {_quote(value)}: "
                                        f"must be one of {', '.join(repr(c) for c in choices)}"
                                        f"{did_you_mean(str(value), [str(c) for c in choices])}"))
        return choices[0]
    if tp is Any or tp is object:
        return value
    if isinstance(tp, type) and issubclass(tp, ParsesItself):
        try:
            return tp.from_config(value)
        except ValueError as e:
            # No value (None): the config has an issue, so its validate() does not run; cross-checks skip None.
            issues.append(ConfigIssue(path, redact_text(str(e))))
            return None
    if dataclasses.is_dataclass(tp):
        return decode_dataclass(tp, value, path, issues)  # type: ignore[arg-type]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            values = [str(m.value) for m in tp]
            issues.append(ConfigIssue(path, f"invalid value {_quote(value)}: must be one of {', '.join(values)}"
                                            f"{did_you_mean(str(value), values)}"))
            return next(iter(tp))
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        args = get_args(tp)
        item_tp = args[0] if args else Any
        if value is None:
            return ()
        if not isinstance(value, list):
            issues.append(ConfigIssue(path, f"expected a list, got {_describe(value, show_text=False)}"))
            return ()
        return tuple(decode(item_tp, v, join(path, i), issues) for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp in (dict,):
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        if value is None:
            return {}
        if not isinstance(value, dict):
            issues.append(ConfigIssue(path, f"expected a mapping, got {_describe(value, show_text=False)}"))
            return {}
        return {str(k): decode(val_tp, v, join(path, k), issues) for k, v in value.items()}
    if tp is Duration:
        try:
            return parse_duration(value)
        except ValueError as e:
            issues.append(ConfigIssue(path, str(e)))
            return Duration(0.0)
    if tp is ByteSize:
        try:
            return parse_size(value)
        except ValueError as e:
            issues.append(ConfigIssue(path, str(e)))
            return ByteSize(0)
    if tp is Secret:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return Secret(str(value))
        issues.append(ConfigIssue(path, f"expected a string, got {_describe(value)}"))
        return Secret("")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        raise TypeError(f"config type {tp!r} at {path} is not supported by the decoder")
    issues.append(ConfigIssue(path, f"expected {_type_name(tp)}, got {_describe(value)}"))
    return tp()


def decode_dataclass(cls: type, value: object, path: str, issues: list[ConfigIssue]) -> Any:
    """Build `cls` from a mapping: unknown keys and wrong types are issues; then run `validate()`."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        issues.append(ConfigIssue(path, f"expected a mapping, got {_describe(value, show_text=False)}"))
        value = {}
    hints = _hints(cls)
    by_key = {f.metadata.get("yaml", f.name): f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    start = len(issues)
    for key, raw in value.items():
        f = by_key.get(key)
        if f is None:
            issues.append(ConfigIssue(join(path, key), f"unknown key '{key}'{did_you_mean(str(key), by_key)}"
                                      + ("" if closest(str(key), by_key)
                                         else f" (valid keys: {', '.join(sorted(by_key))})")))
            continue
        kwargs[f.name] = decode(hints[f.name], raw, join(path, key), issues)
    missing = [k for k, f in by_key.items() if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for k in missing:
        issues.append(ConfigIssue(join(path, k), "is required"))
    if any(not i.warning for i in issues[start:]) or missing:
        try:
            return cls(**kwargs)
        except Exception:
            try:
                return cls()
            except Exception:
                return None
    obj = cls(**kwargs)
    if isinstance(obj, Validates):
        for issue in obj.validate():
            if not isinstance(issue, Issue):
                raise TypeError(f"{cls.__name__}.validate() must return Issue objects, got {issue!r}")
            issues.append(ConfigIssue(join(path, issue.key) if issue.key else path, issue.message, issue.warning))
    return obj
