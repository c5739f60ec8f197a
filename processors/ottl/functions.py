"""The OTTL editors and converters otelpipe implements, with the Collector's names, arguments and semantics.

Each function declares its parameters; the compiler checks a call against them (count, names,
which arguments must be literals or paths) and hands `build` the compiled arguments. An editor
returns whether it changed the item (so an untouched request keeps its wire bytes); a converter
returns a value. Runtime problems (a wrong type) raise `OTTLRuntimeError`, which error_mode handles.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processors.ottl import prefilter
from processors.ottl.contexts import Accessor, TransformContext
from processors.ottl.prefilter import ALWAYS, Need
from processors.ottl.regex import Match, Pattern
from processors.ottl.values import (
    OTTLRuntimeError,
    PMap,
    PSlice,
    format_float,
    from_any,
    raw,
    string_like,
    to_any,
    to_json,
    type_name,
)

Getter = Callable[[TransformContext], Any]
Editor = Callable[[TransformContext], bool]

# Parameter kinds: "value" (any expression), "target" (a path that can be set), "map" (a path to
# a map), "string"/"int" (literals), "strings" (a list of string literals), "regex", "glob",
# "function" (a converter name such as SHA256), "values" (a list of expressions).


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: str
    optional: bool = False


@dataclass(slots=True)
class Arg:
    """A compiled argument: a getter, plus what the compiler knows statically."""

    get: Getter
    accessor: Accessor | None = None  # the argument is a path
    const: Any = None  # the literal value (for literal kinds)
    regex: Pattern | None = None
    function: Callable[[Any], Any] | None = None
    items: list[Arg] = field(default_factory=list)  # for "values"


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    params: tuple[Param, ...]
    build: Callable[[dict[str, Arg], str], Any]  # (args by name, statement text) → Editor | Getter
    need: Callable[[dict[str, Arg]], Need] = lambda args: ALWAYS
    returns_bool: bool = False
    doc: str = ""

    @property
    def editor(self) -> bool:
        return self.name[0].islower()

    def signature(self) -> str:
        return f"{self.name}(" + ", ".join(f"Optional[{p.name}]" if p.optional else p.name
                                           for p in self.params) + ")"


# -- helpers ---------------------------------------------------------------------------------------

def _map_of(arg: Arg, tc: TransformContext, fname: str) -> PMap:
    value = arg.get(tc)
    if isinstance(value, PMap):
        return value
    raise OTTLRuntimeError(f"{fname}: expected a map as target, got {type_name(value)}")


def _key_need(arg: Arg) -> Need:
    acc = arg.accessor
    return prefilter.lits(*acc.keys) if acc is not None else ALWAYS


_TEMPLATE_REF = re.compile(r"\$(\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def expand_template(template: str) -> Callable[[Match], str]:
    """Go's regexp.Expand: `$1`, `${1}`, `$name`, `${name}`; `$$` is a literal `$`; a group that does
    not exist expands to nothing."""
    parts: list[str | tuple[str]] = []
    pos = 0
    for m in _TEMPLATE_REF.finditer(template):
        parts.append(template[pos:m.start()])
        if m.group(1) == "$":
            parts.append("$")
        else:
            parts.append((m.group(2) or m.group(3),))
        pos = m.end()
    parts.append(template[pos:])

    def expand(match: Match) -> str:
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
                continue
            ref = p[0]
            try:
                g = match.group(int(ref) if ref.isdigit() else ref)
            except (IndexError, KeyError):
                g = None
            out.append(g or "")
        return "".join(out)

    return expand



def _replacement(args: dict[str, Arg], tc: TransformContext, fname: str) -> str:
    value = args["replacement"].get(tc)
    if not isinstance(value, str):
        raise OTTLRuntimeError(f"{fname}: replacement must be a string, got {type_name(value)}")
    return value


def _finish(args: dict[str, Arg], text: str) -> str:
    fn = args["function"].function if "function" in args else None
    if fn is not None:
        text = fn(text)
    fmt = args["replacementFormat"].const if "replacementFormat" in args else None
    if fmt is not None:
        text = fmt.replace("%s", text, 1)
    return text


def _regex_sub(args: dict[str, Arg], tc: TransformContext, fname: str) -> Callable[[str], str]:
    rx = args["regex"].regex
    assert rx is not None
    expand = expand_template(_replacement(args, tc, fname))
    return lambda s: rx.sub(lambda m: _finish(args, expand(m)), s)


# -- editors ---------------------------------------------------------------------------------------

def _set(args: dict[str, Arg], text: str) -> Editor:
    target = args["target"].accessor
    assert target is not None and target.set is not None
    setter = target.set
    value = args["value"].get

    def run(tc: TransformContext) -> bool:
        v = value(tc)
        if v is None:  # "If value resolves to nil, there will be no action."
            return False
        return setter(tc, v)

    return run


def _delete_key(args: dict[str, Arg], text: str) -> Editor:
    target, key = args["target"], args["key"].const

    def run(tc: TransformContext) -> bool:
        return _map_of(target, tc, "delete_key").delete(key)

    return run


def _delete_matching_keys(args: dict[str, Arg], text: str) -> Editor:
    target, rx = args["target"], args["pattern"].regex
    assert rx is not None
    search = rx.search

    def run(tc: TransformContext) -> bool:
        return _map_of(target, tc, "delete_matching_keys").delete_where(lambda k: search(k) is not None)

    return run


def _keep_keys(args: dict[str, Arg], text: str) -> Editor:
    target, keep = args["target"], frozenset(args["keys"].const)

    def run(tc: TransformContext) -> bool:
        return _map_of(target, tc, "keep_keys").delete_where(lambda k: k not in keep)

    return run


def _limit(args: dict[str, Arg], text: str) -> Editor:
    target, limit = args["target"], args["limit"].const
    priority = tuple(args["priority_keys"].const)

    def run(tc: TransformContext) -> bool:
        m = _map_of(target, tc, "limit")
        if len(m) <= limit:
            return False
        keep = {k for k in priority if m.find(k) is not None}
        for k in m.keys():  # then the others, in order, until the limit
            if len(keep) >= limit:
                break
            keep.add(k)
        return m.delete_where(lambda k: k not in keep)

    return run


def truncate_utf8(s: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, never cutting a character."""
    b = s.encode()
    if len(b) <= limit:
        return s
    return b[:limit].decode("utf-8", "ignore")


