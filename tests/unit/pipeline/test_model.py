from __future__ import annotations

import pytest

from pipeline.model import Payload, Signal, count_items, merge, split
from pipeline.testing import make_logs, make_metrics, make_traces

BUILDERS = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}


@pytest.mark.parametrize("signal", list(Signal))
def test_split_keeps_every_item_in_order(signal: Signal) -> None:
    p = Payload(signal, message=BUILDERS[signal](25))
    parts = split(signal, p, 10)
    assert [x.items for x in parts] == [10, 10, 5]
    assert sum(count_items(signal, x.message) for x in parts) == 25
    merged = merge(signal, parts)
    # resource/scope are repeated per part, items are identical and ordered
    assert merged.items == 25


def test_merge_of_untouched_payloads_concatenates_bytes_without_decoding() -> None:
    a = Payload(Signal.TRACES, raw=make_traces(3).SerializeToString(), items=3)
    b = Payload(Signal.TRACES, raw=make_traces(4).SerializeToString(), items=4)
    m = merge(Signal.TRACES, [a, b])
    assert m.raw_cached == a.raw_cached + b.raw_cached  # type: ignore[operator]
    assert a._message is None and b._message is None  # nothing was decoded
    assert count_items(Signal.TRACES, m.message) == 7


def test_a_mix_of_untouched_and_built_payloads_merges_as_bytes_without_decoding_the_untouched() -> None:
    # e.g. the batch processor merging OTLP requests (bytes) with a StatsD receiver's flush (a built message)
    untouched = Payload(Signal.METRICS, raw=make_metrics(6).SerializeToString(), items=6)
    built = Payload(Signal.METRICS, message=make_metrics(2))
    m = merge(Signal.METRICS, [untouched, built])
    assert untouched._message is None  # the large untouched request was not decoded
    assert m.raw_cached == untouched.raw_cached + built.message.SerializeToString()  # type: ignore[operator]
    assert m.items == 8 and count_items(Signal.METRICS, m.message) == 8


def test_mutable_drops_cached_bytes_and_copy_is_independent() -> None:
    msg = make_traces(2)
    p = Payload(Signal.TRACES, message=msg, raw=msg.SerializeToString())
    c = p.copy()
    p.mutable().resource_spans[0].scope_spans[0].spans[0].name = "changed"
    assert p.raw_cached is None
    assert c.message.resource_spans[0].scope_spans[0].spans[0].name == "span-0"
    assert (Signal.TRACES.request_type.FromString(p.serialize()).resource_spans[0].scope_spans[0].spans[0].name
            == "changed")
