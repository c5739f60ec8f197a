"""Every pagerduty exporter test runs with both ingest paths: the C pass (_pdwire) and the Python loop."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporters.pagerduty import store


@pytest.fixture(autouse=True, params=["native", "python"])
def ingest_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The path the stores made in the test use (`SeriesStore._native` is None for Python)."""
    if request.param == "native":
        assert store._pdwire is not None, "exporters/pagerduty/_pdwire.c was not built (setup.py)"
    else:
        monkeypatch.setattr(store, "_pdwire", None)
    yield request.param
