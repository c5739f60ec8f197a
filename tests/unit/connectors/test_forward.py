"""The `forward` connector alone: it hands every payload on unchanged, for every signal, and holds nothing."""
from __future__ import annotations

import pytest

from connectors.forward import FACTORY, ForwardConfig
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.model import Signal
from pipeline.testing import NopHost, Sink, nop_settings, payload


def test_factory_connects_each_signal_to_itself_only() -> None:
    assert FACTORY.kind is Kind.CONNECTOR and FACTORY.type == "forward"
    assert set(FACTORY.connects) == {(s, s) for s in Signal}
    issues: list = []
    decode_dataclass(ForwardConfig, {"unknown": 1}, "connectors.forward", issues)
    assert [i.path for i in issues] == ["connectors.forward.unknown"]


@pytest.mark.parametrize("signal", list(Signal))
async def test_payloads_pass_through_as_they_are(signal: Signal) -> None:
    sink = Sink(signal)
    conn = FACTORY.create(nop_settings("forward", Kind.CONNECTOR, signal), ForwardConfig(), sink)
    await conn.start(NopHost())
    p = payload(signal, n=4)
    await conn.consume(p)
    assert sink.payloads == [p] and conn.mutates_data is False
    await conn.shutdown()
    await conn.shutdown()
