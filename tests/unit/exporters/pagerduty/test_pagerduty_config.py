"""Rule validation: every problem at once, each at its key path, with the fix."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporters.pagerduty import templates
from exporters.pagerduty.config import PagerDutyExporterConfig
from otelpipe import components
from pipeline.component import ComponentID
from pipeline.config.loader import load, load_text
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[4]
EXAMPLE = ROOT / "config" / "examples" / "agent-alerts.yaml"
RULE = {"name": "r", "metric": "agent.requests", "aggregation": "increase", "condition": ">", "threshold": 1}


def problems(pagerduty: dict[str, object]) -> list[str]:
    doc = {"receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
           "exporters": {"pagerduty": {"routing_key": "k", **pagerduty}},
           "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["pagerduty"]}}}}
    try:
        load_text(yaml.safe_dump(doc), components.factories(), env={})
    except ConfigError as e:
        return [f"{i.path}: {i.message}" for i in e.issues if not i.warning]
    return []


def test_the_shipped_example_loads_with_its_five_rules() -> None:
    cfg = load([str(EXAMPLE)], components.factories(), env={"PAGERDUTY_ROUTING_KEY": "x"})
    pd = cfg.exporters[ComponentID("pagerduty")]
    assert isinstance(pd, PagerDutyExporterConfig)
    assert [r.name for r in pd.rules] == ["agent-error-rate", "agent-latency-regression", "token-burn",
                                          "tool-failure-rate", "hallucination-rate"]
    assert [r.severity for r in pd.rules] == ["critical", "critical", "error", "error", "warning"]


def test_a_minimal_rule_is_valid() -> None:
    assert problems({"rules": [RULE]}) == []


def test_routing_key_and_rules_are_required() -> None:
    found = problems({"routing_key": ""})
    assert any(p.startswith("exporters.pagerduty.routing_key: is required") for p in found)
    assert "exporters.pagerduty.rules: at least one rule is required" in found


@pytest.mark.parametrize(("rule", "expected"), [
    ({"aggregation": "p98"}, "exporters.pagerduty.rules[0].aggregation: invalid value 'p98': must be one of"),
    ({"aggregation": "p98"}, "did you mean 'p99'?"),
    ({"condition": "=>"}, "exporters.pagerduty.rules[0].condition: invalid value '=>'"),
    ({"window": "5 minutes"}, "exporters.pagerduty.rules[0].window: invalid duration '5 minutes'"),
    ({"window": "0s"}, "exporters.pagerduty.rules[0].window: must be greater than 0"),
    ({"for": "-1m"}, "exporters.pagerduty.rules[0].for: invalid duration"),
    ({"severity": "page"}, "exporters.pagerduty.rules[0].severity: invalid value 'page'"),
    ({"threshold": "high"}, "exporters.pagerduty.rules[0].threshold: expected a number"),
    ({"fo": "1m"}, "exporters.pagerduty.rules[0].fo: unknown key 'fo'; did you mean 'for'?"),
    ({"summary": "{value} for {tool}"}, "exporters.pagerduty.rules[0].summary: refers to {tool}, which is neither"),
    ({"summary": "{value"}, "exporters.pagerduty.rules[0].summary: unclosed '{'"),
    ({"summary": "a } b"}, "exporters.pagerduty.rules[0].summary: single '}'"),
    ({"summary": "{value:.2q}"}, "exporters.pagerduty.rules[0].summary: invalid format spec '.2q'"),
    ({"summary": "{rule:>9}"}, "only {value} and {threshold} take a format spec"),
    ({"links": [{"href": "http://x/{tool}"}]}, "exporters.pagerduty.rules[0].links[0].href: refers to {tool}"),
    ({"links": [{"text": "x"}]}, "exporters.pagerduty.rules[0].links[0].href: is required"),
    ({"filter": {"status": {"regx": "5.."}}},
     "exporters.pagerduty.rules[0].filter.status.regx: unknown key 'regx'; did you mean 'regex'?"),
    ({"filter": {"status": {"regex": "(5"}}}, "exporters.pagerduty.rules[0].filter.status.regex: invalid regular"),
    ({"filter": {"status": None}}, "exporters.pagerduty.rules[0].filter.status: must be a value, a list of values"),
    ({"filter": {"status": []}}, "exporters.pagerduty.rules[0].filter.status: a list of values must be non-empty"),
    ({"ratio_to": {"aggregation": "avgg"}}, "exporters.pagerduty.rules[0].ratio_to.aggregation: invalid value"),
    ({"ratio_to": {"offset": "-1h"}}, "exporters.pagerduty.rules[0].ratio_to.offset: invalid duration"),
    ({"ratio_to": {"group_by": ["tool"]}}, "exporters.pagerduty.rules[0].ratio_to.group_by: ['tool'] not in"),
    ({"ratio_to": {"filter": {"a": {"regex": "["}}}}, "exporters.pagerduty.rules[0].ratio_to.filter.a.regex"),
    ({"min_volume": {"aggregation": "count"}}, "exporters.pagerduty.rules[0].min_volume.threshold: is required"),
    ({"group_by": ["a", "a"]}, "exporters.pagerduty.rules[0].group_by: names an attribute twice"),
    ({"limit": -1}, "exporters.pagerduty.rules[0].limit: must be 0 (no limit) or more"),
    ({"name": ""}, "exporters.pagerduty.rules[0].name: must not be empty"),
])
def test_rule_problems_are_reported_at_their_key(rule: dict[str, object], expected: str) -> None:
    found = problems({"rules": [{**RULE, **rule}]})
    assert any(expected in p for p in found), found


def test_missing_rule_fields_are_each_reported() -> None:
    found = problems({"rules": [{"name": "r"}]})
    for key in ("metric", "aggregation", "condition", "threshold"):
        assert f"exporters.pagerduty.rules[0].{key}: is required" in found


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"rules": [{**RULE, "aggregation": "median"}, {**RULE, "name": "s", "window": "soon"}]})
    assert any(p.startswith("exporters.pagerduty.rules[0].aggregation") for p in found)
    assert any(p.startswith("exporters.pagerduty.rules[1].window") for p in found)


def test_duplicate_rule_names_are_refused() -> None:
    assert any(p.startswith("exporters.pagerduty.rules[1].name: duplicate rule name 'r' (also rules[0])")
               for p in problems({"rules": [RULE, RULE]}))


@pytest.mark.parametrize(("block", "expected"), [
    ({"endpoint": "events.pagerduty.com"}, "exporters.pagerduty.endpoint: invalid URL"),
    ({"evaluation_interval": "0s"}, "exporters.pagerduty.evaluation_interval: must be greater than 0"),
    ({"sending_queue": {"enabled": False}}, "exporters.pagerduty.sending_queue.enabled: must be true"),
    ({"max_series": 0}, "exporters.pagerduty.max_series: must be at least 1"),
])
def test_exporter_problems(block: dict[str, object], expected: str) -> None:
    found = problems({"rules": [RULE], **block})
    assert any(p.startswith(expected) for p in found), found


def test_the_routing_key_never_appears_in_problems_or_repr() -> None:
    secret = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"
    found = problems({"routing_key": secret, "rules": [{**RULE, "aggregation": "nope"}]})
    assert found and not any(secret in p for p in found)
    cfg = load_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {"pagerduty": {"routing_key": secret, "rules": [RULE]}},
        "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": ["pagerduty"]}}}}),
        components.factories(), env={})
    assert secret not in repr(cfg.exporters[ComponentID("pagerduty")])


def test_templates_render_values_fields_and_escaped_braces() -> None:
    parts = templates.parse("{{x}} {rule}: {value:.1%} > {threshold} on {tool.name} ({group}) {value}")
    assert templates.check(parts, ["tool.name"]) == []
    text = templates.render(parts, {"value": 0.0731, "threshold": 0.05},
                            {"rule": "r", "tool.name": "search", "group": "tool.name=search"})
    assert text == "{x} r: 7.3% > 0.05 on search (tool.name=search) 0.0731"
    assert templates.render(templates.parse("{value}"), {"value": None}, {}) == "n/a"
    assert templates.render(templates.parse("{value}"), {"value": float("inf")}, {}) == "+Inf"
    assert templates.render(templates.parse("{value}"), {"value": 1200.0}, {}) == "1200"
