"""The OTLP/JSON encoding: protobuf's json_format plus the OTLP rules.

OTLP/JSON differs from protobuf's canonical JSON in one way that matters:
trace and span ids are lowercase hex strings, not base64 (opentelemetry-proto
`docs/specification.md`). Enums are integers, field names lowerCamelCase,
and unknown fields must be ignored when decoding.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from pipeline.model import ExportRequest, Signal

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _walk(obj: Any, convert: Any) -> Any:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in _ID_KEYS and isinstance(v, str):
                obj[k] = convert(v, k)
            elif isinstance(v, (dict, list)):
                _walk(v, convert)
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)):
                _walk(v, convert)
    return obj


def _b64_to_hex(v: str, _k: str) -> str:
    return base64.b64decode(v).hex()


def _hex_to_b64(v: str, key: str) -> str:
    if v == "":
        return ""
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise ValueError(f"{key} must be a hex string, got {v!r}") from None
    return base64.b64encode(raw).decode()


def message_to_dict(msg: Message) -> dict[str, Any]:
    d = json_format.MessageToDict(msg, use_integers_for_enums=True, preserving_proto_field_name=False)
    return _walk(d, _b64_to_hex)  # type: ignore[no-any-return]


def encode(msg: Message) -> bytes:
    """OTLP/JSON bytes of a message (ids as hex)."""
    return orjson.dumps(message_to_dict(msg))


def decode(signal: Signal, body: bytes | str) -> ExportRequest:
    """Parse an OTLP/JSON export request; raises ValueError with a readable reason."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e}") from None
    return decode_obj(signal, data)


def decode_obj(signal: Signal, data: Any) -> ExportRequest:
    if not isinstance(data, dict):
        raise ValueError("an OTLP/JSON request must be a JSON object")
    _walk(data, _hex_to_b64)
    msg = signal.request_type()
    try:
        json_format.ParseDict(data, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error) as e:
        raise ValueError(f"invalid OTLP/JSON: {e}") from None
    return msg


def decode_response(signal: Signal, body: bytes) -> Message:
    msg = signal.response_type()
    json_format.ParseDict(orjson.loads(body or b"{}"), msg, ignore_unknown_fields=True)
    return msg
