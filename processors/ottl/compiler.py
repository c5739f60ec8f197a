"""Statements and conditions compiled to Python closures, checked against what otelpipe supports.

Compiling resolves every path in the statement's context, looks every function up, checks its
arguments, and works out the statement's prefilter requirement (`prefilter.Need`). Anything
unsupported is an `OTTLError` naming the column and what is supported, so `otelpipe validate`
reports it with the key path and the statement.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.ottl import prefilter
from processors.ottl.contexts import ALIASES, ALL_CONTEXTS, ENUMS, Accessor, TransformContext, compile_path
from processors.ottl.functions import (
    CONVERTERS,
    EDITORS,
    FUNCTIONS,
    STRING_FUNCTIONS,
    Arg,
    Function,
    needs,
)
from processors.ottl.grammar import (
    BoolOp,
    Call,
    Compare,
    Condition,
    Enum,
    Expr,
    Group,
    ListExpr,
    Literal,
    MapExpr,
    Math,
    Not,
    OTTLError,
    Path,
    Statement,
)
from processors.ottl.prefilter import ALWAYS, NEVER, Need
from processors.ottl.regex import Pattern, compile_re2
from processors.ottl.values import OTTLRuntimeError, compare, type_name

Getter = Callable[[TransformContext], Any]
Test = Callable[[TransformContext], bool]


@dataclass(frozen=True, slots=True)
class CompiledStatement:
    text: str
    run: Callable[[TransformContext], bool]  # the editor: whether it changed the item
    where: Test | None
    need: Need


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    text: str
    test: Test
    need: Need


def referenced_contexts(node: Statement | Condition | Expr | Call) -> dict[str, int]:
    """The context names that paths in `node` start with, with the column of the first such path."""
    out: dict[str, int] = {}

    def walk(n: Any) -> None:
        if isinstance(n, Path):
            first = ALIASES.get(n.segments[0].name, n.segments[0].name)
            if first in ALL_CONTEXTS:
                out.setdefault(first, n.col)
            for s in n.segments:
                for k in s.keys:
                    walk(k)
        elif isinstance(n, Call):
            for a in n.args:
                walk(a.value)
            for k in n.keys:
                walk(k)
        elif isinstance(n, ListExpr):
            for i in n.items:
                walk(i)
        elif isinstance(n, MapExpr):
            for _, v in n.items:
                walk(v)
        elif isinstance(n, (Math, Compare, BoolOp)):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, Not):
            walk(n.operand)
        elif isinstance(n, Group):
            walk(n.inner)
        elif isinstance(n, Statement):
            walk(n.editor)
            if n.where is not None:
                walk(n.where)
        elif isinstance(n, Condition):
            walk(n.expr)

    walk(node)
    return out


@dataclass(slots=True)
class _Value:
    get: Getter
    accessor: Accessor | None = None
    const: Any = None
    is_const: bool = False


_ARITH: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _math(op: str, a: Any, b: Any) -> Any:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) \
            or not isinstance(b, (int, float)):
        raise OTTLRuntimeError(f"math needs two ints or two doubles, got {type_name(a)} {op} {type_name(b)}")
    if type(a) is not type(b):
        raise OTTLRuntimeError(f"math cannot mix an int and a double ({type_name(a)} {op} {type_name(b)})")
    if op == "/":
        if b == 0:
            raise OTTLRuntimeError("division by zero")
        if isinstance(a, int):
            q = abs(a) // abs(b)  # Go truncates towards zero
            return q if (a >= 0) == (b >= 0) else -q
        return a / b
    return _ARITH[op](a, b)


class Compiler:
    """Compiles statements or conditions for one context (`explicit`: the group named it)."""

    def __init__(self, context: str, *, explicit: bool) -> None:
        self.context = context
        self.explicit = explicit

    # -- entry points --------------------------------------------------------------------------

    def statement(self, stmt: Statement) -> CompiledStatement:
        try:
            run, need = self._editor(stmt.editor)
            where = None
            if stmt.where is not None:
                where, wneed = self._boolean(stmt.where)
                need = prefilter.and_(need, wneed)
        except OTTLError as e:
            raise OTTLError(stmt.text, e.column, e.message) from None
        return CompiledStatement(stmt.text, run, where, need)

    def condition(self, cond: Condition) -> CompiledCondition:
        try:
            test, need = self._boolean(cond.expr)
        except OTTLError as e:
            raise OTTLError(cond.text, e.column, e.message) from None
        return CompiledCondition(cond.text, test, need)

    # -- functions -----------------------------------------------------------------------------

    def _lookup(self, call: Call, *, editor: bool) -> Function:
        fn = FUNCTIONS.get(call.name)
        if fn is None or fn.editor != editor:
            kind, names = ("editor", EDITORS) if editor else ("converter", CONVERTERS)
            other = FUNCTIONS.get(call.name)
            hint = ""
            if other is not None:
                hint = (f" ({call.name} is a converter: use it as a value)" if editor
                        else f" ({call.name} is an editor: a statement starts with it)")
            raise OTTLError("", call.col, f"unsupported {kind} {call.name!r}{hint}; "
                                          f"supported {kind}s: {', '.join(names)}")
        return fn

    def _editor(self, call: Call) -> tuple[Callable[[TransformContext], bool], Need]:
        fn = self._lookup(call, editor=True)
        args = self._args(fn, call)
        return fn.build(args, ""), needs(fn, args)

    def _converter(self, call: Call) -> tuple[Getter, Function, dict[str, Arg]]:
        fn = self._lookup(call, editor=False)
        args = self._args(fn, call)
        getter: Getter = fn.build(args, "")
        if call.keys:
            keys = [self._value(k).get for k in call.keys]
            inner = getter

            def indexed(tc: TransformContext) -> Any:
                from processors.ottl.contexts import _index
                v = inner(tc)
                for k in keys:
                    v = _index(v, k(tc), call.name)
                return v
            getter = indexed
        return getter, fn, args

    def _args(self, fn: Function, call: Call) -> dict[str, Arg]:
        params = fn.params
        by_name = {p.name: p for p in params}
        given: dict[str, Any] = {}
        seen_named = False
        for i, a in enumerate(call.args):
            if a.name is None:
                if seen_named:
                    raise OTTLError("", a.col, f"{fn.name}: an unnamed argument cannot follow a named one")
                if i >= len(params):
                    raise OTTLError("", a.col, f"{fn.name} takes at most {len(params)} arguments: {fn.signature()}")
                given[params[i].name] = a
            else:
                seen_named = True
                if a.name not in by_name:
                    raise OTTLError("", a.col, f"{fn.name} has no argument {a.name!r}: {fn.signature()}")
                if a.name in given:
                    raise OTTLError("", a.col, f"{fn.name}: argument {a.name!r} given twice")
                given[a.name] = a
        out: dict[str, Arg] = {}
        for p in params:
            node = given.get(p.name)
            if node is None:
                if not p.optional:
                    raise OTTLError("", call.col, f"{fn.name} is missing its {p.name!r} argument: {fn.signature()}")
                continue
            out[p.name] = self._arg(fn, p.name, p.kind, node.value)
        return out

    def _arg(self, fn: Function, name: str, kind: str, node: Expr) -> Arg:
        where = f"{fn.name}: {name!r}"
        if kind == "function":
            if not isinstance(node, Enum) or node.name not in STRING_FUNCTIONS:
                raise OTTLError("", node.col, f"{where} must name a converter, one of {', '.join(STRING_FUNCTIONS)}")
            f = STRING_FUNCTIONS[node.name]
            return Arg(lambda tc: f, function=f)
        if kind in ("string", "int", "strings", "regex", "glob"):
            value = self._literal(node, where, kind)
            arg = Arg(lambda tc: value, const=value)
            if kind == "regex":
                arg.regex = compile_regex(value, node.col, where)
            elif kind == "glob":
                try:
                    arg.regex = prefilter.glob_to_regex(value)
                except ValueError as e:
                    raise OTTLError("", node.col, f"{where}: {e}") from None
            self._check_literal(fn, name, value, node.col)
            return arg
        if kind == "values":
            if not isinstance(node, ListExpr):
                raise OTTLError("", node.col, f"{where} must be a list, e.g. [a, b]")
            items = [self._plain(self._value(i)) for i in node.items]
            return Arg(lambda tc: [i.get(tc) for i in items], items=items)
        v = self._value(node)
        if kind in ("target", "map"):
            if v.accessor is None:
                raise OTTLError("", node.col, f"{where} must be a path to a {'map' if kind == 'map' else 'field'}, "
                                              "e.g. span.attributes")
            if kind == "target" and v.accessor.set is None:
                raise OTTLError("", node.col, f"{where}: path {v.accessor.text!r} cannot be set")
        return self._plain(v)

    @staticmethod
    def _plain(v: _Value) -> Arg:
        return Arg(v.get, accessor=v.accessor, const=v.const if v.is_const else None)

    def _literal(self, node: Expr, where: str, kind: str) -> Any:
        if kind == "strings":
            if not isinstance(node, ListExpr):
                raise OTTLError("", node.col, f"{where} must be a list of strings, e.g. [\"a\", \"b\"]")
            return [self._literal(i, where, "string") for i in node.items]
        if not isinstance(node, Literal):
            raise OTTLError("", node.col, f"{where} must be a literal {'integer' if kind == 'int' else 'string'}")
        want = int if kind == "int" else str
        if type(node.value) is not want:
            raise OTTLError("", node.col, f"{where} must be {'an integer' if want is int else 'a string'}, "
                                          f"got {node.value!r}")
        return node.value

    @staticmethod
    def _check_literal(fn: Function, name: str, value: Any, col: int) -> None:
        if name in ("limit",) and value < 0:
            raise OTTLError("", col, f"{fn.name}: limit must not be negative")
        if fn.name == "merge_maps" and name == "strategy" and value not in ("insert", "update", "upsert"):
            raise OTTLError("", col, f"merge_maps: strategy must be insert, update or upsert, not {value!r}")
        if name == "mode" and value not in ("key", "value"):
            raise OTTLError("", col, f"{fn.name}: mode must be 'key' or 'value', not {value!r}")
        if name == "replacementFormat" and value.count("%s") != 1:
            raise OTTLError("", col, f"{fn.name}: replacementFormat must contain exactly one %s")

    # -- values --------------------------------------------------------------------------------

    def _value(self, node: Expr) -> _Value:
        if isinstance(node, Literal):
            v = node.value
            return _Value(lambda tc: v, const=v, is_const=True)
        if isinstance(node, Path):
            acc = compile_path(node, self.context, self.explicit, lambda k: self._value(k).get)
            return _Value(acc.get, accessor=acc)
        if isinstance(node, Enum):
            if node.name not in ENUMS:
                if node.name in FUNCTIONS:
                    raise OTTLError("", node.col, f"{node.name} is a converter: call it, e.g. {node.name}(...)")
                raise OTTLError("", node.col, f"unknown enum {node.name!r}; supported: SPAN_KIND_*, STATUS_CODE_*, "
                                              "SEVERITY_NUMBER_*, METRIC_DATA_TYPE_*, AGGREGATION_TEMPORALITY_*, "
                                              "FLAG_*")
            e = ENUMS[node.name]
            return _Value(lambda tc: e, const=e, is_const=True)
        if isinstance(node, Call):
            getter, fn, _ = self._converter(node)
            if fn.returns_bool and node.keys:
                raise OTTLError("", node.col, f"{fn.name} returns a bool, which cannot be indexed")
            return _Value(getter)
        if isinstance(node, ListExpr):
            items = [self._value(i).get for i in node.items]
            return _Value(lambda tc: [g(tc) for g in items])
        if isinstance(node, MapExpr):
            pairs = [(k, self._value(v).get) for k, v in node.items]
            return _Value(lambda tc: {k: g(tc) for k, g in pairs})
        if isinstance(node, Math):
            left, right, op = self._value(node.left).get, self._value(node.right).get, node.op
            return _Value(lambda tc: _math(op, left(tc), right(tc)))
        if isinstance(node, Group):
            return self._value(node.inner)
        raise OTTLError("", node.col, "a comparison or boolean expression cannot be used as a value here")

    # -- booleans ------------------------------------------------------------------------------

    def _boolean(self, node: Expr) -> tuple[Test, Need]:
        if isinstance(node, Compare):
            return self._compare(node)
        if isinstance(node, BoolOp):
            (lt, ln), (rt, rn) = self._boolean(node.left), self._boolean(node.right)
            if node.op == "and":
                return (lambda tc: lt(tc) and rt(tc)), prefilter.and_(ln, rn)
            return (lambda tc: lt(tc) or rt(tc)), prefilter.or_(ln, rn)
        if isinstance(node, Not):
            t, _ = self._boolean(node.operand)
            return (lambda tc: not t(tc)), ALWAYS
        if isinstance(node, Group):
            return self._boolean(node.inner)
        if isinstance(node, Literal) and isinstance(node.value, bool):
            b = node.value
            return (lambda tc: b), (ALWAYS if b else NEVER)
        if isinstance(node, Call):
            getter, fn, args = self._converter(node)
            need = ALWAYS
            if fn.name == "IsMatch" and not node.keys:
                acc = args["target"].accessor
                if acc is not None:
                    need = prefilter.lits(*acc.keys)
                    if acc.string_typed:  # a string field: the regex's literals are in the bytes too
                        need = prefilter.and_(need, prefilter.regex_literals(args["pattern"].const))
            if fn.returns_bool and not node.keys:
                return getter, need

            def as_bool(tc: TransformContext) -> bool:
                v = getter(tc)
                if not isinstance(v, bool):
                    raise OTTLRuntimeError(f"{node.name}(...) returned {type_name(v)}, not a bool")
                return v
            return as_bool, ALWAYS
        raise OTTLError("", node.col, "expected a condition: a comparison (a == b), true/false, a converter that "
                                      "returns a bool (IsMatch), combined with and/or/not")

    def _compare(self, node: Compare) -> tuple[Test, Need]:
        left, right = self._value(node.left), self._value(node.right)
        op = node.op
        need = ALWAYS
        if op == "==":
            for a, b in ((left, right), (right, left)):
                if a.accessor is not None and b.is_const and isinstance(b.const, str) and a.accessor.verbatim:
                    need = prefilter.lits(*a.accessor.keys, b.const)
                elif a.accessor is not None and b.is_const and b.const is not None and a.accessor.keys:
                    need = prefilter.lits(*a.accessor.keys)  # a value at a key: the key is there
        elif op == "!=" and left.accessor is not None and right.is_const and right.const is None:
            need = prefilter.lits(*left.accessor.keys)  # `attributes["k"] != nil`: the key is there
        lg, rg = left.get, right.get
        if op == "==" and right.is_const and isinstance(right.const, str):
            c = right.const
            return (lambda tc: lg(tc) == c), need  # a str equals only a str (no other type compares equal)
        return (lambda tc: compare(op, lg(tc), rg(tc))), need


def compile_regex(pattern: str, col: int, where: str) -> Pattern:
    """The pattern compiled as RE2 (the Collector's Go syntax, linear time)."""
    try:
        return compile_re2(pattern)
    except ValueError as e:
        raise OTTLError("", col, f"{where}: {e}") from None
