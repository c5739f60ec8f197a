"""Each OTTL editor and converter, and the paths of each context, on real OTLP messages."""
from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline.testing import kv, make_logs, make_metrics, make_traces
from processors.ottl.runner import ErrorHandler, StatementFailed, build_group, run_statements
from processors.ottl.values import PMap, from_any


def run(signal: str, msg: Any, *statements: str, mode: str = "ignore", context: str = "",
        conditions: tuple[str, ...] = ()) -> tuple[bool, ErrorHandler]:
    group, issues = build_group(signal, context, statements, conditions, mode)  # type: ignore[arg-type]
    assert not issues, [i.text() for i in issues]
    assert group is not None
    handler = ErrorHandler(logging.getLogger("test"), lambda: 0.0)
    return run_statements(signal, msg, [group], handler), handler


def attrs(kvs: Any) -> dict[str, Any]:
    return PMap(kvs).to_dict()


def one_span(**span_attrs: object) -> Any:
    msg = make_traces(1, attrs=span_attrs)
    return msg, msg.resource_spans[0].scope_spans[0].spans[0]


# -- editors ---------------------------------------------------------------------------------------

def test_set_literal_path_and_nil_is_a_no_op() -> None:
    msg, span = one_span(a="x")
    changed, _ = run("traces", msg, 'set(span.attributes["b"], span.attributes["a"])',
                     'set(span.attributes["c"], span.attributes["missing"])', 'set(span.name, "renamed")')
    assert changed and attrs(span.attributes) == {"a": "x", "b": "x"} and span.name == "renamed"


def test_set_same_value_reports_no_change() -> None:
    msg, span = one_span(a="x")
    changed, _ = run("traces", msg, 'set(span.attributes["a"], "x")', f'set(span.name, "{span.name}")')
    assert not changed


def test_set_with_where_only_touches_matching_items() -> None:
    msg = make_traces(3)
    run("traces", msg, 'set(span.attributes["hit"], true) where span.name == "span-1"')
    spans = msg.resource_spans[0].scope_spans[0].spans
    assert [attrs(s.attributes) for s in spans] == [{}, {"hit": True}, {}]


def test_set_nested_map_creates_intermediate_maps() -> None:
    msg, span = one_span()
    run("traces", msg, 'set(span.attributes["a"]["b"], 1)')
    assert attrs(span.attributes) == {"a": {"b": 1}}


def test_delete_key_and_delete_matching_keys() -> None:
    msg, span = one_span(**{"http.request.header.authorization": "x", "password": "p", "user.password": "q",
                            "keep": 1})
    run("traces", msg, 'delete_key(span.attributes, "http.request.header.authorization")',
        'delete_matching_keys(span.attributes, "(?i).*password.*")')
    assert attrs(span.attributes) == {"keep": 1}


def test_keep_keys() -> None:
    msg, span = one_span(a=1, b=2, c=3)
    run("traces", msg, 'keep_keys(span.attributes, ["a", "c", "zz"])')
    assert attrs(span.attributes) == {"a": 1, "c": 3}


def test_limit_keeps_priority_keys() -> None:
    msg, span = one_span(a=1, b=2, c=3, d=4)
    run("traces", msg, 'limit(span.attributes, 2, ["d"])')
    assert attrs(span.attributes) == {"d": 4, "a": 1}


def test_truncate_all_never_cuts_a_character() -> None:
    msg, span = one_span(a="abcdef", b="éé", n=5)
    run("traces", msg, "truncate_all(span.attributes, 3)")
    assert attrs(span.attributes) == {"a": "abc", "b": "é", "n": 5}


def test_replace_pattern_with_groups_function_and_format() -> None:
    msg, span = one_span(cmd="run --password=hunter2 now")
    run("traces", msg, r'replace_pattern(span.attributes["cmd"], "password=([^\\s]*)", "password=***")')
    assert attrs(span.attributes)["cmd"] == "run --password=*** now"
    msg, span = one_span()
    span.name = "kube_pod_name"
    run("traces", msg, 'replace_pattern(span.name, "^kube_([0-9A-Za-z]+_)", "k8s.$1.")')
    assert span.name == "k8s.pod_.name"
    msg, span = one_span()
    span.name = "user 42"
    run("traces", msg, r'replace_pattern(span.name, "\\d+", "$0", SHA256, "id:%s")')
    assert span.name == "user id:" + hashlib.sha256(b"42").hexdigest()


