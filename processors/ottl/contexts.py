"""OTTL contexts: which paths each context offers and how they read and write the protobuf request.

A statement runs in one context (resource, scope, span, spanevent, metric, datapoint or log) once
per item of that kind; from there it can also reach the contexts above it (a span statement can
read `resource.attributes` and `scope.name`). Paths start with a context name (`span.name`), as the
Collector's current OTTL writes them; in a group with an explicit `context:`, a path without one is
read in that context (`attributes["k"]` in `context: span` is `span.attributes["k"]`), as older
Collector configs write them.

Each path compiles to an `Accessor`: a getter and (when the field can be written) a setter, both
closures over a `TransformContext` (the current resource, scope and item), plus what the prefilter
needs to know (whether a string value lies verbatim in the wire bytes, the static map keys).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from processors.ottl.grammar import Literal, OTTLError, Path
from processors.ottl.values import (
    INT64_MAX,
    INT64_MIN,
    OTTLRuntimeError,
    PMap,
    PSlice,
    from_any,
    same,
    to_any,
    type_name,
)

#: Contexts by signal, most specific first (the Collector's inference priority).
SIGNAL_CONTEXTS: dict[str, tuple[str, ...]] = {
    "traces": ("spanevent", "span", "resource", "scope"),
    "metrics": ("datapoint", "metric", "resource", "scope"),
    "logs": ("log", "resource", "scope"),
}
#: What each context can reach: itself and the contexts above it.
REACHABLE: dict[str, tuple[str, ...]] = {
    "resource": ("resource",),
    "scope": ("scope", "resource"),
    "span": ("span", "scope", "resource"),
    "spanevent": ("spanevent", "span", "scope", "resource"),
    "metric": ("metric", "scope", "resource"),
    "datapoint": ("datapoint", "metric", "scope", "resource"),
    "log": ("log", "scope", "resource"),
}
PRIORITY = ("log", "datapoint", "metric", "spanevent", "span", "resource", "scope")
ALIASES = {"instrumentation_scope": "scope"}
ALL_CONTEXTS = frozenset(REACHABLE)

ENUMS: dict[str, int] = {
    **{f"SPAN_KIND_{k}": i for i, k in enumerate(
        ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"))},
    **{f"STATUS_CODE_{k}": i for i, k in enumerate(("UNSET", "OK", "ERROR"))},
    **{f"METRIC_DATA_TYPE_{k}": i for i, k in enumerate(
        ("NONE", "GAUGE", "SUM", "HISTOGRAM", "EXPONENTIAL_HISTOGRAM", "SUMMARY"))},
    **{f"AGGREGATION_TEMPORALITY_{k}": i for i, k in enumerate(("UNSPECIFIED", "DELTA", "CUMULATIVE"))},
    "SEVERITY_NUMBER_UNSPECIFIED": 0,
    **{f"SEVERITY_NUMBER_{lvl}{'' if n == 1 else n}": 1 + 4 * i + n - 1
       for i, lvl in enumerate(("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")) for n in range(1, 5)},
    "FLAG_NONE": 0,
    "FLAG_NO_RECORDED_VALUE": 1,
}


class TransformContext:
    """Where a statement is running: the current resource and scope (with their containers, for
    `schema_url`) and the current item; fields below the statement's context are None."""

    __slots__ = ("resource", "resource_container", "scope", "scope_container", "span", "event", "metric",
                 "point", "log")

    def __init__(self) -> None:
        self.resource: Any = None
        self.resource_container: Any = None
        self.scope: Any = None
        self.scope_container: Any = None
        self.span: Any = None
        self.event: Any = None
        self.metric: Any = None
        self.point: Any = None
        self.log: Any = None


_OBJ = {"resource": "resource", "scope": "scope", "span": "span", "spanevent": "event", "metric": "metric",
        "datapoint": "point", "log": "log"}

Getter = Callable[[TransformContext], Any]
Setter = Callable[[TransformContext, Any], bool]


