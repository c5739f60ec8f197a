"""Attribute actions (the Collector's attraction package), shared by the attributes and resource processors.

`insert` (only where the key is absent), `update` (only where present), `upsert` (both), each from
`value`, `from_attribute` (another attribute of the same item) or `from_context` (request metadata:
`metadata.<header>`, or a bare header name, from receivers with `include_metadata: true`);
`delete` and `hash` (SHA-256, hex) on `key` and/or every key matching `pattern`; `extract` (the named
groups of `pattern` matched against the string value of `key` become attributes); `convert`
(`converted_type`: int, double or string).
"""
from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Callable, Mapping, MutableSequence
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from pipeline.config.types import Issue
from processors.ottl import prefilter
from processors.ottl.prefilter import Need
from processors.ottl.regex import compile_re2
from processors.ottl.values import PMap, from_any, raw, string_like

Action = Literal["", "insert", "update", "upsert", "delete", "hash", "extract", "convert"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionConfig:
    key: str = ""
    value: Any = None
    pattern: str = ""
    from_attribute: str = ""
    from_context: str = ""
    action: Action = ""
    converted_type: Literal["", "int", "double", "string"] = ""

    def validate(self) -> list[Issue]:
        a = self.action
        if not a:
            return [Issue("action", "is required: insert, update, upsert, delete, hash, extract or convert")]
        sources = [k for k in ("value", "from_attribute", "from_context")
                   if (getattr(self, k) is not None if k == "value" else getattr(self, k))]
        issues: list[Issue] = []
        if a in ("insert", "update", "upsert"):
            if not self.key:
                issues.append(Issue("key", f"is required for action {a}"))
            if self.pattern:
                issues.append(Issue("pattern", f"is not used by action {a}; name one key"))
            if len(sources) != 1:
                issues.append(Issue("", f"action {a} needs exactly one of value, from_attribute or from_context"
                                        + (f" (got {', '.join(sources)})" if sources else "")))
        else:
            if sources:
                issues.append(Issue(sources[0], f"is not used by action {a}"))
            if a in ("delete", "hash") and not self.key and not self.pattern:
                issues.append(Issue("", f"action {a} needs key and/or pattern"))
            if a in ("extract", "convert") and not self.key:
                issues.append(Issue("key", f"is required for action {a}"))
            if a == "extract" and not self.pattern:
                issues.append(Issue("pattern", "is required for action extract: a regex with named groups"))
            if a == "convert" and not self.converted_type:
                issues.append(Issue("converted_type", "is required for action convert: int, double or string"))
        if self.pattern:
            try:
                rx = compile_re2(self.pattern)
            except ValueError as e:
                return [*issues, Issue("pattern", str(e))]
            if a == "extract":
                names = rx.groupindex
                if not names or len(names) != rx.groups:
                    issues.append(Issue("pattern", "every group of an extract pattern must be named, e.g. "
                                                   "^(?P<http_protocol>.*):(?P<http_domain>.*)$"))
        return issues


def validate_actions(actions: tuple[ActionConfig, ...], key: str) -> list[Issue]:
    if not actions:
        return [Issue(key, "is required: a list of actions (key, action, value...)")]
    return []


def hash_value(value: Any) -> str:
    """SHA-256 hex of a value as the Collector hashes it (strings as UTF-8, bools as one byte, ints and
    doubles as 8 little-endian bytes); other types hash to the empty string."""
    if isinstance(value, bool):
        data = b"\x01" if value else b"\x00"
    elif isinstance(value, int):
        data = struct.pack("<q", value)
    elif isinstance(value, float):
        data = struct.pack("<d", value)
    elif isinstance(value, str):
        data = value.encode()
    else:
        data = b""
    return hashlib.sha256(data).hexdigest() if data else ""


def convert_value(value: Any, to: str) -> Any:
    """The converted value, or None when it cannot be converted (the attribute is left alone)."""
    if to == "int":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return None if math.isnan(value) or math.isinf(value) else int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
            n = int(value)
            return n if -(1 << 63) <= n < 1 << 63 else None
        return None
    if to == "double":
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return None
        return None
    if isinstance(value, bytes):
        import base64
        return base64.b64encode(value).decode()
    return string_like(value) if value is not None else ""


Headers = Mapping[str, str] | None


class Actions:
    """A compiled list of actions; `apply(kvs, headers)` runs them on one attribute map."""

    def __init__(self, actions: tuple[ActionConfig, ...]) -> None:
        self.steps: list[Callable[[PMap, Headers], bool]] = [self._compile(a) for a in actions]
        need = prefilter.NEVER
        for a in actions:
            need = prefilter.or_(need, _action_need(a))
        self.need = need

    def apply(self, kvs: MutableSequence[KeyValue], headers: Headers) -> bool:
        m = PMap(kvs)
        changed = False
        for step in self.steps:
            if step(m, headers):
                changed = True
        return changed

    @staticmethod
    def _compile(a: ActionConfig) -> Callable[[PMap, Headers], bool]:
        key = a.key
        rx = compile_re2(a.pattern) if a.pattern else None
        if a.action in ("insert", "update", "upsert"):
            mode = a.action
            if a.value is not None:
                const = a.value

                def source(m: PMap, headers: Headers) -> Any:
                    return const
            elif a.from_attribute:
                src = a.from_attribute

                def source(m: PMap, headers: Headers) -> Any:
                    v = m.get(src)
                    return raw(v)
            else:
                ctx_key = a.from_context

                def source(m: PMap, headers: Headers) -> Any:
                    return _from_context(ctx_key, headers)

            def put(m: PMap, headers: Headers) -> bool:
                exists = m.find(key) is not None
                if (mode == "insert" and exists) or (mode == "update" and not exists):
                    return False
                v = source(m, headers)
                return False if v is None else m.put(key, v)
            return put
        if a.action == "delete":
            def delete(m: PMap, headers: Headers) -> bool:
                return m.delete_where(lambda k: k == key or (rx is not None and rx.search(k) is not None))
            return delete
        if a.action == "hash":
            def hash_(m: PMap, headers: Headers) -> bool:
                changed = False
                for kv in m.kvs:
                    if kv.key == key or (rx is not None and rx.search(kv.key) is not None):
                        hashed = hash_value(from_any(kv.value))
                        if kv.value.WhichOneof("value") != "string_value" or kv.value.string_value != hashed:
                            kv.value.string_value = hashed
                            changed = True
                return changed
            return hash_
        if a.action == "extract":
            assert rx is not None
            names = sorted(rx.groupindex, key=rx.groupindex.__getitem__)  # in the pattern's order

            def extract(m: PMap, headers: Headers) -> bool:
                v = m.get(key)
                if not isinstance(v, str):
                    return False
                found = rx.search(v)
                if found is None:
                    return False
                changed = False
                for name in names:
                    changed |= m.put(name, found.group(name) or "")
                return changed
            return extract
        to = a.converted_type

        def convert(m: PMap, headers: Headers) -> bool:
            kv = m.find(key)
            if kv is None:
                return False
            new = convert_value(from_any(kv.value), to)
            if new is None:
                return False
            return m.put(key, new)
        return convert


def _from_context(key: str, headers: Headers) -> str | None:
    if key.startswith("auth.") or key == "client.address" or not headers:
        return None  # no authenticator or client address is kept on a payload
    name = key.removeprefix("metadata.").lower()
    values = [v for k, v in headers.items() if k.lower() == name]
    return ";".join(values) if values else None


def _action_need(a: ActionConfig) -> Need:
    """What a request must contain for the action to change anything (ALWAYS for insert/upsert)."""
    if a.action in ("insert", "upsert"):
        return prefilter.ALWAYS
    need = prefilter.lits(a.key) if a.key else prefilter.NEVER
    if a.pattern and a.action in ("delete", "hash"):
        need = prefilter.or_(need, prefilter.regex_literals(a.pattern))
    return need
