"""The OTTL parser: what it accepts, and errors that carry the statement and the column."""
from __future__ import annotations

import pytest

from processors.ottl.grammar import (
    BoolOp,
    Call,
    Compare,
    Enum,
    ListExpr,
    Literal,
    MapExpr,
    Math,
    Not,
    OTTLError,
    Path,
    parse_condition,
    parse_statement,
    unquote,
)


def test_statement_with_where_clause() -> None:
    st = parse_statement('set(span.attributes["env"], "prod") where span.name == "checkout" and not IsMatch(x, "a")')
    assert st.editor.name == "set"
    target = st.editor.args[0].value
    assert isinstance(target, Path) and [s.name for s in target.segments] == ["span", "attributes"]
    assert target.segments[1].keys == (Literal(21, "env"),)
    assert isinstance(st.where, BoolOp) and st.where.op == "and"
    assert isinstance(st.where.left, Compare) and isinstance(st.where.right, Not)


def test_precedence_not_and_or() -> None:
    c = parse_condition("a == 1 or b == 2 and not c == 3")
    assert isinstance(c.expr, BoolOp) and c.expr.op == "or"
    assert isinstance(c.expr.right, BoolOp) and c.expr.right.op == "and"


def test_literals() -> None:
    st = parse_statement('set(x, [1, -2, 1.5, -.5, true, false, nil, 0x0aFF, "s\\"q"])')
    items = st.editor.args[1].value
    assert isinstance(items, ListExpr)
    assert [i.value for i in items.items if isinstance(i, Literal)] == [1, -2, 1.5, -0.5, True, False, None,
                                                                        b"\n\xff", 's"q']


def test_maps_math_enums_converters_and_named_arguments() -> None:
    st = parse_statement('merge_maps(attributes, {"a": Split(name, ",")[0]}, strategy="upsert")')
    assert isinstance(st.editor.args[1].value, MapExpr)
    conv = st.editor.args[1].value.items[0][1]
    assert isinstance(conv, Call) and conv.name == "Split" and conv.keys == (Literal(47, 0),)
    assert st.editor.args[2].name == "strategy"
    m = parse_statement("set(x, 1 + 2 * 3)").editor.args[1].value
    assert isinstance(m, Math) and m.op == "+" and isinstance(m.right, Math) and m.right.op == "*"
    e = parse_condition("span.kind == SPAN_KIND_SERVER").expr
    assert isinstance(e, Compare) and isinstance(e.right, Enum)


def test_string_escapes_keep_regex_backslashes() -> None:
    assert unquote(r'"a\\.b"') == r"a\.b"
    assert unquote(r'"\d+\s"') == r"\d+\s"
    assert unquote(r'"tab\tnl\n\u00e9"') == "tab\tnl\né"


@pytest.mark.parametrize(("text", "column", "words"), [
    ("set(x, ", 8, "unexpected end"),
    ("set(x y)", 7, "unexpected 'y'"),
    ('set(x, "open) ', 8, "unexpected character"),
    ("set(x, 1) where", 16, "unexpected end"),
    ("set(x, 1) wher x == 1", 11, "expected 'where'"),
    ("Set(x, 1)", 1, "unexpected 'Set'"),
    ("set(x, 0x123)", 8, "odd number of hex digits"),
    ("set(x, 99999999999999999999)", 8, "does not fit in 64 bits"),
    ("", 1, "an empty statement"),
])
def test_syntax_errors_carry_statement_and_column(text: str, column: int, words: str) -> None:
    with pytest.raises(OTTLError) as info:
        parse_statement(text)
    assert info.value.column == column
    assert words in info.value.message
    assert info.value.text == text
    assert f'column {column} of "{text}"' in str(info.value)


@pytest.mark.parametrize("text", [
    "set(span.name, " + "(" * 3000 + '"x"' + ")" * 3000 + ")",
    'set(span.name, "x") where ' + " or ".join(['span.name == "a"'] * 300),
    "set(span.name, " + "[" * 500 + "]" * 500 + ")",
    'set(span.name, "x") where ' + "not " * 5000 + "true",
])
def test_hostile_nesting_and_length_are_refused_not_crashed(text: str) -> None:
    with pytest.raises(OTTLError, match="nested|longer than"):
        parse_statement(text)


def test_regexes_run_in_linear_time() -> None:
    """RE2, as the Collector: a pattern that makes a backtracking engine exponential is instant."""
    from processors.ottl.regex import compile_re2
    assert compile_re2("(a+)+$").search("a" * 50_000 + "b") is None
    with pytest.raises(ValueError, match="invalid regular expression"):
        compile_re2("(?=lookahead)")
