"""The metrics tests of test_datadog.py once more, with each of the exporter's two walks of a request.

The datadog exporter maps metrics with its C renderer (exporters/datadog/_ddwire.c) where it is built,
else with the Python walk of exporters/datadog/metrics.py; both must deliver the same series.
"""
from __future__ import annotations

import pytest

from exporters.datadog import metrics
from tests.e2e.test_datadog import (  # noqa: F401 - fixtures and tests collected again here
    intake,
    svc,
    test_sdk_metrics_arrive_as_counts_and_gauges_with_their_tags,
    test_statsd_counters_gauges_and_timers_arrive_exactly,
)


@pytest.fixture(params=["native", "python"], autouse=True)
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "python":
        monkeypatch.setattr(metrics, "_ddwire", None)
    else:
        assert metrics._ddwire is not None, "the C renderer is not built (setup.py: exporters.datadog._ddwire)"