def _truncate_all(args: dict[str, Arg], text: str) -> Editor:
    target, limit = args["target"], args["limit"].const

    def run(tc: TransformContext) -> bool:
        changed = False
        for kv in _map_of(target, tc, "truncate_all").kvs:
            v = kv.value
            if v.WhichOneof("value") == "string_value" and len(v.string_value) > limit // 4:
                cut = truncate_utf8(v.string_value, limit)
                if cut != v.string_value:
                    v.string_value = cut
                    changed = True
        return changed

    return run


def _replace_pattern(args: dict[str, Arg], text: str) -> Editor:
    target = args["target"].accessor
    assert target is not None and target.set is not None
    getter, setter = target.get, target.set
    rx = args["regex"].regex
    assert rx is not None

    def run(tc: TransformContext) -> bool:
        value = getter(tc)
        if not isinstance(value, str) or rx.search(value) is None:
            return False
        return setter(tc, _regex_sub(args, tc, "replace_pattern")(value))

    return run


def _replace_all_patterns(args: dict[str, Arg], text: str) -> Editor:
    target, mode, rx = args["target"], args["mode"].const, args["regex"].regex
    assert rx is not None

    def run(tc: TransformContext) -> bool:
        m = _map_of(target, tc, "replace_all_patterns")
        changed = False
        sub: Callable[[str], str] | None = None
        if mode == "value":
            for kv in m.kvs:
                v = kv.value
                if v.WhichOneof("value") == "string_value" and rx.search(v.string_value) is not None:
                    sub = sub or _regex_sub(args, tc, "replace_all_patterns")
                    new = sub(v.string_value)
                    if new != v.string_value:
                        v.string_value = new
                        changed = True
            return changed
        renames = [(kv.key, kv) for kv in m.kvs if rx.search(kv.key) is not None]
        if not renames:
            return False
        sub = _regex_sub(args, tc, "replace_all_patterns")
        for old, kv in renames:
            new_key = sub(old)
            if new_key != old:
                value = from_any(kv.value)
                value = raw(value) if isinstance(value, (PMap, PSlice)) else value
                m.delete(old)
                m.put(new_key, value)
                changed = True
        return changed

    return run


def _glob_replacement(args: dict[str, Arg], tc: TransformContext, fname: str) -> str:
    return _finish(args, _replacement(args, tc, fname))


def _replace_match(args: dict[str, Arg], text: str) -> Editor:
    target = args["target"].accessor
    assert target is not None and target.set is not None
    getter, setter = target.get, target.set
    rx = args["pattern"].regex
    assert rx is not None

    def run(tc: TransformContext) -> bool:
        value = getter(tc)
        if not isinstance(value, str) or rx.fullmatch(value) is None:
            return False
        return setter(tc, _glob_replacement(args, tc, "replace_match"))

    return run