@dataclass(frozen=True, slots=True)
class Accessor:
    """A compiled path."""

    text: str
    get: Getter
    set: Setter | None
    verbatim: bool = False  # a string value of this path is stored as UTF-8 in the request bytes
    string_typed: bool = False  # the path always holds a string (never a number, map...)
    keys: tuple[str, ...] = ()  # static string keys along the path (they too are in the bytes)
    is_map: bool = False  # the path is a whole attribute map
    kvs: Getter | None = None  # for a map field: its repeated KeyValue container (the fast path of [key])


# -- field tables ---------------------------------------------------------------------------------
# kind: "str" (verbatim string), "int", "bool", "bytes", "map" (attribute map), "any" (AnyValue body),
# "enum_int" (an int holding an enum), plus special handlers.

@dataclass(frozen=True, slots=True)
class Field:
    attr: str  # protobuf attribute path from the context object, dotted
    kind: str


_COMMON_MAP = {"attributes": Field("attributes", "map"),
               "dropped_attributes_count": Field("dropped_attributes_count", "int")}

FIELDS: dict[str, dict[str, Field]] = {
    "resource": {**_COMMON_MAP, "schema_url": Field("schema_url", "schema")},
    "scope": {**_COMMON_MAP, "name": Field("name", "str"), "version": Field("version", "str"),
              "schema_url": Field("schema_url", "schema")},
    "span": {
        **_COMMON_MAP,
        "trace_id": Field("trace_id", "bytes16"), "trace_id.string": Field("trace_id", "hex16"),
        "span_id": Field("span_id", "bytes8"), "span_id.string": Field("span_id", "hex8"),
        "parent_span_id": Field("parent_span_id", "bytes8"),
        "parent_span_id.string": Field("parent_span_id", "hex8"),
        "trace_state": Field("trace_state", "tracestate"),
        "name": Field("name", "str"), "kind": Field("kind", "enum_int"),
        "start_time_unix_nano": Field("start_time_unix_nano", "uint"),
        "end_time_unix_nano": Field("end_time_unix_nano", "uint"),
        "dropped_events_count": Field("dropped_events_count", "int"),
        "dropped_links_count": Field("dropped_links_count", "int"),
        "status.code": Field("status.code", "enum_int"), "status.message": Field("status.message", "str"),
        "flags": Field("flags", "int"),
    },
    "spanevent": {**_COMMON_MAP, "name": Field("name", "str"), "time_unix_nano": Field("time_unix_nano", "uint")},
    "metric": {
        "name": Field("name", "str"), "description": Field("description", "str"), "unit": Field("unit", "str"),
        "type": Field("", "metric_type"),
        "aggregation_temporality": Field("", "temporality"), "is_monotonic": Field("", "monotonic"),
        "metadata": Field("metadata", "map"),
    },
    "datapoint": {
        "attributes": Field("attributes", "map"),
        "start_time_unix_nano": Field("start_time_unix_nano", "uint"),
        "time_unix_nano": Field("time_unix_nano", "uint"),
        "value_double": Field("as_double", "point_double"), "value_int": Field("as_int", "point_int"),
        "count": Field("count", "point_count"), "sum": Field("sum", "point_sum"),
        "flags": Field("flags", "int"),
    },
    "log": {
        **_COMMON_MAP,
        "time_unix_nano": Field("time_unix_nano", "uint"),
        "observed_time_unix_nano": Field("observed_time_unix_nano", "uint"),
        "severity_number": Field("severity_number", "enum_int"), "severity_text": Field("severity_text", "str"),
        "body": Field("body", "any"), "body.string": Field("body", "body_string"),
        "flags": Field("flags", "int"), "event_name": Field("event_name", "str"),
        "trace_id": Field("trace_id", "bytes16"), "trace_id.string": Field("trace_id", "hex16"),
        "span_id": Field("span_id", "bytes8"), "span_id.string": Field("span_id", "hex8"),
    },
}
KEYABLE = frozenset({"map", "any", "tracestate"})


