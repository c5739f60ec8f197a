"""The OTTL grammar and its syntax tree.

The grammar follows the Collector's (pkg/ottl/grammar.go and LANGUAGE.md): a statement is one
editor invocation (`set(...)`, lower-case name) with an optional `where` boolean expression; a
condition is a boolean expression alone. Values are literals (strings, ints, floats, `true`,
`false`, `nil`, `0x..` bytes), paths (`span.attributes["k"]`, keys on any segment), enums
(`SPAN_KIND_SERVER`), converter calls (`Concat([...], "-")`, upper-case name, optionally indexed:
`Split(x, ",")[0]`), lists, maps and math (`+ - * /`). Booleans combine with `not` (tightest),
`and`, then `or`, and group with parentheses.

One expression grammar (LALR) parses all of it; what may stand where (a comparison is not a
function argument, a where clause must be boolean) is checked by the compiler, which knows the
positions. A syntax error becomes `OTTLError` with the statement and the column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lark

GRAMMAR = r"""
statement: editor ("where" expr)?
condition: expr

editor: LOWER "(" [args] ")"

?expr: or_expr
?or_expr: and_expr | or_expr "or" and_expr -> or_op
?and_expr: not_expr | and_expr "and" not_expr -> and_op
?not_expr: cmp_expr | "not" not_expr -> not_op
?cmp_expr: sum | sum COMP_OP sum -> compare
?sum: product | sum ADD_OP product -> math
?product: atom | product MUL_OP atom -> math
?atom: literal
     | path
     | UPPER "(" [args] ")" key* -> converter
     | UPPER -> enum
     | "[" [expr ("," expr)*] "]" -> list_expr
     | "{" [pair ("," pair)*] "}" -> map_expr
     | "(" expr ")" -> group

pair: STRING ":" expr
args: arg ("," arg)*
arg: expr | LOWER "=" expr -> named_arg

path: segment ("." segment)*
segment: LOWER key*
key: "[" expr "]"

literal: STRING -> string
       | FLOAT -> float_lit
       | INT -> int_lit
       | BYTES -> bytes_lit
       | TRUE -> true
       | FALSE -> false
       | NIL -> nil

TRUE.4: "true"
FALSE.4: "false"
NIL.4: "nil"
COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
ADD_OP: "+" | "-"
MUL_OP: "*" | "/"
BYTES.3: /0x[0-9a-fA-F]+/
FLOAT.2: /[-+]?[0-9]*\.[0-9]+([eE][-+]?[0-9]+)?/
INT.1: /[-+]?[0-9]+/
STRING: /"(\\.|[^\\"])*"/
LOWER: /[a-z][a-z0-9_]*/
UPPER: /[A-Z][A-Za-z0-9_]*/

