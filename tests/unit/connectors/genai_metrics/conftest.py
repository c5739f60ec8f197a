"""Every genai_metrics test runs with both span readers: the C one (_genaiwire) and the Python one."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.genai_metrics import runs


@pytest.fixture(autouse=True, params=["native", "python"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The reader the connectors made in the test use (`RunAccounting.native` is None for Python)."""
    if request.param == "native":
        assert runs._genaiwire is not None, "connectors/genai_metrics/_genaiwire.c was not built (setup.py)"
    else:
        monkeypatch.setattr(runs, "_genaiwire", None)
    yield request.param