def supported_paths(context: str) -> list[str]:
    """`span.name`, `span.attributes[...]`... for error messages and the README table."""
    out = []
    for name, f in FIELDS[context].items():
        out.append(f"{context}.{name}" + ("[...]" if f.kind in KEYABLE else ""))
    return out


# -- compiling a path -----------------------------------------------------------------------------

def compile_path(path: Path, context: str, explicit: bool, key_getter: Callable[[Any], Getter]) -> Accessor:
    """The accessor of `path` in a statement running in `context`.

    `explicit`: the group named its context, so a path without a context prefix is read in it.
    `key_getter` compiles a key expression (`attributes[Concat(...)]`) to a getter.
    """
    text = _path_text(path)
    segs = path.segments
    first = ALIASES.get(segs[0].name, segs[0].name)
    if first in ALL_CONTEXTS:
        if first not in REACHABLE[context]:
            raise OTTLError("", path.col, f"path {text!r} is not available in the {context} context "
                                          f"(it can read {', '.join(REACHABLE[context])} paths)")
        if segs[0].keys:
            raise OTTLError("", path.col, f"{first!r} cannot be indexed; name a field, e.g. {first}.attributes[...]")
        target, rest = first, segs[1:]
        if not rest:
            raise OTTLError("", path.col, f"path {text!r} names a context, not a field; "
                                          f"{first} supports: {', '.join(supported_paths(first))}")
    elif explicit:
        target, rest = context, segs
    else:
        raise OTTLError("", path.col, f"path {text!r} must start with a context name "
                                      f"({', '.join(sorted(ALL_CONTEXTS))}), e.g. {context}.{text}, or the group "
                                      "must name its `context`")
    # The longest dotted field name that the table knows (`status.code`, `trace_id.string`).
    table = FIELDS[target]
    field_name = None
    used = 0
    for n in range(len(rest), 0, -1):
        cand = ".".join(s.name for s in rest[:n])
        if cand in table and all(not s.keys for s in rest[:n - 1]):
            field_name, used = cand, n
            break
    if field_name is None:
        raise OTTLError("", rest[0].col, f"unsupported path {text!r}: the {target} context supports "
                                         f"{', '.join(supported_paths(target))}")
    if used < len(rest):
        raise OTTLError("", rest[used].col, f"unsupported path {text!r}: {target}.{field_name} has no field "
                                            f"{rest[used].name!r}")
    spec = table[field_name]
    keys = rest[used - 1].keys
    if keys and spec.kind not in KEYABLE:
        raise OTTLError("", rest[used - 1].col, f"{target}.{field_name} cannot be indexed with [...]")
    base = _base(target, spec)
    if not keys:
        return base
    static = tuple(k.value for k in keys if isinstance(k, Literal) and isinstance(k.value, str))
    getters = [key_getter(k) for k in keys]
    return _keyed(base, getters, text, static, spec.kind == "tracestate")


def _path_text(path: Path) -> str:
    return ".".join(s.name + "[...]" * len(s.keys) for s in path.segments)


