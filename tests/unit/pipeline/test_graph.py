from __future__ import annotations

from pipeline.config.loader import load_text
from pipeline.graph import FanOut, Graph
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import NopHost, Sink, make_traces
from tests.testdata.fakes import SinkExporter, factories

CONFIG = """
receivers: {fake: {}}
processors: {tag: {value: a}, tag/b: {value: b}}
exporters: {sink: {sending_queue: {enabled: false}}, sink/2: {sending_queue: {enabled: false}}}
service:
  pipelines:
    traces/a: {receivers: [fake], processors: [tag], exporters: [sink]}
    traces/b: {receivers: [fake], processors: [tag/b], exporters: [sink/2]}
    traces/raw: {receivers: [fake], exporters: [sink, sink/2]}
"""


async def test_receiver_fans_out_to_pipelines_without_cross_talk() -> None:
    reg: dict[str, SinkExporter] = {}
    fmap = factories(reg)
    g = Graph(load_text(CONFIG, fmap, env={}), fmap, Telemetry(process_metrics=False))
    g.build()
    await g.start(NopHost())
    (recv,) = [n.component for n in g.receivers]
    await recv.consumers[Signal.TRACES].consume(Payload(Signal.TRACES, message=make_traces(2)))
    names_a = [s.name for p in reg["sink/traces"].payloads for s in p.message.resource_spans[0].scope_spans[0].spans]
    names_b = [s.name for p in reg["sink/2/traces"].payloads for s in p.message.resource_spans[0].scope_spans[0].spans]
    # sink gets pipeline a's tagged copy and the raw pipeline's untouched one; never pipeline b's tag
    assert sorted(names_a) == ["span-0", "span-0:a", "span-1", "span-1:a"]
    assert sorted(names_b) == ["span-0", "span-0:b", "span-1", "span-1:b"]
    await g.shutdown()
    assert g.still_running() == []


def test_start_order_is_exporters_processors_receivers() -> None:
    fmap = factories({})
    g = Graph(load_text(CONFIG, fmap, env={}), fmap, Telemetry(process_metrics=False))
    g.build()
    kinds = [n.kind.value for n in g.start_order()]
    assert kinds == sorted(kinds, key=["exporter", "processor", "receiver"].index)


async def test_fanout_copies_only_for_mutating_consumers() -> None:
    ro1, ro2, mut = Sink(), Sink(), Sink(mutates_data=True)
    p = Payload(Signal.TRACES, message=make_traces(1))
    await FanOut([ro1, ro2, mut]).consume(p)
    assert ro1.payloads[0] is p and ro2.payloads[0] is p
    assert mut.payloads[0] is not p
    m1, m2 = Sink(mutates_data=True), Sink(mutates_data=True)
    q = Payload(Signal.TRACES, message=make_traces(1))
    await FanOut([m1, m2]).consume(q)
    assert m1.payloads[0] is not q and m2.payloads[0] is q


async def test_processor_incoming_and_outgoing_counters_move() -> None:
    reg: dict[str, SinkExporter] = {}
    fmap = factories(reg)
    tel = Telemetry(process_metrics=False)
    g = Graph(load_text(CONFIG, fmap, env={}), fmap, tel)
    g.build()
    await g.start(NopHost())
    (recv,) = [n.component for n in g.receivers]
    await recv.consumers[Signal.TRACES].consume(Payload(Signal.TRACES, message=make_traces(3)))
    await g.shutdown()
    for proc, pipeline in (("tag", "traces/a"), ("tag/b", "traces/b")):
        assert tel.value("otelpipe_processor_incoming_spans_total", processor=proc, pipeline=pipeline) == 3
        assert tel.value("otelpipe_processor_outgoing_spans_total", processor=proc, pipeline=pipeline) == 3
    assert tel.value("otelpipe_processor_incoming_spans_total", pipeline="traces/raw") == 0
