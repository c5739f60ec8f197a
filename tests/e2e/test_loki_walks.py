"""The SDK test of test_loki.py once more, with each of the exporter's two walks of a request.

The loki exporter writes push bodies with its C renderer (exporters/loki/_lokiwire.c) where it is built
and the config is the usual one (raw lines, structured metadata, labels from resources), else with
PushBuilder's Python walk (exporters/loki/push.py); both must deliver the same entries. With the C
renderer, every request of the test must have been written by it, not handed back to Python.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporters.loki import push
from tests.e2e.test_loki import (  # noqa: F401 - fixtures and tests collected again here
    intake,
    svc,
    test_sdk_logs_arrive_once_each_in_their_stream_with_time_ids_and_attributes,
)


@pytest.fixture(params=["native", "python"], autouse=True)
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.param == "python":
        monkeypatch.setattr(push, "_lokiwire", None)
        yield
        return
    assert push._lokiwire is not None, "the C renderer is not built (setup.py: exporters.loki._lokiwire)"
    outcomes: list[bool] = []
    native = push.PushBuilder._build_native

    def spy(self: push.PushBuilder, raw: bytes) -> push.Batch | None:
        batch = native(self, raw)
        outcomes.append(batch is not None)
        return batch

    monkeypatch.setattr(push.PushBuilder, "_build_native", spy)
    yield
    assert outcomes and all(outcomes), outcomes