def _base(target: str, spec: Field) -> Accessor:
    obj = _OBJ[target]
    text = f"{target}.{spec.attr}"
    kind = spec.kind
    if kind == "map":
        get_kvs = attrgetter(f"{obj}.{spec.attr}")

        def get_map(tc: TransformContext) -> Any:
            return PMap(get_kvs(tc))

        def set_map(tc: TransformContext, value: Any) -> bool:
            if not isinstance(value, (PMap, dict)):
                return False
            return PMap(get_kvs(tc)).replace(value)

        return Accessor(text, get_map, set_map, is_map=True, kvs=get_kvs)
    if kind == "str":
        dotted = f"{obj}.{spec.attr}"
        getter = attrgetter(dotted)
        owner, _, attr = dotted.rpartition(".")
        owner_get = attrgetter(owner)

        def set_str(tc: TransformContext, value: Any) -> bool:
            if not isinstance(value, str):
                return False
            o = owner_get(tc)
            if getattr(o, attr) == value:
                return False
            setattr(o, attr, value)
            return True

        return Accessor(text, getter, set_str, verbatim=True, string_typed=True)
    if kind in ("int", "uint", "enum_int"):
        dotted = f"{obj}.{spec.attr}"
        getter = attrgetter(dotted)
        owner, _, attr = dotted.rpartition(".")
        owner_get = attrgetter(owner)
        lo = 0 if kind == "uint" else INT64_MIN

        def set_int(tc: TransformContext, value: Any) -> bool:
            if isinstance(value, bool) or not isinstance(value, int):
                return False
            o = owner_get(tc)
            if getattr(o, attr) == value:
                return False
            if not lo <= value <= INT64_MAX:
                raise OTTLRuntimeError(f"{value} is out of range for {text}")
            try:
                setattr(o, attr, value)
            except ValueError as e:  # a uint32/int32 field, or an enum out of range
                raise OTTLRuntimeError(f"{value} is out of range for {text}: {e}") from None
            return True

        return Accessor(text, getter, set_int)
    if kind in ("bytes16", "bytes8", "hex16", "hex8"):
        return _id_accessor(obj, spec, text)
    if kind == "tracestate":
        return _tracestate_accessor(obj, text)
    if kind == "any":
        get_any = attrgetter(f"{obj}.{spec.attr}")

        def get_body(tc: TransformContext) -> Any:
            return from_any(get_any(tc))

        def set_body(tc: TransformContext, value: Any) -> bool:
            av = get_any(tc)
            if same(from_any(av), value):
                return False
            to_any(av, value)
            return True

        return Accessor(text, get_body, set_body, verbatim=True)
    if kind == "body_string":
        from processors.ottl.values import string_like
        get_any = attrgetter(f"{obj}.{spec.attr}")
        return Accessor(text + ".string", lambda tc: string_like(from_any(get_any(tc))) or "", None)
    if kind == "schema":
        container = "resource_container" if target == "resource" else "scope_container"
        return _str_on(container, "schema_url", text)
    if kind.startswith("point_"):
        return _point_accessor(obj, spec, text)
    return _metric_accessor(spec, text)


def _str_on(holder: str, attr: str, text: str) -> Accessor:
    get_holder = attrgetter(holder)

    def get(tc: TransformContext) -> Any:
        return getattr(get_holder(tc), attr)

    def set_(tc: TransformContext, value: Any) -> bool:
        o = get_holder(tc)
        if not isinstance(value, str) or getattr(o, attr) == value:
            return False
        setattr(o, attr, value)
        return True

    return Accessor(text, get, set_, verbatim=True, string_typed=True)


def _id_accessor(obj: str, spec: Field, text: str) -> Accessor:
    getter = attrgetter(f"{obj}.{spec.attr}")
    owner_get = attrgetter(obj)
    size = 16 if spec.kind.endswith("16") else 8
    attr = spec.attr
    if spec.kind.startswith("hex"):
        def get_hex(tc: TransformContext) -> Any:
            return bytes(getter(tc)).hex()

        def set_hex(tc: TransformContext, value: Any) -> bool:
            if not isinstance(value, str):
                return False
            try:
                b = bytes.fromhex(value)
            except ValueError:
                raise OTTLRuntimeError(f"{text} takes a hex string, and this one is not") from None
            if len(b) != size:
                raise OTTLRuntimeError(f"{text} takes {size * 2} hex digits, got {len(value)}")
            o = owner_get(tc)
            if getattr(o, attr) == b:
                return False
            setattr(o, attr, b)
            return True

        return Accessor(text + ".string", get_hex, set_hex)

    def set_bytes(tc: TransformContext, value: Any) -> bool:
        if not isinstance(value, bytes):
            return False
        if len(value) != size:
            raise OTTLRuntimeError(f"{text} takes {size} bytes, got {len(value)}")
        o = owner_get(tc)
        if getattr(o, attr) == value:
            return False
        setattr(o, attr, value)
        return True

    return Accessor(text, getter, set_bytes)