%import common.WS
%ignore WS
"""


class OTTLError(ValueError):
    """A statement or condition that cannot be used: the text, the 1-based column and why.

    `str()` reads: `column 1 of "sett(span.name, 1)": unsupported editor 'sett'; supported editors: ...`.
    """

    def __init__(self, text: str, column: int, message: str) -> None:
        self.text = text
        self.column = column
        self.message = message
        super().__init__(f'column {column} of "{text}": {message}')


# -- syntax tree --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Node:
    col: int  # 1-based column of the node's first character


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any  # str, int, float, bool, None or bytes


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    keys: tuple[Expr, ...]
    col: int


@dataclass(frozen=True, slots=True)
class Path(Node):
    segments: tuple[Segment, ...]

    def text(self) -> str:
        return ".".join(s.name for s in self.segments)


@dataclass(frozen=True, slots=True)
class Enum(Node):
    name: str


@dataclass(frozen=True, slots=True)
class Arg:
    name: str | None
    value: Expr
    col: int


@dataclass(frozen=True, slots=True)
class Call(Node):
    """An editor (lower-case name, statement level) or a converter (upper-case, in values)."""

    name: str
    args: tuple[Arg, ...]
    keys: tuple[Expr, ...] = ()


@dataclass(frozen=True, slots=True)
class ListExpr(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class MapExpr(Node):
    items: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True, slots=True)
class Math(Node):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Compare(Node):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class BoolOp(Node):
    op: str  # "and" | "or"
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Not(Node):
    operand: Expr


@dataclass(frozen=True, slots=True)
class Group(Node):
    inner: Expr


Expr = Literal | Path | Enum | Call | ListExpr | MapExpr | Math | Compare | BoolOp | Not | Group


@dataclass(frozen=True, slots=True)
class Statement:
    text: str
    editor: Call
    where: Expr | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    text: str
    expr: Expr = field()


# -- parsing ------------------------------------------------------------------------------------

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/", "b": "\b", "f": "\f"}


def unquote(token: str) -> str:
    """The value of a string literal: `\\"`, `\\\\`, `\\n`, `\\t`, `\\r`, `\\uXXXX` are escapes; any other
    backslash is kept as written, so regexes read naturally (`"\\d+"` and `"\\\\d+"` both mean `\\d+`)."""
    body = token[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == "\\" and i + 1 < n:
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and i + 6 <= n:
                try:
                    out.append(chr(int(body[i + 2:i + 6], 16)))
                    i += 6
                    continue
                except ValueError:
                    pass
            out.append(c)
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _col(tok: Any) -> int:
    return int(getattr(tok, "column", 1) or 1)


def _col_meta(meta: Any) -> int:
    return 1 if getattr(meta, "empty", True) else int(meta.column)


class _Build(lark.visitors.Transformer_NonRecursive):  # type: ignore[type-arg]
    """Lark tree → the dataclasses above."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    # literals
    def string(self, c: list[Any]) -> Literal:
        return Literal(_col(c[0]), unquote(str(c[0])))

    def int_lit(self, c: list[Any]) -> Literal:
        value = int(str(c[0]))
        if not -(1 << 63) <= value < 1 << 63:
            raise OTTLError(self.text, _col(c[0]), f"integer {c[0]} does not fit in 64 bits")
        return Literal(_col(c[0]), value)

    def float_lit(self, c: list[Any]) -> Literal:
        return Literal(_col(c[0]), float(str(c[0])))

    def bytes_lit(self, c: list[Any]) -> Literal:
        digits = str(c[0])[2:]
        if len(digits) % 2:
            raise OTTLError(self.text, _col(c[0]), f"byte slice {c[0]} has an odd number of hex digits")
        return Literal(_col(c[0]), bytes.fromhex(digits))

    def true(self, c: list[Any]) -> Literal:
        return Literal(_col(c[0]), True)

    def false(self, c: list[Any]) -> Literal:
        return Literal(_col(c[0]), False)

    def nil(self, c: list[Any]) -> Literal:
        return Literal(_col(c[0]), None)

    # values
    def key(self, c: list[Any]) -> Expr:
        return c[0]  # type: ignore[no-any-return]

    def segment(self, c: list[Any]) -> Segment:
        return Segment(str(c[0]), tuple(c[1:]), _col(c[0]))

    def path(self, c: list[Any]) -> Path:
        return Path(c[0].col, tuple(c))

    def enum(self, c: list[Any]) -> Enum:
        return Enum(_col(c[0]), str(c[0]))

    def arg(self, c: list[Any]) -> Arg:
        return Arg(None, c[0], getattr(c[0], "col", 0))

    def named_arg(self, c: list[Any]) -> Arg:
        return Arg(str(c[0]), c[1], _col(c[0]))

    def args(self, c: list[Any]) -> tuple[Arg, ...]:
        return tuple(c)

    def converter(self, c: list[Any]) -> Call:
        args = c[1] if len(c) > 1 and c[1] is not None else ()
        return Call(_col(c[0]), str(c[0]), args, tuple(c[2:]))

    def editor(self, c: list[Any]) -> Call:
        args = c[1] if len(c) > 1 and c[1] is not None else ()
        return Call(_col(c[0]), str(c[0]), args)

    @lark.v_args(meta=True)
    def list_expr(self, meta: Any, c: list[Any]) -> ListExpr:
        return ListExpr(_col_meta(meta), tuple(x for x in c if x is not None))

    def pair(self, c: list[Any]) -> tuple[str, Expr]:
        return unquote(str(c[0])), c[1]

    @lark.v_args(meta=True)
    def map_expr(self, meta: Any, c: list[Any]) -> MapExpr:
        return MapExpr(_col_meta(meta), tuple(x for x in c if x is not None))

    @lark.v_args(meta=True)
    def group(self, meta: Any, c: list[Any]) -> Group:
        return Group(_col_meta(meta), c[0])

    # operators
    def math(self, c: list[Any]) -> Math:
        return Math(_col(c[1]), str(c[1]), c[0], c[2])

    def compare(self, c: list[Any]) -> Compare:
        return Compare(_col(c[1]), str(c[1]), c[0], c[2])

    @lark.v_args(meta=True)
    def and_op(self, meta: Any, c: list[Any]) -> BoolOp:
        return BoolOp(_col_meta(meta), "and", c[0], c[1])

    @lark.v_args(meta=True)
    def or_op(self, meta: Any, c: list[Any]) -> BoolOp:
        return BoolOp(_col_meta(meta), "or", c[0], c[1])

    @lark.v_args(meta=True)
    def not_op(self, meta: Any, c: list[Any]) -> Not:
        return Not(_col_meta(meta), c[0])

    # entry points
    def statement(self, c: list[Any]) -> Statement:
        return Statement(self.text, c[0], c[1] if len(c) > 1 else None)

    def condition(self, c: list[Any]) -> Condition:
        return Condition(self.text, c[0])


