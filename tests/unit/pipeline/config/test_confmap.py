"""Raw config loading: YAML alias bombs, recursive aliases and deep nesting are refused with a clear issue.

A "billion laughs" document is tiny on disk but expands, through aliases, to
~10^9 nodes; PyYAML shares the aliased objects, so the blow-up happens later in
whatever walks the data (env expansion, decoding). The loader must refuse it
before any of that runs, and still accept ordinary anchors and merge keys.
"""
from __future__ import annotations

import pytest

from pipeline.config.confmap import MAX_ALIAS_EXPANSION, parse_yaml
from pipeline.config.loader import load_text
from pipeline.errors import ConfigError
from tests.testdata.fakes import factories


def laughs(levels: int, fanout: int = 10) -> str:
    """A billion-laughs document: `levels` lists, each holding `fanout` aliases of the one before."""
    lines = ['l0: &l0 "lol"']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*l{i - 1}"] * fanout)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_by_the_parser() -> None:
    data, issues = parse_yaml(laughs(9), "bomb.yaml")  # 10^9 strings once expanded
    assert len(data) == 0  # not `data == {}`: a failure would try to print the expanded bomb
    assert len(issues) == 1
    issue = issues[0]
    assert issue.file == "bomb.yaml" and issue.path == ""
    assert issue.message.startswith("invalid YAML: line ")
    assert "aliases" in issue.message and str(MAX_ALIAS_EXPANSION) in issue.message


def test_alias_bomb_fails_validation_with_one_clear_issue() -> None:
    # 10^6 nodes once expanded: enough to take seconds downstream, far past the bound.
    with pytest.raises(ConfigError) as err:
        load_text(laughs(6), factories(), env={}, name="bomb.yaml")
    messages = [str(i) for i in err.value.issues if not i.warning]
    alias_issues = [m for m in messages if "aliases" in m]
    assert len(alias_issues) == 1, messages
    assert alias_issues[0].startswith("bomb.yaml: error: ") and "invalid YAML" in alias_issues[0]


def test_recursive_alias_is_refused() -> None:
    data, issues = parse_yaml("a: &a [1, *a]\n", "loop.yaml")
    assert len(data) == 0
    assert len(issues) == 1 and "invalid YAML" in issues[0].message and "refers to itself" in issues[0].message


def test_deep_nesting_is_an_issue_not_a_crash() -> None:
    data, issues = parse_yaml("a: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    assert data == {}
    assert len(issues) == 1 and "invalid YAML" in issues[0].message and "nested" in issues[0].message


def test_ordinary_anchors_aliases_and_merge_keys_still_work() -> None:
    text = """
receivers:
  fake: &common {endpoint: "127.0.0.1:5000"}
  fake/two:
    <<: *common
    endpoint: "127.0.0.1:5001"
processors:
  tag: {value: &v x}
exporters:
  sink: {api_key: *v}
service:
  pipelines:
    traces: {receivers: [fake, fake/two], processors: [tag], exporters: [sink]}
"""
    data, issues = parse_yaml(text, "ok.yaml")
    assert issues == []
    assert data["receivers"] == {"fake": {"endpoint": "127.0.0.1:5000"}, "fake/two": {"endpoint": "127.0.0.1:5001"}}
    assert data["exporters"]["sink"] == {"api_key": "x"}
    cfg = load_text(text, factories(), env={})
    assert len(cfg.pipelines) == 1
    # a key written twice is still an error, merge keys or not
    _, issues = parse_yaml("a: {<<: {x: 1}, y: 2, y: 3}\n", "dup.yaml")
    assert len(issues) == 1 and "duplicate key 'y'" in issues[0].message


def test_many_aliases_below_the_bound_are_fine() -> None:
    # 10^4 nodes once expanded: aliasing well inside the bound is ordinary YAML.
    data, issues = parse_yaml(laughs(4), "ok.yaml")
    assert issues == []
    assert len(data["l4"]) == 10 and data["l4"][0][0][0][0] == "lol"