def _replace_all_matches(args: dict[str, Arg], text: str) -> Editor:
    target, rx = args["target"], args["pattern"].regex
    assert rx is not None

    def run(tc: TransformContext) -> bool:
        changed = False
        for kv in _map_of(target, tc, "replace_all_matches").kvs:
            v = kv.value
            if v.WhichOneof("value") == "string_value" and rx.fullmatch(v.string_value) is not None:
                new = _glob_replacement(args, tc, "replace_all_matches")
                if new != v.string_value:
                    v.string_value = new
                    changed = True
        return changed

    return run


def _merge_maps(args: dict[str, Arg], text: str) -> Editor:
    target, source, strategy = args["target"], args["source"].get, args["strategy"].const

    def run(tc: TransformContext) -> bool:
        m = _map_of(target, tc, "merge_maps")
        src = source(tc)
        if isinstance(src, PMap):
            pairs = [(k, raw(v)) for k, v in src.items()]
        elif isinstance(src, dict):
            pairs = [(str(k), raw(v)) for k, v in src.items()]
        else:
            raise OTTLRuntimeError(f"merge_maps: expected a map as source, got {type_name(src)}")
        changed = False
        for k, v in pairs:
            exists = m.find(k) is not None
            if (strategy == "insert" and exists) or (strategy == "update" and not exists):
                continue
            changed |= m.put(k, v)
        return changed

    return run


# -- converters ------------------------------------------------------------------------------------

def _is_match(args: dict[str, Arg], text: str) -> Getter:
    target, rx = args["target"].get, args["pattern"].regex
    assert rx is not None
    search = rx.search

    def run(tc: TransformContext) -> bool:
        v = target(tc)
        if v is None:
            return False
        if not isinstance(v, str):
            v = _is_match_string(v)
        return search(v) is not None

    return run


def _is_match_string(v: Any) -> str:
    import base64
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, (PMap, PSlice, dict, list)):
        return to_json(v)
    return string_like(v) or ""


def _concat(args: dict[str, Arg], text: str) -> Getter:
    items = [a.get for a in args["vals"].items]
    delim = args["delimiter"].const

    def run(tc: TransformContext) -> str:
        parts = []
        for g in items:
            s = string_like(g(tc))
            parts.append("<nil>" if s is None else s)
        return str(delim).join(parts)

    return run


def _string_arg(v: Any, fname: str) -> str:
    if not isinstance(v, str):
        raise OTTLRuntimeError(f"{fname}: expected a string, got {type_name(v)}")
    return v


def _split(args: dict[str, Arg], text: str) -> Getter:
    target, delim = args["target"].get, args["delimiter"].const

    def run(tc: TransformContext) -> list[str]:
        s = _string_arg(target(tc), "Split")
        if delim == "":
            return list(s)
        return s.split(delim)

    return run


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _sha256(args: dict[str, Arg], text: str) -> Getter:
    value = args["value"].get
    return lambda tc: sha256_hex(_string_arg(value(tc), "SHA256"))


def to_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return None
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip(), 10) if re.fullmatch(r"[+-]?[0-9]+", v.strip()) else None
        except ValueError:
            return None
    return None


def to_double(v: Any) -> float | None:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def to_string(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float):
        return format_float(v)
    return string_like(v)


def _len(args: dict[str, Arg], text: str) -> Getter:
    target = args["target"].get

    def run(tc: TransformContext) -> int:
        v = target(tc)
        if isinstance(v, str):
            return len(v.encode())
        if isinstance(v, (PMap, PSlice, dict, list, bytes)):
            return len(v)
        raise OTTLRuntimeError(f"Len: expected a string, slice or map, got {type_name(v)}")

    return run


def _unary(fn: Callable[[Any], Any]) -> Callable[[dict[str, Arg], str], Getter]:
    def build(args: dict[str, Arg], text: str) -> Getter:
        value = args["value"].get
        return lambda tc: fn(value(tc))
    return build


# -- the table ------------------------------------------------------------------------------------

def _regex_need(args: dict[str, Arg], key: str = "regex") -> Need:
    return prefilter.and_(_key_need(args["target"]), prefilter.regex_literals(args[key].const))


def _glob_need(args: dict[str, Arg]) -> Need:
    return prefilter.and_(_key_need(args["target"]), prefilter.glob_literals(args["pattern"].const))


def _delete_key_need(args: dict[str, Arg]) -> Need:
    acc = args["target"].accessor
    if acc is None or not acc.is_map:  # a keyed map path errors on nil: let it run
        return ALWAYS
    return prefilter.lits(args["key"].const)


def _map_only(need: Callable[[dict[str, Arg]], Need]) -> Callable[[dict[str, Arg]], Need]:
    def wrapped(args: dict[str, Arg]) -> Need:
        acc = args["target"].accessor
        return need(args) if acc is not None and acc.is_map else ALWAYS
    return wrapped