_PARSERS: dict[str, lark.Lark] = {}
#: Bounds on what a config may ask the parser and compiler to do (both recurse on nesting).
MAX_LENGTH = 10_000
MAX_DEPTH = 100


def _depth(tree: lark.Tree[Any]) -> int:
    """The nesting depth of a parse tree, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(node, lark.Tree):
            stack.extend((c, d + 1) for c in node.children)
    return deepest


def _parser(start: str) -> lark.Lark:
    p = _PARSERS.get(start)
    if p is None:
        p = lark.Lark(GRAMMAR, start=start, parser="lalr", maybe_placeholders=True,
                      propagate_positions=True)
        _PARSERS[start] = p
    return p


_TOKEN_NAMES = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "DOT": "'.'", "COLON": "':'", "EQUAL": "'='", "COMP_OP": "a comparison operator",
    "ADD_OP": "'+' or '-'", "MUL_OP": "'*' or '/'", "STRING": "a string", "INT": "an integer", "FLOAT": "a float",
    "BYTES": "a byte slice", "LOWER": "a name", "UPPER": "a converter or enum", "WHERE": "'where'",
    "AND": "'and'", "OR": "'or'", "NOT": "'not'", "TRUE": "'true'", "FALSE": "'false'", "NIL": "'nil'",
    "$END": "the end",
}


def _expected(names: set[str] | frozenset[str]) -> str:
    shown = sorted({_TOKEN_NAMES.get(n, n.lower()) for n in names})
    return ", ".join(shown[:8]) + (", …" if len(shown) > 8 else "")


def _parse(text: str, start: str) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise OTTLError(str(text), 1, f"an empty {start}")
    if len(text) > MAX_LENGTH:
        raise OTTLError(text[:60] + "…", 1, f"a {start} longer than {MAX_LENGTH} characters")
    try:
        tree = _parser(start).parse(text)
        depth = _depth(tree)
        if depth > MAX_DEPTH:
            raise OTTLError(text, 1, f"expressions nested {depth} deep; at most {MAX_DEPTH} levels are allowed")
        return _Build(text).transform(tree)
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, OTTLError):
            raise e.orig_exc from None
        raise
    except lark.exceptions.UnexpectedCharacters as e:
        pos = e.pos_in_stream or 0
        raise OTTLError(text, e.column, f"unexpected character {text[pos:pos + 1]!r}") from None
    except lark.exceptions.UnexpectedEOF as e:
        raise OTTLError(text, len(text) + 1, f"unexpected end; expected {_expected(set(map(str, e.expected)))}"
                        ) from None
    except lark.exceptions.UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            raise OTTLError(text, len(text) + 1, f"unexpected end; expected {_expected(e.expected)}") from None
        raise OTTLError(text, e.column, f"unexpected {str(tok)!r}; expected {_expected(e.expected)}") from None


def parse_statement(text: str) -> Statement:
    """Parse one OTTL statement (`editor(args) [where condition]`); OTTLError on bad syntax."""
    return _parse(text, "statement")  # type: ignore[no-any-return]


def parse_condition(text: str) -> Condition:
    """Parse one OTTL condition (a boolean expression); OTTLError on bad syntax."""
    return _parse(text, "condition")  # type: ignore[no-any-return]
