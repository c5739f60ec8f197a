"""Every test here runs twice: with the C renderer (exporters/loki/_lokiwire.c) and with the Python walk."""
from __future__ import annotations

import pytest

from exporters.loki import push


@pytest.fixture(params=["native", "python"], autouse=True)
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(push, "_lokiwire", None)
    else:
        assert push._lokiwire is not None, "the C renderer is not built (setup.py: exporters.loki._lokiwire)"
    return str(request.param)