def test_replace_all_patterns_on_values_and_keys() -> None:
    msg, span = one_span(path="/account/1234", other="/account/12", n=7)
    run("traces", msg, r'replace_all_patterns(span.attributes, "value", "/account/\\d{4}", "/account/{id}")')
    assert attrs(span.attributes) == {"path": "/account/{id}", "other": "/account/12", "n": 7}
    msg, span = one_span(kube_ns="a", kept="b")
    run("traces", msg, 'replace_all_patterns(span.attributes, "key", "^kube_", "k8s.")')
    assert attrs(span.attributes) == {"kept": "b", "k8s.ns": "a"}


def test_replace_match_and_replace_all_matches() -> None:
    msg, span = one_span(**{"http.target": "/user/1/list/2", "other": "/user/1"})
    run("traces", msg, 'replace_match(span.attributes["http.target"], "/user/*/list/*", "/user/{u}/list/{l}")')
    assert attrs(span.attributes)["http.target"] == "/user/{u}/list/{l}"
    msg, span = one_span(a="/user/9/list/8", b="/user/9", c=3)
    run("traces", msg, 'replace_all_matches(span.attributes, "/user/*/list/*", "X")')
    assert attrs(span.attributes) == {"a": "X", "b": "/user/9", "c": 3}


@pytest.mark.parametrize(("strategy", "expected"), [
    ("insert", {"a": 1, "b": 2}),
    ("update", {"a": 10}),
    ("upsert", {"a": 10, "b": 2}),
])
def test_merge_maps(strategy: str, expected: dict[str, int]) -> None:
    msg, span = one_span(a=1)
    run("traces", msg, f'merge_maps(span.attributes, {{"a": 10, "b": 2}}, "{strategy}")')
    assert attrs(span.attributes) == expected


# -- converters ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "expected"), [
    ('Concat([span.name, span.attributes["n"], nil, true, 1.5], "-")', "span-0-3-<nil>-true-1.5"),
    ('Split("a,b,c", ",")', ["a", "b", "c"]),
    ('Split("a,b,c", ",")[1]', "b"),
    ('SHA256("name")', hashlib.sha256(b"name").hexdigest()),
    ('Int("42")', 42), ("Int(2.9)", 2), ("Int(-2.9)", -2), ("Int(true)", 1), ('Int("2.0")', None),
    ('Double("2.5")', 2.5), ("Double(3)", 3.0), ('Double("x")', None),
    ("String(1.5)", "1.5"), ("String(7)", "7"), ("String(0x0aff)", "0aff"), ("String(false)", "false"),
    ("Len(\"héllo\")", 6), ("Len(span.attributes)", 1), ('Len(Split("a b", " "))', 2),
    ("1 + 2 * 3", 7), ("7 / 2", 3), ("-7 / 2", -3), ("1.5 * 2.0", 3.0),
])
def test_converters_and_math(expr: str, expected: Any) -> None:
    msg, span = one_span(n=3)
    run("traces", msg, f'set(span.attributes["out"], {expr})')
    got = PMap(span.attributes).get("out")
    got = got.to_list() if hasattr(got, "to_list") else got
    assert got == expected


@pytest.mark.parametrize(("condition", "hit"), [
    ('IsMatch(span.name, "^span-\\\\d$")', True),
    ('IsMatch(span.attributes["code"], "^50")', True),  # an int is matched as its decimal string
    ('IsMatch(span.attributes["missing"], ".*")', False),
    ("span.attributes[\"code\"] == 503", True),
    ("span.attributes[\"code\"] == 503.0", True),
    ('span.attributes["code"] == "503"', False),
    ("span.attributes[\"code\"] > 500 and span.attributes[\"code\"] < 504", True),
    ('span.name != "x"', True),
    ("span.attributes[\"missing\"] == nil", True),
    ("span.kind == SPAN_KIND_INTERNAL", True),
    ("span.status.code == STATUS_CODE_UNSET", True),
    ('resource.attributes["service.name"] == "agent" or false', True),
    ('scope.name == "test"', True),
    ('not (span.name == "span-0")', False),
    ('"b" > "a"', True),
    ("true == 1", False),
])
def test_conditions(condition: str, hit: bool) -> None:
    msg, span = one_span(code=503)
    run("traces", msg, f'set(span.attributes["hit"], true) where {condition}')
    assert (PMap(span.attributes).get("hit") is True) is hit


