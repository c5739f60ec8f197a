"""What goes into a Loki entry besides its timestamp: the line (per `format`) and string values.

Attribute values (labels, structured metadata) are strings, as the Collector's `AsString` makes
them: strings as they are, `true` / `false`, integers in decimal, doubles in the shortest form
that reads back the same, without an exponent (`3`, `0.25`), bytes in base64, arrays and maps as compact JSON.

The line, per `format`:

- `raw`: the body as text (a string body as it is; maps, arrays and the other values as above);
- `json`: one JSON object per line, `{"body": <the body as JSON>}`; with `structured_metadata: false`
  the object also holds `traceid`, `spanid`, `severity`, `attributes` and `resources`, the fields
  of the Collector's Loki exporter (whose default line format this was);
- `logfmt`: the body as `key=value` pairs (a map's keys, nested keys joined by `_`; an array as
  `body_0=...`; a string or other value as `msg=...`); with `structured_metadata: false` followed
  by `traceID=`, `spanID=`, `severity=`, `attribute_<name>=` and `resource_<name>=` pairs, again
  the Collector's names. Values with a space, `=`, `"` or a control character are quoted.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pipeline.anyvalue import as_string

# logfmt: a key is any run of characters but space, `=`, `"` and controls; a value needing quotes has one.
_LOGFMT_KEY_BAD = re.compile(r'[\x00-\x20="\x7f]')
_LOGFMT_NEEDS_QUOTES = re.compile(r'[\x00-\x20="\x7f\ufffd]')


def logfmt_key(key: str) -> str:
    return _LOGFMT_KEY_BAD.sub("_", key) or "_"


def logfmt_value(value: str) -> str:
    if _LOGFMT_NEEDS_QUOTES.search(value) is None:
        return value
    return orjson.dumps(value).decode()  # JSON string escaping: `"` and `\\` escaped, controls as \n, \u0001...


def _pairs(key: str, v: AnyValue) -> Iterator[tuple[str, str]]:
    """logfmt pairs of a value: maps and arrays flattened (`key_sub`, `key_0`), everything else as text."""
    kind = v.WhichOneof("value")
    prefix = f"{key}_" if key else ""
    if kind == "kvlist_value":
        for kv in v.kvlist_value.values:
            yield from _pairs(prefix + kv.key, kv.value)
    elif kind == "array_value":
        for i, x in enumerate(v.array_value.values):
            yield from _pairs(f"{prefix}{i}", x)
    elif kind is not None:
        yield key or "msg", as_string(v)


def body_pairs(body: AnyValue) -> Iterator[tuple[str, str]]:
    kind = body.WhichOneof("value")
    if kind == "kvlist_value":
        return _pairs("", body)
    if kind == "array_value":
        return _pairs("body", body)
    if kind is None:
        return iter(())
    return iter((("msg", as_string(body)),))


def logfmt_line(pairs: Iterable[tuple[str, str]]) -> str:
    return " ".join(f"{logfmt_key(k)}={logfmt_value(v)}" for k, v in pairs)


def json_line(fields: dict[str, Any]) -> str:
    return orjson.dumps(fields).decode()
