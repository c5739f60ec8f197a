"""Summary and link templates: `{value}`, `{threshold}`, built-in fields and group attributes.

A template is text with `{name}` fields (`{{` and `}}` are literal braces). A name is anything
between the braces, so attributes with dots work (`{gen_ai.tool.name}`); numeric fields take a
Python format spec after a colon (`{value:.1%}`, `{threshold:g}`). Templates are parsed once,
when the config is validated: a field that is neither built in nor one of the rule's `group_by`
attributes is a config error, so a summary never renders with a hole in it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Fields every template may use; the numeric ones take a format spec.
NUMERIC_FIELDS = frozenset({"value", "threshold"})
BUILTIN_FIELDS = NUMERIC_FIELDS | frozenset({"rule", "metric", "aggregation", "window", "condition", "severity",
                                             "group"})


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    spec: str = ""


Part = str | Field


class TemplateError(ValueError):
    """A template that does not parse, or names a field it cannot have."""


def parse(text: str) -> tuple[Part, ...]:
    """The literal and field parts of `text`; TemplateError for unbalanced braces or an empty field."""
    parts: list[Part] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            if text.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = text.find("}", i + 1)
            inner = text[i + 1:end] if end != -1 else ""
            if end == -1 or "{" in inner:
                raise TemplateError(f"unclosed '{{' at position {i}: write '{{{{' for a literal brace")
            name, colon, spec = inner.partition(":")
            name = name.strip()
            if not name:
                raise TemplateError(f"empty field '{{{inner}}}' at position {i}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Field(name, spec if colon else ""))
            i = end + 1
        elif c == "}":
            if not text.startswith("}}", i):
                raise TemplateError(f"single '}}' at position {i}: write '}}}}' for a literal brace")
            literal.append("}")
            i += 2
        else:
            literal.append(c)
            i += 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def check(parts: Iterable[Part], attributes: Iterable[str]) -> list[str]:
    """Problems with the fields of a parsed template, given the attributes it may name (`group_by`)."""
    allowed = set(attributes)
    problems = []
    for part in parts:
        if isinstance(part, str):
            continue
        if part.name in NUMERIC_FIELDS:
            if part.spec:
                try:
                    format(1.5, part.spec)
                except ValueError as e:
                    problems.append(f"invalid format spec {part.spec!r} for {{{part.name}}}: {e}")
        elif part.name in BUILTIN_FIELDS or part.name in allowed:
            if part.spec:
                problems.append(f"{{{part.name}:{part.spec}}}: only {{value}} and {{threshold}} take a format spec")
        else:
            hint = (f"group_by is {sorted(allowed)}" if allowed else "the rule has no group_by")
            problems.append(f"refers to {{{part.name}}}, which is neither a built-in field "
                            f"({', '.join(sorted(BUILTIN_FIELDS))}) nor an attribute in group_by ({hint})")
    return problems


def format_number(value: float | None, spec: str = "") -> str:
    """A value as a summary shows it: integers plainly, others to 4 significant digits; `n/a` for none."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if spec:
        return format(value, spec)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def render(parts: Iterable[Part], numbers: Mapping[str, float | None], fields: Mapping[str, str]) -> str:
    """Fill a parsed template; built-in fields win over group attributes of the same name."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part.name in NUMERIC_FIELDS:
            out.append(format_number(numbers.get(part.name), part.spec))
        else:
            out.append(fields.get(part.name, ""))
    return "".join(out)