# -- contexts ------------------------------------------------------------------------------------

def test_span_fields() -> None:
    msg, span = one_span()
    run("traces", msg, 'set(span.status.code, STATUS_CODE_ERROR)', 'set(span.status.message, "boom")',
        "set(span.kind, SPAN_KIND_SERVER)", 'set(span.attributes["tid"], span.trace_id.string)',
        'set(span.trace_state["vendor"], "v1")')
    assert span.status.code == 2 and span.status.message == "boom" and span.kind == Span.SPAN_KIND_SERVER
    assert attrs(span.attributes)["tid"] == span.trace_id.hex()
    assert span.trace_state == "vendor=v1"


def test_spanevent_context() -> None:
    msg, span = one_span()
    ev = span.events.add()
    ev.name = "exception"
    run("traces", msg, 'set(spanevent.attributes["span"], span.name) where spanevent.name == "exception"')
    assert attrs(ev.attributes) == {"span": span.name}


def test_resource_and_scope_contexts_with_explicit_context_and_unprefixed_paths() -> None:
    msg = make_traces(2)
    run("traces", msg, 'set(attributes["env"], "prod")', context="resource")
    run("traces", msg, 'set(version, "1.0")', context="scope")
    assert attrs(msg.resource_spans[0].resource.attributes)["env"] == "prod"
    assert msg.resource_spans[0].scope_spans[0].scope.version == "1.0"


def test_metric_and_datapoint_contexts() -> None:
    msg = make_metrics(3)
    metric = msg.resource_metrics[0].scope_metrics[0].metrics[0]
    run("metrics", msg, 'set(metric.description, "Sum") where metric.type == METRIC_DATA_TYPE_SUM',
        'set(metric.unit, "1")')
    run("metrics", msg, 'set(datapoint.attributes["double"], datapoint.value_int * 2) where metric.name == "requests"')
    assert metric.description == "Sum" and metric.unit == "1"
    assert [PMap(p.attributes).get("double") for p in metric.sum.data_points] == [2, 4, 6]
    run("metrics", msg, "set(metric.aggregation_temporality, AGGREGATION_TEMPORALITY_DELTA)",
        "set(metric.is_monotonic, false)")
    assert metric.sum.aggregation_temporality == 1 and not metric.sum.is_monotonic


def test_log_context() -> None:
    msg = make_logs(2)
    records = msg.resource_logs[0].scope_logs[0].log_records
    run("logs", msg, 'set(log.severity_text, "FAIL") where log.body == "hello 1"',
        'set(log.attributes["sev"], log.severity_number)', 'set(log.body["k"], "v") where log.body == "hello 0"')
    assert [r.severity_text for r in records] == ["INFO", "FAIL"]
    assert attrs(records[1].attributes) == {"sev": 9}
    assert from_any(records[1].body) == "hello 1"


def test_group_conditions_are_ored_and_gate_statements() -> None:
    msg = make_traces(3)
    run("traces", msg, 'set(span.attributes["x"], 1)', conditions=('span.name == "span-0"', 'span.name == "span-2"'))
    assert [attrs(s.attributes) for s in msg.resource_spans[0].scope_spans[0].spans] == [{"x": 1}, {}, {"x": 1}]


# -- error_mode ----------------------------------------------------------------------------------

def test_error_modes() -> None:
    bad = 'set(span.attributes["x"], Split(span.attributes["n"], ","))'  # n is an int: Split fails
    msg, span = one_span(n=1)
    changed, handler = run("traces", msg, bad, 'set(span.attributes["after"], 1)', mode="ignore")
    assert handler.errors == 1 and attrs(span.attributes)["after"] == 1  # the next statement still ran
    msg, span = one_span(n=1)
    _, handler = run("traces", msg, bad, mode="silent")
    assert handler.errors == 1
    msg, span = one_span(n=1)
    with pytest.raises(StatementFailed, match="Split: expected a string"):
        run("traces", msg, bad, mode="propagate")


def test_set_rejects_out_of_range_values_at_runtime() -> None:
    msg, span = one_span()
    _, handler = run("traces", msg, "set(span.dropped_attributes_count, -1)")
    assert handler.errors == 1


def test_kv_helper_builds_maps() -> None:
    assert from_any(kv("a", {"b": 1}).value).to_dict() == {"b": 1}
