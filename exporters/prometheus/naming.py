"""OTLP → Prometheus names, labels and label values: pure functions, no state.

Follows the OpenTelemetry "Prometheus and OpenMetrics Compatibility"
specification (OTLP Metric points to Prometheus):

- metric names: characters outside `[a-zA-Z0-9_:]` become `_` and runs of `_`
  collapse to one; a leading digit gets a `_` prefix (the spec only says the
  name must match `[a-zA-Z_:][a-zA-Z0-9_:]*`; prefixing keeps the digit, as the
  Collector's translator does);
- unit suffix (when `add_metric_suffixes`): UCUM abbreviations become words
  (`s` → `seconds`, `By` → `bytes`, `KiBy` → `kibibytes`, ...), `{...}`
  annotations are dropped, `foo/bar` becomes `foo_per_bar`, and the suffix is
  left out when the name already contains it; it comes before `_total`;
- unit `1` is `ratio`, but only for OTLP gauges: like the Collector and
  Prometheus' own OTLP translator we do not add it to sums, because many
  producers (receivers, older semantic conventions) put `1` on counts, and
  `requests_ratio_total` would be wrong;
- monotonic sums end in `_total`;
- label names: characters outside `[a-zA-Z0-9_]` become `_`, runs of `_`
  collapse, a leading digit gets a `key_` prefix (the Collector's choice);
  keys that collide after sanitizing have their values joined with `;` in
  the lexicographic order of the original keys;
- non-string attribute values are JSON-encoded (the common attribute spec).
"""
from __future__ import annotations

import base64
import enum
import re
from collections.abc import Iterable, Mapping

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORES = re.compile(r"__+")
_ANNOTATION = re.compile(r"\{[^}]*\}")
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")
VALID_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
VALID_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# UCUM (the OTLP unit notation) → Prometheus base-unit words.
UNIT_WORDS: Mapping[str, str] = {
    # time
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds",
    "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds",
    # bytes
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes",
    "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    # SI
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    # misc
    "Cel": "celsius", "Hz": "hertz", "%": "percent", "1": "",
}
# The denominator of `foo/bar` is singular: `By/s` → `bytes_per_second`.
PER_UNIT_WORDS: Mapping[str, str] = {
    "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year",
}


class Shape(enum.Enum):
    """What an OTLP metric becomes in Prometheus (decides type and suffixes)."""

    COUNTER = "counter"        # monotonic sum → counter, `_total`
    GAUGE = "gauge"            # OTLP gauge → gauge (unit `1` → `_ratio`)
    UPDOWN = "updown"          # non-monotonic sum → gauge
    HISTOGRAM = "histogram"
    SUMMARY = "summary"

    @property
    def prom_type(self) -> str:
        return "gauge" if self is Shape.UPDOWN else self.value


def sanitize_metric_name(name: str) -> str:
    """Invalid characters → `_`, runs of `_` → one `_`, leading digit → `_` prefix."""
    out = _UNDERSCORES.sub("_", _INVALID_NAME.sub("_", name))
    if out[:1].isdigit():
        out = "_" + out
    return out


def sanitize_label_name(key: str) -> str:
    """Invalid characters → `_`, runs of `_` → one `_`, leading digit → `key_` prefix.

    Collapsing runs means a sanitized label can never start with `__`, the
    prefix Prometheus reserves for its own labels.
    """
    out = _UNDERSCORES.sub("_", _INVALID_LABEL.sub("_", key))
    if out[:1].isdigit():
        out = "key_" + out
    return out


def _clean_unit_word(word: str) -> str:
    return "_".join(t for t in _NON_ALNUM.split(word) if t)


def unit_words(unit: str) -> tuple[str, str]:
    """The Prometheus words of an OTLP unit: (main, per); either may be empty.

    `s` → ("seconds", ""), `By/s` → ("bytes", "second"), `{token}` → ("", ""),
    `{objects}/s` → ("", "second"), `1` → ("", "").
    """
    main, _, per = unit.strip().partition("/")
    main = _ANNOTATION.sub("", main).strip()
    per = _ANNOTATION.sub("", per).strip()
    main_word = _clean_unit_word(UNIT_WORDS.get(main, main)) if main else ""
    per_word = _clean_unit_word(PER_UNIT_WORDS.get(per, per)) if per else ""
    return main_word, per_word


def _contains(name: str, words: str) -> bool:
    """Whether `words` (one or more `_`-joined tokens) already appears as whole tokens in `name`."""
    return f"_{words}_" in f"_{name}_"


def metric_name(name: str, unit: str, shape: Shape, *, namespace: str = "", add_suffixes: bool = True) -> str:
    """The Prometheus metric family name of an OTLP metric (counters include `_total`)."""
    base = sanitize_metric_name(name)
    if add_suffixes:
        if shape is Shape.COUNTER and base.endswith("_total") and len(base) > 6:
            base = base[:-6]  # re-added last, after the unit: `x_total` with unit s → `x_seconds_total`
        parts = [base]
        main, per = unit_words(unit)
        if main and not _contains(base, main):
            parts.append(main)
        if per and not _contains(base, per):
            parts.append("per_" + per)
        if shape is Shape.GAUGE and unit.strip() == "1" and not _contains(base, "ratio"):
            parts.append("ratio")
        if shape is Shape.COUNTER and base != "total":
            parts.append("total")
        base = "_".join(p for p in parts if p)
    if namespace:
        base = f"{namespace}_{base}"
    return sanitize_metric_name(base)


def unit_metadata(family_name: str, unit: str, shape: Shape) -> str:
    """The OpenMetrics UNIT of a family, or "" when the name does not end with it (then it must be omitted)."""
    main, per = unit_words(unit)
    if shape is Shape.GAUGE and unit.strip() == "1":
        word = "ratio"
    elif main and per:
        word = f"{main}_per_{per}"
    else:
        word = main or (f"per_{per}" if per else "")
    if not word:
        return ""
    stem = family_name[:-6] if shape is Shape.COUNTER and family_name.endswith("_total") else family_name
    return word if stem.endswith("_" + word) else ""


def value_text(v: AnyValue) -> str:
    """An attribute value as a label value: strings as they are, everything else JSON-encoded."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind is None:
        return ""
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    return orjson.dumps(_plain(v)).decode()


def _plain(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_plain(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind is None:
        return None
    return getattr(v, kind)


def join_labels(pairs: Iterable[tuple[str, str]], cache: dict[str, str] | None = None) -> dict[str, str]:
    """Label dict from (original key, value) pairs; keys that collide join their values with `;`.

    The joined values are ordered by the original keys, as the spec requires.
    `cache` (key → sanitized name) saves re-sanitizing the same keys; keys that
    sanitize to nothing are skipped.
    """
    out: dict[str, str] = {}
    seen: list[tuple[str, str, str]] = []
    collided = False
    for key, value in pairs:
        name = cache.get(key) if cache is not None else None
        if name is None:
            name = sanitize_label_name(key)
            if cache is not None:
                cache[key] = name
        if not name:
            continue
        if name in out:
            collided = True
        out[name] = value
        seen.append((name, key, value))
    if collided:
        groups: dict[str, list[tuple[str, str]]] = {}
        for name, key, value in seen:
            groups.setdefault(name, []).append((key, value))
        for name, items in groups.items():
            if len(items) > 1:
                items.sort()
                out[name] = ";".join(v for _, v in items)
    return out
