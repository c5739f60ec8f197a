"""OTLP attribute values as text, as the Collector's `pcommon.Value.AsString` renders them.

Exporters whose backends take attribute values as strings (Loki labels and structured metadata,
Datadog tags and log fields) need the same rendering; keeping it here means one answer to "how does
a double or a map look as a label": strings as they are, `true` / `false`, integers in decimal,
doubles in the shortest form that reads back the same and never with an exponent (`3`, `0.25`,
`NaN`, `+Inf`), bytes in base64, arrays and maps as compact JSON.
"""
from __future__ import annotations

import base64
import decimal
import math
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


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


def as_string(v: AnyValue) -> str:
    """An AnyValue as one string (the Collector's AsString)."""
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
