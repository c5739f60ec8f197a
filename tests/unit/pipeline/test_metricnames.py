"""receivers/metric_names: metrics whose name has no visible character are removed, nothing else is touched."""
from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from pipeline.metricnames import (
    INVISIBLE_CLASS,
    drop_unusable_metrics,
    is_unusable,
)
from pipeline.model import Signal, count_items
from pipeline.testing import kv, make_metrics


@pytest.mark.parametrize("name", ["", " ", "   ", "\t\n", "\x00", "\x7f", "\u00a0", "\u200b\u200d", "\u3000",
                                  "\ufeff", " \u2028 ", "\U000e0020"])
def test_names_without_a_visible_character_are_unusable(name: str) -> None:
    assert is_unusable(name)


@pytest.mark.parametrize("name", ["requests", "a", " a", "a ", "-", "_", "é", "запросы", "…", "\u200bx", "\x00y",
                                  "gen_ai.client.token.usage", "😀"])
def test_names_with_a_visible_character_are_kept(name: str) -> None:
    assert not is_unusable(name)


def test_the_invisible_class_matches_the_running_unicode_database() -> None:
    invisible = re.compile(f"[{INVISIBLE_CLASS}]")
    for cp in range(0x110000):
        c = chr(cp)
        expected = unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") or c.isspace()
        assert (invisible.match(c) is not None) == expected, f"U+{cp:04X}"


def request_with(*names: str, points: int = 2) -> ExportMetricsServiceRequest:
    """One resource and scope per name, each metric with `points` data points."""
    req = ExportMetricsServiceRequest()
    for name in names:
        req.resource_metrics.append(make_metrics(points, name=name).resource_metrics[0])  # type: ignore[union-attr]
    return req


def names_of(req: ExportMetricsServiceRequest) -> list[str]:
    return [m.name for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]


def test_a_request_with_usable_names_is_left_unchanged() -> None:
    req = request_with("requests", "é", "-")
    before = req.SerializeToString()
    assert drop_unusable_metrics(req) == (0, "")
    assert req.SerializeToString() == before


def test_unusable_metrics_are_removed_and_counted() -> None:
    req = request_with("a", " ", "b", "", "\u200b", points=3)
    # a scope holding a good and a bad metric keeps the good one
    sm = req.resource_metrics[0].scope_metrics[0]
    bad = sm.metrics.add()
    bad.CopyFrom(sm.metrics[0])
    bad.name = "\t"
    n, message = drop_unusable_metrics(req)
    assert n == 12 and count_items(Signal.METRICS, req) == 6
    assert names_of(req) == ["a", "b"]
    assert len(req.resource_metrics) == 2  # the emptied resources are gone
    assert message.startswith("4 metric(s) dropped (12 data points)")
    assert "\u200b" not in message and "\t" not in message


def test_emptied_scopes_go_but_untouched_empty_ones_stay() -> None:
    req = request_with("ok", " ")
    req.resource_metrics[1].resource.attributes.append(kv("service.name", "other"))
    req.resource_metrics[1].scope_metrics.add().scope.name = "kept-empty-scope"
    req.resource_metrics.add()  # an empty resource that was empty before
    assert drop_unusable_metrics(req)[0] == 2
    assert [len(rm.scope_metrics) for rm in req.resource_metrics] == [1, 1, 0]
    assert req.resource_metrics[1].scope_metrics[0].scope.name == "kept-empty-scope"


def test_a_metric_without_data_counts_no_points() -> None:
    req = ExportMetricsServiceRequest()
    req.resource_metrics.add().scope_metrics.add().metrics.add(name=" ")
    assert drop_unusable_metrics(req)[0] == 0
    assert len(req.resource_metrics) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=1, max_size=6))
def test_exactly_the_unusable_metrics_are_removed(names: list[str]) -> None:
    req = request_with(*names, points=1)
    n, message = drop_unusable_metrics(req)
    assert names_of(req) == [x for x in names if not is_unusable(x)]
    assert n == sum(1 for x in names if is_unusable(x))
    assert bool(message) == (n > 0)
    assert all(any(not (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs")) for ch in x)
               for x in names_of(req))
