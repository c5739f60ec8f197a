"""OTTL values over OTLP protobuf: attribute maps, AnyValue, comparison and string forms.

What a path yields (the Collector's pdata types, in Python):

* scalars: `str`, `int` (int64), `float`, `bool`, `bytes`, `None` (nil: a missing key, an empty value);
* `PMap`: a live view of a repeated `KeyValue` field (attributes, a kvlist value): reading and
  writing through it changes the request;
* `PSlice`: a live view of an `ArrayValue`'s values.

Converters may also make plain `list` and `dict` values; both are accepted wherever a slice or a
map is (and are copied into the request when set).
"""
from __future__ import annotations

import base64
import math
from collections.abc import Iterator, MutableSequence
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class OTTLRuntimeError(Exception):
    """A statement that failed on one item (a wrong type, a bad argument value); error_mode decides."""


class PMap:
    """A live view of a repeated KeyValue field (an attribute map)."""

    __slots__ = ("kvs",)

    def __init__(self, kvs: MutableSequence[KeyValue]) -> None:
        self.kvs = kvs

    def __len__(self) -> int:
        return len(self.kvs)

    def find(self, key: str) -> KeyValue | None:
        for kv in self.kvs:
            if kv.key == key:
                return kv
        return None

    def get(self, key: str) -> Any:
        for kv in self.kvs:
            if kv.key == key:
                return from_any(kv.value)
        return None

    def keys(self) -> list[str]:
        return [kv.key for kv in self.kvs]

    def items(self) -> Iterator[tuple[str, Any]]:
        for kv in self.kvs:
            yield kv.key, from_any(kv.value)

    def put(self, key: str, value: Any) -> bool:
        """Insert or replace `key`; False when the value was already the same (nothing changed)."""
        kv = self.find(key)
        if kv is None:
            kv = self.kvs.add()  # type: ignore[attr-defined]
            kv.key = key
            to_any(kv.value, value)
            return True
        if same(from_any(kv.value), value):
            return False
        to_any(kv.value, value)
        return True

    def delete(self, key: str) -> bool:
        kvs = self.kvs
        for i in range(len(kvs)):
            if kvs[i].key == key:
                del kvs[i]
                return True
        return False

    def delete_where(self, drop: Any) -> bool:
        """Delete every entry for which `drop(key)` is true (keeping the order of the rest)."""
        kvs = self.kvs
        keep = [kv for kv in kvs if not drop(kv.key)]
        if len(keep) == len(kvs):
            return False
        copies = [KeyValue(key=kv.key, value=kv.value) for kv in keep]
        del kvs[:]
        kvs.extend(copies)
        return True

    def replace(self, other: Any) -> bool:
        pairs = list(_pairs(other))
        if [kv.key for kv in self.kvs] == [k for k, _ in pairs] and all(
                same(from_any(kv.value), v) for kv, (_, v) in zip(self.kvs, pairs)):
            return False
        copies = []
        for k, v in pairs:
            kv = KeyValue(key=k)
            to_any(kv.value, v)
            copies.append(kv)
        del self.kvs[:]
        self.kvs.extend(copies)
        return True

    def to_dict(self) -> dict[str, Any]:
        return {kv.key: raw(from_any(kv.value)) for kv in self.kvs}


class PSlice:
    """A live view of an ArrayValue's values."""

    __slots__ = ("values",)

    def __init__(self, values: MutableSequence[AnyValue]) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def get(self, index: int) -> Any:
        if not 0 <= index < len(self.values):
            raise OTTLRuntimeError(f"index {index} out of bounds for a slice of {len(self.values)}")
        return from_any(self.values[index])

    def set(self, index: int, value: Any) -> bool:
        if not 0 <= index < len(self.values):
            raise OTTLRuntimeError(f"index {index} out of bounds for a slice of {len(self.values)}")
        if same(from_any(self.values[index]), value):
            return False
        to_any(self.values[index], value)
        return True

    def to_list(self) -> list[Any]:
        return [raw(from_any(v)) for v in self.values]


def _pairs(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, PMap):
        yield from value.items()
    elif isinstance(value, dict):
        yield from ((str(k), v) for k, v in value.items())
    else:
        raise OTTLRuntimeError(f"expected a map, got {type_name(value)}")


