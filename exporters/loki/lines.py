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

import base64
import decimal
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# logfmt: a key is any run of characters but space, `=`, `"` and controls; a value needing quotes has one.
_LOGFMT_KEY_BAD = re.compile(r'[\x00-\x20="\x7f]')
_LOGFMT_NEEDS_QUOTES = re.compile(r'[\x00-\x20="\x7f\ufffd]')


def float_text(x: float) -> str:
    """`3`, `0.25`, `100000000000000000000`, `NaN`, `+Inf`: the digits that read back as `x`, never an exponent
    (Go's `FormatFloat(x, 'f', -1, 64)`, which the Collector's AsString uses)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    text = repr(x)
    if "e" in text:
        return format(decimal.Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def plain(v: AnyValue) -> Any:
    """An AnyValue as JSON-able data: maps as objects, arrays as lists, bytes in base64, non-finite doubles as text."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [plain(x) for x in v.array_value.values]
    if kind == "double_value":
        x = v.double_value
        return x if math.isfinite(x) else float_text(x)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind is None:
        return None
    return getattr(v, kind)  # bool_value, int_value


def value_text(v: AnyValue) -> str:
    """An AnyValue as a label or structured-metadata value (the Collector's AsString)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind is None:
        return ""
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return float_text(v.double_value)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return orjson.dumps(plain(v)).decode()


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
        yield key or "msg", value_text(v)


def body_pairs(body: AnyValue) -> Iterator[tuple[str, str]]:
    kind = body.WhichOneof("value")
    if kind == "kvlist_value":
        return _pairs("", body)
    if kind == "array_value":
        return _pairs("body", body)
    if kind is None:
        return iter(())
    return iter((("msg", value_text(body)),))


def logfmt_line(pairs: Iterable[tuple[str, str]]) -> str:
    return " ".join(f"{logfmt_key(k)}={logfmt_value(v)}" for k, v in pairs)


def json_line(fields: dict[str, Any]) -> str:
    return orjson.dumps(fields).decode()
