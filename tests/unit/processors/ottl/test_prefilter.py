"""The wire-bytes prefilter: literal extraction, and soundness against the decoded run (the oracle)."""
from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.testing import kv, make_traces
from processors.ottl import prefilter
from processors.ottl.runner import ErrorHandler, build_group, run_statements


@pytest.mark.parametrize(("pattern", "need"), [
    ("^/health$", {b"/health"}),
    (r"password\=[^\s]*", {b"password="}),
    ("abc?d", {b"ab", b"d"}),
    ("a+b", {b"a", b"b"}),
    ("x(yz)*w", {b"x", b"w"}),
    ("a|b", None),
    ("(?i)abc", None),
    (r"\d+", None),
    (r"a\pLb", None),
    (r"\x41bc", None),
])
def test_regex_literals(pattern: str, need: set[bytes] | None) -> None:
    got = prefilter.regex_literals(pattern)
    assert got == (prefilter.ALWAYS if need is None else frozenset({frozenset(need)}))


def test_glob_literals_and_translation() -> None:
    assert prefilter.glob_literals("/user/*/list/?") == frozenset({frozenset({b"/user/", b"/list/"})})
    rx = prefilter.glob_to_regex("/u/*/[a-c]/{x,y}\\*")
    assert rx.fullmatch("/u/any/thing/b/y*") and not rx.fullmatch("/u/a/d/x*")


def test_and_or_algebra() -> None:
    a, b = prefilter.lits("a"), prefilter.lits("b")
    assert prefilter.and_(a, prefilter.ALWAYS) == a
    assert prefilter.or_(a, prefilter.ALWAYS) == prefilter.ALWAYS
    assert prefilter.and_(a, b) == frozenset({frozenset({b"a", b"b"})})
    assert prefilter.holds(prefilter.or_(a, b), b"xbx") and not prefilter.holds(prefilter.and_(a, b), b"xbx")
    assert not prefilter.holds(prefilter.NEVER, b"anything")


STATEMENTS = [
    'set(span.attributes["env"], "prod") where span.name == "checkout"',
    'delete_key(span.attributes, "password")',
    'replace_pattern(span.attributes["http.route"], "/users/[0-9]+", "/users/{id}")',
    'set(span.attributes["hit"], true) where IsMatch(span.name, "^health")',
    'set(span.status.code, STATUS_CODE_ERROR) where span.attributes["code"] == 500',
    'replace_match(span.name, "GET /api/*", "GET /api")',
    'set(span.attributes["r"], 1) where resource.attributes["service.name"] == "db" or span.name == "q"',
    'delete_matching_keys(span.attributes, "^secret\\\\.")',
]
NAMES = st.sampled_from(["checkout", "health-1", "q", "GET /api/x", "other", "healthz", "x"])
KEYS = st.sampled_from(["password", "http.route", "code", "secret.k", "env", "plain"])
VALUES = st.one_of(st.sampled_from(["/users/12", "prod", "db", "v", "/users/x"]), st.integers(499, 501))


@settings(max_examples=150, deadline=None)
@given(name=NAMES, attrs=st.dictionaries(KEYS, VALUES, max_size=4), service=st.sampled_from(["agent", "db"]),
       statement=st.sampled_from(STATEMENTS))
def test_a_request_the_prefilter_skips_is_never_changed(name: str, attrs: dict[str, object], service: str,
                                                        statement: str) -> None:
    msg = make_traces(1, service=service)
    span = msg.resource_spans[0].scope_spans[0].spans[0]
    span.name = name
    span.attributes.extend(kv(k, v) for k, v in attrs.items())
    raw = msg.SerializeToString()
    group, issues = build_group("traces", "", (statement,), (), "ignore")
    assert group is not None and not issues
    changed = run_statements("traces", msg, [group], ErrorHandler(logging.getLogger("t"), lambda: 0.0))
    if not prefilter.holds(group.need, raw):
        assert not changed, (statement, name, attrs)


@pytest.mark.parametrize("backend", ["auto", "re"])
def test_checker_agrees_with_holds(backend: str) -> None:
    need = prefilter.or_(prefilter.lits("alpha", "beta"), prefilter.lits("gamma"))
    check = prefilter.Checker(need, backend=backend)
    for raw in (b"", b"alpha", b"alpha beta", b"xxgammaxx", b"beta alpha alpha", b"gamm"):
        assert check(raw) == prefilter.holds(need, raw)
    assert prefilter.Checker(prefilter.ALWAYS, backend=backend)(b"")
    assert not prefilter.Checker(prefilter.NEVER, backend=backend)(b"anything")