def _tracestate_members(text: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        k, sep, v = part.strip().partition("=")
        if sep and k:
            out.append((k, v))
    return out


def _tracestate_accessor(obj: str, text: str) -> Accessor:
    getter = attrgetter(f"{obj}.trace_state")
    owner_get = attrgetter(obj)

    def set_(tc: TransformContext, value: Any) -> bool:
        o = owner_get(tc)
        if not isinstance(value, str) or o.trace_state == value:
            return False
        o.trace_state = value
        return True

    return Accessor(text, getter, set_, verbatim=True, string_typed=True)


def _point_accessor(obj: str, spec: Field, text: str) -> Accessor:
    """value_double / value_int (number points), count / sum (histograms and summaries)."""
    get_point = attrgetter(obj)
    attr = spec.attr
    kind = spec.kind

    def get(tc: TransformContext) -> Any:
        p = get_point(tc)
        if kind in ("point_double", "point_int"):
            if not hasattr(p, "as_int"):
                return None
            which = p.WhichOneof("value")
            return getattr(p, attr) if which == attr else (0.0 if kind == "point_double" else 0)
        return getattr(p, attr) if hasattr(p, attr) else None

    def set_(tc: TransformContext, value: Any) -> bool:
        p = get_point(tc)
        if not hasattr(p, attr) or isinstance(value, bool):
            return False
        if kind == "point_double" or (kind == "point_sum"):
            if not isinstance(value, (int, float)):
                return False
            value = float(value)
        elif not isinstance(value, int):
            return False
        elif kind == "point_count" and value < 0:
            raise OTTLRuntimeError(f"{text} cannot be negative")
        if kind in ("point_double", "point_int") and p.WhichOneof("value") != attr:
            setattr(p, attr, value)
            return True
        if getattr(p, attr) == value:
            return False
        setattr(p, attr, value)
        return True

    return Accessor(text, get, set_)


_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def _metric_accessor(spec: Field, text: str) -> Accessor:
    """metric.type (read only), aggregation_temporality and is_monotonic (where the data has them)."""
    kind = spec.kind

    def data(tc: TransformContext) -> Any:
        m = tc.metric
        which = m.WhichOneof("data")
        return None if which is None else getattr(m, which)

    if kind == "metric_type":
        def get_type(tc: TransformContext) -> Any:
            which = tc.metric.WhichOneof("data")
            return 0 if which is None else _KINDS.index(which) + 1

        return Accessor(text, get_type, None)
    attr = "aggregation_temporality" if kind == "temporality" else "is_monotonic"
    want: type = int if kind == "temporality" else bool

    def get(tc: TransformContext) -> Any:
        d = data(tc)
        if d is None or not hasattr(d, attr):
            return 0 if want is int else False
        return getattr(d, attr)

    def set_(tc: TransformContext, value: Any) -> bool:
        d = data(tc)
        if d is None or not hasattr(d, attr) or type(value) is not want or getattr(d, attr) == value:
            return False
        try:
            setattr(d, attr, value)
        except ValueError as e:
            raise OTTLRuntimeError(f"{value} is out of range for {text}: {e}") from None
        return True

    return Accessor(text, get, set_)


def _index(container: Any, key: Any, text: str) -> Any:
    if isinstance(container, PMap):
        if not isinstance(key, str):
            raise OTTLRuntimeError(f"{text}: a map is indexed by a string, not {type_name(key)}")
        return container.get(key)
    if isinstance(container, dict):
        return container.get(key) if isinstance(key, str) else None
    if isinstance(container, (PSlice, list)):
        if isinstance(key, bool) or not isinstance(key, int):
            raise OTTLRuntimeError(f"{text}: a slice is indexed by an int, not {type_name(key)}")
        if not 0 <= key < len(container):
            raise OTTLRuntimeError(f"{text}: index {key} out of bounds for a slice of {len(container)}")
        return container.get(key) if isinstance(container, PSlice) else container[key]
    if container is None:
        return None
    raise OTTLRuntimeError(f"{text}: cannot index a value that is not a map or a slice")


def _static_key(get_kvs: Getter, key: str, text: str) -> Accessor:
    """`attributes["key"]`, the most common path: a scan of the KeyValue list, no wrapper objects."""

    def get(tc: TransformContext) -> Any:
        for kv in get_kvs(tc):
            if kv.key == key:
                return from_any(kv.value)
        return None

    def set_(tc: TransformContext, value: Any) -> bool:
        if value is None:
            return False
        kvs = get_kvs(tc)
        for kv in kvs:
            if kv.key == key:
                if same(from_any(kv.value), value):
                    return False
                to_any(kv.value, value)
                return True
        kv = kvs.add()
        kv.key = key
        to_any(kv.value, value)
        return True

    return Accessor(text, get, set_, verbatim=True, keys=(key,))


def _keyed(base: Accessor, keys: list[Getter], text: str, static: tuple[str, ...], tracestate: bool) -> Accessor:
    if tracestate:
        if len(keys) != 1:
            raise OTTLError("", 1, f"{text}: trace_state takes one key")
        key_get = keys[0]

        def get_member(tc: TransformContext) -> Any:
            key = key_get(tc)
            for k, v in _tracestate_members(base.get(tc) or ""):
                if k == key:
                    return v
            return None

        def set_member(tc: TransformContext, value: Any) -> bool:
            key = key_get(tc)
            if not isinstance(value, str) or not isinstance(key, str):
                return False
            members = [(k, v) for k, v in _tracestate_members(base.get(tc) or "") if k != key]
            return base.set(tc, ",".join(f"{k}={v}" for k, v in [(key, value), *members])) \
                if base.set is not None else False

        return Accessor(text, get_member, set_member, verbatim=True, keys=static)
    base_get = base.get
    if base.kvs is not None and len(static) == 1 and len(keys) == 1:
        return _static_key(base.kvs, static[0], text)
    if len(keys) == 1:
        key_get = keys[0]

        def get_one(tc: TransformContext) -> Any:
            container = base_get(tc)
            key = key_get(tc)
            if isinstance(container, PMap) and isinstance(key, str):
                for kv in container.kvs:
                    if kv.key == key:
                        return from_any(kv.value)
                return None
            return _index(container, key, text)
        getter: Getter = get_one
    else:
        def get_many(tc: TransformContext) -> Any:
            value = base_get(tc)
            for k in keys:
                value = _index(value, k(tc), text)
                if value is None:
                    return None
            return value
        getter = get_many

    def set_(tc: TransformContext, value: Any) -> bool:
        if value is None:
            return False
        container = base_get(tc)
        if container is None and base.set is not None:  # an empty body becomes a map
            base.set(tc, {})
            container = base_get(tc)
        for k in keys[:-1]:
            key = k(tc)
            if isinstance(container, PMap) and isinstance(key, str):
                kv = container.find(key)
                if kv is None or kv.value.WhichOneof("value") not in ("kvlist_value", "array_value"):
                    if kv is not None and kv.value.WhichOneof("value") is not None:
                        raise OTTLRuntimeError(f"{text}: the value at a key on the way is not a map")
                    if kv is None:
                        kv = container.kvs.add()  # type: ignore[attr-defined]
                        kv.key = key
                    kv.value.kvlist_value.SetInParent()
                container = from_any(kv.value)
            else:
                container = _index(container, key, text)
        last = keys[-1](tc)
        if isinstance(container, PMap):
            if not isinstance(last, str):
                raise OTTLRuntimeError(f"{text}: a map is indexed by a string, not {type_name(last)}")
            return container.put(last, value)
        if isinstance(container, PSlice):
            if isinstance(last, bool) or not isinstance(last, int):
                raise OTTLRuntimeError(f"{text}: a slice is indexed by an int, not {type_name(last)}")
            return container.set(last, value)
        raise OTTLRuntimeError(f"{text}: cannot set a key on a value that is not a map or a slice")

    return Accessor(text, getter, set_, verbatim=True, keys=static)