_FN = Param("function", "function", optional=True)
_FMT = Param("replacementFormat", "string", optional=True)

FUNCTIONS: dict[str, Function] = {f.name: f for f in (
    Function("set", (Param("target", "target"), Param("value", "value")), _set,
             doc="sets a field; a nil value does nothing"),
    Function("delete_key", (Param("target", "map"), Param("key", "string")), _delete_key, _delete_key_need,
             doc="removes one key from a map"),
    Function("delete_matching_keys", (Param("target", "map"), Param("pattern", "regex")), _delete_matching_keys,
             _map_only(lambda a: prefilter.regex_literals(a["pattern"].const)),
             doc="removes the keys matching a regex"),
    Function("keep_keys", (Param("target", "map"), Param("keys", "strings")), _keep_keys,
             doc="keeps only the listed keys"),
    Function("limit", (Param("target", "map"), Param("limit", "int"), Param("priority_keys", "strings")), _limit,
             doc="keeps at most `limit` entries, the priority keys first"),
    Function("truncate_all", (Param("target", "map"), Param("limit", "int")), _truncate_all,
             doc="truncates string values to `limit` bytes (never inside a UTF-8 character)"),
    Function("replace_pattern", (Param("target", "target"), Param("regex", "regex"), Param("replacement", "value"),
                                 _FN, _FMT), _replace_pattern, _regex_need,
             doc="replaces regex matches in a string (`$1`/`${name}` groups)"),
    Function("replace_all_patterns", (Param("target", "map"), Param("mode", "string"), Param("regex", "regex"),
                                      Param("replacement", "value"), _FN, _FMT), _replace_all_patterns,
             _map_only(lambda a: prefilter.regex_literals(a["regex"].const)),
             doc="replaces regex matches in every string value (`mode: value`) or key (`key`) of a map"),
    Function("replace_match", (Param("target", "target"), Param("pattern", "glob"), Param("replacement", "value"),
                               _FN, _FMT), _replace_match, _glob_need,
             doc="replaces a whole string matching a glob"),
    Function("replace_all_matches", (Param("target", "map"), Param("pattern", "glob"), Param("replacement", "value"),
                                     _FN, _FMT), _replace_all_matches,
             _map_only(lambda a: prefilter.glob_literals(a["pattern"].const)),
             doc="replaces every string value of a map matching a glob"),
    Function("merge_maps", (Param("target", "map"), Param("source", "value"), Param("strategy", "string")),
             _merge_maps, doc="merges a map into another: `insert`, `update` or `upsert`"),
    Function("IsMatch", (Param("target", "value"), Param("pattern", "regex")), _is_match, returns_bool=True,
             doc="whether a value (as a string) matches a regex"),
    Function("Concat", (Param("vals", "values"), Param("delimiter", "string")), _concat,
             doc="joins values as strings (nil as `<nil>`)"),
    Function("Split", (Param("target", "value"), Param("delimiter", "string")), _split,
             doc="splits a string into a slice"),
    Function("SHA256", (Param("value", "value"),), _sha256, doc="hex SHA-256 of a string"),
    Function("Int", (Param("value", "value"),), _unary(to_int),
             doc="an int from a double (truncated), a string, a bool; nil otherwise"),
    Function("Double", (Param("value", "value"),), _unary(to_double),
             doc="a double from an int, a string, a bool; nil otherwise"),
    Function("String", (Param("value", "value"),), _unary(to_string),
             doc="a string: bytes as hex, maps and slices as JSON"),
    Function("Len", (Param("target", "value"),), _len,
             doc="length of a string (bytes), slice or map"),
)}
#: Converters that can be passed by name as the `function` argument of the replace_* editors.
STRING_FUNCTIONS: dict[str, Callable[[Any], Any]] = {"SHA256": lambda s: sha256_hex(_string_arg(s, "SHA256"))}

EDITORS = sorted(n for n in FUNCTIONS if n[0].islower())
CONVERTERS = sorted(n for n in FUNCTIONS if n[0].isupper())


def needs(fn: Function, args: dict[str, Arg]) -> Need:
    """The prefilter requirement of a call (ALWAYS when it cannot be told from the bytes)."""
    if fn.name in ("replace_pattern", "replace_match") and args["target"].accessor is not None:
        acc = args["target"].accessor
        # only strings are replaced, so a string-valued path is safe; keyed paths on any value too
        if not (acc.verbatim or acc.string_typed):
            return ALWAYS
    return fn.need(args)


# exported for tests and the README table
__all__ = ["CONVERTERS", "EDITORS", "FUNCTIONS", "STRING_FUNCTIONS", "Arg", "Function", "Param", "needs",
           "to_any"]
