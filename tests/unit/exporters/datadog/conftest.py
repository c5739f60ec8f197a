"""Every test here runs twice: with the C renderer (exporters/datadog/_ddwire.c) and with the Python walk."""
from __future__ import annotations

import pytest

from exporters.datadog import metrics


@pytest.fixture(params=["native", "python"], autouse=True)
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(metrics, "_ddwire", None)
    else:
        assert metrics._ddwire is not None, "the C renderer is not built (setup.py: exporters.datadog._ddwire)"
    return str(request.param)