def from_any(v: AnyValue) -> Any:
    """The OTTL value of an AnyValue (maps and arrays as live views; an empty value is nil)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "kvlist_value":
        return PMap(v.kvlist_value.values)
    if which == "array_value":
        return PSlice(v.array_value.values)
    if which == "bytes_value":
        return v.bytes_value
    return None


def to_any(out: AnyValue, value: Any) -> None:
    """Write an OTTL value into `out` (copies maps and slices, also from live views of `out` itself)."""
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise OTTLRuntimeError(f"integer {value} does not fit in int64")
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, (PMap, dict)):
        pairs = list(_pairs(value))
        copies = []
        for k, v in pairs:
            kv = KeyValue(key=k)
            to_any(kv.value, raw(v) if isinstance(v, (PMap, PSlice)) else v)
            copies.append(kv)
        out.kvlist_value.SetInParent()
        del out.kvlist_value.values[:]
        out.kvlist_value.values.extend(copies)
    elif isinstance(value, (PSlice, list, tuple)):
        items = value.to_list() if isinstance(value, PSlice) else list(value)
        vals = []
        for item in items:
            av = AnyValue()
            to_any(av, item)
            vals.append(av)
        out.array_value.SetInParent()
        del out.array_value.values[:]
        out.array_value.values.extend(vals)
    elif value is None:
        out.Clear()
    else:
        raise OTTLRuntimeError(f"cannot store {type_name(value)} in an attribute")


def raw(value: Any) -> Any:
    """Plain Python data (dicts and lists) for a value that may be a live view."""
    if isinstance(value, PMap):
        return value.to_dict()
    if isinstance(value, PSlice):
        return value.to_list()
    return value


def same(a: Any, b: Any) -> bool:
    """Equal value and type (bool is not int); live views compare by content."""
    if type(a) is not type(b):
        if isinstance(a, (PMap, PSlice, dict, list)) and isinstance(b, (PMap, PSlice, dict, list)):
            return bool(raw(a) == raw(b))
        return False
    if isinstance(a, (PMap, PSlice)):
        return bool(raw(a) == raw(b))
    return bool(a == b)


def type_name(value: Any) -> str:
    names = {str: "a string", int: "an int", float: "a double", bool: "a bool", bytes: "bytes",
             type(None): "nil", PMap: "a map", dict: "a map", PSlice: "a slice", list: "a slice"}
    return names.get(type(value), type(value).__name__)


# -- comparison (LANGUAGE.md "Comparison Rules") -------------------------------------------------

def compare(op: str, left: Any, right: Any) -> bool:
    """OTTL comparison: numbers compare across int and double, strings and bools by value (false < true),
    bytes byte for byte, nil equals only nil; any other mix is "not equal" (only `!=` is true)."""
    if isinstance(left, bool) or isinstance(right, bool):
        if type(left) is not type(right):
            return op == "!="
    elif isinstance(left, (int, float)) and isinstance(right, (int, float)):
        pass
    elif left is None or right is None:
        if op == "==":
            return left is None and right is None
        if op == "!=":
            return not (left is None and right is None)
        return False
    elif isinstance(left, str) and isinstance(right, str):
        pass
    elif isinstance(left, bytes) and isinstance(right, bytes):
        pass
    else:
        if op in ("==", "!="):
            eq = same(left, right)
            return eq if op == "==" else not eq
        return False
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


# -- string forms (the Collector's StringLikeGetter and pcommon.Value.AsString) --------------------

def format_float(f: float) -> str:
    """Go's strconv.FormatFloat(f, 'f', -1, 64) for finite values (shortest digits, no exponent)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    text = repr(f)
    if "e" in text or "E" in text:
        text = format(f, "f") if abs(f) >= 1 else f"{f:.{_decimals(f)}f}"
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _decimals(f: float) -> int:
    mantissa, _, exp = repr(f).partition("e")
    digits = len(mantissa.replace("-", "").replace(".", "")) - 1
    return max(0, digits - int(exp))


def to_json(value: Any) -> str:
    return orjson.dumps(_jsonable(raw(value))).decode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def string_like(value: Any) -> str | None:
    """A value as a string the way Concat and other string-like arguments read it (nil stays nil)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (PMap, PSlice, dict, list)):
        return to_json(value)
    return str(value)
