"""Fixtures e2e tests opt into."""
from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(params=["native", "python"])
def pagerduty_ingest(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The pagerduty exporter's ingest path: its C pass (exporters/pagerduty/_pdwire.c) or the Python loop."""
    from exporters.pagerduty import store

    if request.param == "native":
        assert store._pdwire is not None, "exporters/pagerduty/_pdwire.c was not built (setup.py)"
    else:
        monkeypatch.setattr(store, "_pdwire", None)
    yield request.param
