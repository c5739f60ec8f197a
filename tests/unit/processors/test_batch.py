from __future__ import annotations

import asyncio

import pytest

from pipeline.component import make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError, PermanentError, QueueFullError, RetryableError
from pipeline.model import Payload, Signal
from pipeline.testing import (
    Sink,
    make_logs,
    make_metrics,
    make_traces,
    nop_host,
    nop_settings,
    wait_until,
)
from processors.batch import FACTORY, BatchConfig, BatchProcessor

BUILDERS = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}


def issues_of(raw: dict[str, object]) -> list[str]:
    issues: list = []
    decode_dataclass(BatchConfig, raw, "processors.batch", issues)
    return [str(i) for i in issues]


def config_error(yaml_text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        load_text(yaml_text, make_factory_map([FACTORY]))
    return str(ei.value)


class GatedSink(Sink):
    """A sink whose consume waits until `gate` is set (a slow downstream)."""

    def __init__(self, signal: Signal = Signal.TRACES) -> None:
        super().__init__(signal)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def consume(self, payload: Payload) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().consume(payload)


def make(sink: Sink, signal: Signal = Signal.TRACES, **cfg: object) -> BatchProcessor:
    cfg.setdefault("timeout", 10.0)  # long enough that tests flush by size, force_flush or shutdown
    return FACTORY.create(nop_settings("batch", signal=signal), BatchConfig(**cfg), sink)  # type: ignore[arg-type]


def traces(n: int, name: str = "span") -> Payload:
    return Payload(Signal.TRACES, message=make_traces(n, name=name))


def span_names(sink: Sink) -> list[str]:
    return [s.name for m in sink.messages() for rs in m.resource_spans for ss in rs.scope_spans for s in ss.spans]


def sizes(sink: Sink) -> list[int]:
    return [p.items for p in sink.payloads]


# -- config ------------------------------------------------------------------

def test_default_config_validates() -> None:
    assert issues_of({}) == []
    cfg = BatchConfig()
    assert (cfg.send_batch_size, cfg.send_batch_max_size, cfg.timeout) == (8192, 0, 0.2)
    assert cfg.buffer_limit() == 10 * 8192
    assert FACTORY.type == "batch" and set(FACTORY.signals) == set(Signal)


def test_yaml_values_decode() -> None:
    issues: list = []
    cfg = decode_dataclass(BatchConfig, {"send_batch_size": 100, "send_batch_max_size": 150, "timeout": "10ms"},
                           "processors.batch", issues)
    assert issues == []
    assert cfg.timeout == pytest.approx(0.01)
    assert cfg.buffer_limit() == 1500


def test_typo_key_is_rejected_with_suggestion() -> None:
    text = config_error("processors:\n  batch: {send_batch_sise: 10}\n")
    assert "processors.batch.send_batch_sise: unknown key 'send_batch_sise'; did you mean 'send_batch_size'?" in text


def test_max_size_below_size_is_rejected_with_key_path() -> None:
    text = config_error("processors:\n  batch: {send_batch_size: 100, send_batch_max_size: 50}\n")
    assert ("processors.batch.send_batch_max_size: must be 0 (no limit) or at least send_batch_size (100), "
            "got 50") in text


@pytest.mark.parametrize("raw, key", [
    ({"send_batch_size": -1}, "send_batch_size"),
    ({"send_batch_max_size": -5}, "send_batch_max_size"),
    ({"send_batch_size": 100, "max_buffered_items": 10}, "max_buffered_items"),
    ({"timeout": 5}, "timeout"),  # a duration needs a unit
])
def test_bad_values_are_rejected(raw: dict[str, object], key: str) -> None:
    found = issues_of(raw)
    assert len(found) == 1 and found[0].startswith(f"error: processors.batch.{key}: "), found


def test_zero_max_size_means_no_limit() -> None:
    assert issues_of({"send_batch_size": 100, "send_batch_max_size": 0}) == []


# -- batching ----------------------------------------------------------------

async def test_batches_by_size_with_exact_boundaries() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=10)
    await proc.start(nop_host())
    for i in range(4):                       # 12 items: the 4th payload reaches the size
        await proc.consume(traces(3, name=f"a{i}"))
    await sink.wait_for_items(12)
    assert sizes(sink) == [12]
    for i in range(3):                       # 9 items: below the size, stays buffered
        await proc.consume(traces(3, name=f"b{i}"))
    assert proc.buffered_items == 9 and sizes(sink) == [12]
    await proc.force_flush()
    assert sizes(sink) == [12, 9] and proc.buffered_items == 0
    assert span_names(sink) == [f"{p}{i}-{j}" for p, n in (("a", 4), ("b", 3)) for i in range(n) for j in range(3)]
    tel = proc.settings.telemetry
    assert tel.value("otelpipe_processor_batch_batch_size_trigger_send_total", processor="batch") == 1
    await proc.shutdown()


async def test_split_by_max_size_keeps_order_and_bound() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=10, send_batch_max_size=10)
    await proc.start(nop_host())
    await proc.consume(traces(25))
    await sink.wait_for_items(20)
    # Full requests go out; the 5-item tail waits for more data, as in the Collector.
    assert sizes(sink) == [10, 10] and proc.buffered_items == 5
    for i in range(4):
        await proc.consume(traces(2, name=f"x{i}"))   # 13 buffered: one more full request, 3 left
    await sink.wait_for_items(30)
    await proc.shutdown()
    assert sizes(sink) == [10, 10, 10, 3]
    assert span_names(sink) == [f"span-{i}" for i in range(25)] + [f"x{i}-{j}" for i in range(4) for j in range(2)]


async def test_split_of_untouched_payloads_keeps_the_tail_as_bytes() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=8, send_batch_max_size=10)
    raws = [make_traces(7, name=f"r{i}").SerializeToString() for i in range(3)]
    for raw in raws:
        await proc.consume(Payload(Signal.TRACES, raw=raw, items=7))
    await proc.start(nop_host())
    await sink.wait_for_items(20)
    assert sizes(sink) == [10, 10]
    assert proc._pending[0].raw_cached is not None  # the next merge is a concatenation again
    await proc.force_flush()
    assert sizes(sink) == [10, 10, 1]
    assert span_names(sink) == [f"r{i}-{j}" for i in range(3) for j in range(7)]


async def test_timeout_flush_sends_by_itself() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=1000, timeout=0.01)
    await proc.start(nop_host())
    await proc.consume(traces(3))
    await proc.consume(traces(2))
    await sink.wait_for_items(5)
    assert sizes(sink) == [5]
    assert proc.settings.telemetry.value("otelpipe_processor_batch_timeout_trigger_send_total", processor="batch") == 1
    await proc.shutdown()


async def test_timeout_zero_sends_immediately() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=1000, timeout=0.0)
    await proc.start(nop_host())
    await proc.consume(traces(4))
    await sink.wait_for_items(4)
    await proc.consume(traces(2))
    await sink.wait_for_items(6)
    assert sizes(sink) == [4, 2]
    await proc.shutdown()


async def test_size_zero_sends_only_on_timeout_or_flush() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=0, max_buffered_items=1000)
    await proc.start(nop_host())
    for _ in range(10):
        await proc.consume(traces(50))
    for _ in range(5):
        await asyncio.sleep(0)  # give the worker turns; with no size trigger it must not send
    assert sink.payloads == [] and proc.buffered_items == 500
    await proc.force_flush()
    assert sizes(sink) == [500]
    await proc.shutdown()


async def test_shutdown_flushes_everything_then_refuses() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=100)
    await proc.start(nop_host())
    await proc.consume(traces(5))
    await proc.consume(traces(3))
    await proc.shutdown()
    assert sizes(sink) == [8]
    with pytest.raises(RetryableError):
        await proc.consume(traces(1))
    await proc.shutdown()  # twice is fine
    assert sizes(sink) == [8]


async def test_shutdown_without_start() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink)
    await proc.shutdown()
    await proc.shutdown()
    assert sink.payloads == []


async def test_shutdown_lets_the_inflight_send_finish() -> None:
    sink = GatedSink()
    proc = make(sink, send_batch_size=10)
    await proc.start(nop_host())
    await proc.consume(traces(10, name="first"))
    await asyncio.wait_for(sink.entered.wait(), 5)   # the worker is inside downstream's consume
    await proc.consume(traces(4, name="second"))
    stopping = asyncio.create_task(proc.shutdown())
    await asyncio.sleep(0)
    assert not stopping.done()
    sink.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert sizes(sink) == [10, 4]


async def test_back_pressure_when_buffer_is_full() -> None:
    sink = GatedSink()
    proc = make(sink, send_batch_size=10, max_buffered_items=20)
    await proc.start(nop_host())
    await proc.consume(traces(10))                   # taken by the worker, stuck downstream
    await asyncio.wait_for(sink.entered.wait(), 5)
    await proc.consume(traces(10))
    await proc.consume(traces(10))                   # 20 buffered: at the limit, still accepted at once
    blocked = asyncio.create_task(proc.consume(traces(1)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done() and proc.buffered_items == 21
    sink.gate.set()
    await asyncio.wait_for(blocked, 5)
    await proc.shutdown()
    assert sink.items == 31 and max(sizes(sink)) <= 21


async def test_untouched_payloads_merge_without_decoding() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=1000)
    msgs = [make_traces(3, service=f"svc{i}", name=f"n{i}") for i in range(3)]
    raws = [m.SerializeToString() for m in msgs]
    inputs = [Payload(Signal.TRACES, raw=r, items=3) for r in raws]
    for p in inputs:
        await proc.consume(p)
    await proc.force_flush()
    assert len(sink.payloads) == 1
    out = sink.payloads[0]
    assert out.items == 9
    assert out.raw_cached == b"".join(raws)
    assert out._message is None and all(p._message is None for p in inputs)  # nothing was decoded
    expected = Signal.TRACES.request_type()
    for m in msgs:
        expected.resource_spans.extend(m.resource_spans)
    assert out.message == expected
    await proc.shutdown()


async def test_mixed_mutated_and_untouched_payloads_merge_correctly() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=1000)
    untouched = Payload(Signal.TRACES, raw=make_traces(2, name="raw").SerializeToString(), items=2)
    changed = Payload(Signal.TRACES, raw=make_traces(3, name="chg").SerializeToString(), items=3)
    changed.mutable().resource_spans[0].scope_spans[0].spans[0].name = "renamed"
    assert changed.raw_cached is None
    await proc.consume(untouched)
    await proc.consume(changed)
    await proc.force_flush()
    assert sizes(sink) == [5]
    assert span_names(sink) == ["raw-0", "raw-1", "renamed", "chg-1", "chg-2"]
    assert sink.payloads[0].serialize() == sink.payloads[0].message.SerializeToString()
    await proc.shutdown()


@pytest.mark.parametrize("signal", list(Signal))
async def test_every_signal_batches_and_splits(signal: Signal) -> None:
    sink = Sink(signal)
    proc = make(sink, signal, send_batch_size=6, send_batch_max_size=8)
    await proc.start(nop_host())
    for _ in range(3):
        await proc.consume(Payload(signal, message=BUILDERS[signal](5)))
    await proc.shutdown()
    assert sink.items == 15
    assert all(p.items <= 8 for p in sink.payloads)
    assert all(p.signal is signal for p in sink.payloads)
    assert [type(m) for m in sink.messages()] == [signal.request_type] * len(sink.payloads)


async def test_metrics_split_inside_one_metric_keeps_points_in_order() -> None:
    sink = Sink(Signal.METRICS)
    proc = make(sink, Signal.METRICS, send_batch_size=4, send_batch_max_size=4)
    await proc.consume(Payload(Signal.METRICS, message=make_metrics(10)))
    await proc.shutdown()
    assert sizes(sink) == [4, 4, 2]
    values = [dp.as_int for m in sink.messages() for rm in m.resource_metrics for sm in rm.scope_metrics
              for met in sm.metrics for dp in met.sum.data_points]
    assert values == list(range(1, 11))


async def test_downstream_failure_is_counted_as_dropped() -> None:
    sink = Sink(Signal.TRACES)
    sink.fail_with, sink.fail_times = PermanentError("backend says no"), 1
    proc = make(sink, send_batch_size=1000)
    await proc.consume(traces(7))
    await proc.force_flush()                 # does not raise: the sender was answered already
    tel = proc.settings.telemetry
    assert tel.value("otelpipe_processor_dropped_spans_total", processor="batch", reason="export_failed") == 7
    await proc.consume(traces(2))
    await proc.shutdown()
    assert sizes(sink) == [2]
    assert tel.value("otelpipe_processor_dropped_spans_total", processor="batch", reason="export_failed") == 7


async def test_empty_requests_are_not_sent_alone() -> None:
    sink = Sink(Signal.TRACES)
    proc = make(sink, send_batch_size=10)
    await proc.consume(Payload(Signal.TRACES))
    await proc.force_flush()
    assert sink.payloads == []
    await proc.consume(Payload(Signal.TRACES))
    await proc.consume(traces(2))
    await proc.shutdown()
    assert sizes(sink) == [2]


class RefusingSink(Sink):
    """Downstream whose queue is full until `room` is set: raises QueueFullError meanwhile."""

    def __init__(self, signal: Signal = Signal.TRACES) -> None:
        super().__init__(signal)
        self.room = asyncio.Event()
        self.refusals = 0

    async def consume(self, payload: Payload) -> None:
        if not self.room.is_set():
            self.refusals += 1
            raise QueueFullError("sending queue of exporter x is full", retry_after=1.0)
        await super().consume(payload)


async def test_refused_batch_is_held_and_new_data_refused_until_downstream_takes_it() -> None:
    sink = RefusingSink()
    proc = make(sink, send_batch_size=10)
    await proc.start(nop_host())
    await proc.consume(traces(6, name="a"))
    await proc.consume(traces(6, name="b"))          # 12 items: a size-triggered send, refused downstream
    await wait_until(lambda: proc.blocked, what="batch to notice the refusal")
    with pytest.raises(QueueFullError) as ei:       # acknowledged data is held; new data is refused
        await proc.consume(traces(1, name="late"))
    assert ei.value.retry_after == 1.0
    assert proc.buffered_items == 12
    sink.room.set()                                  # the queue has room again: the held batch goes out
    await sink.wait_for_items(12)
    await wait_until(lambda: not proc.blocked, what="batch to accept again")
    await proc.consume(traces(2, name="c"))
    await proc.shutdown()
    assert span_names(sink) == [f"{p}-{i}" for p, n in (("a", 6), ("b", 6), ("c", 2)) for i in range(n)]
    tel = proc.settings.telemetry
    assert tel.value("otelpipe_processor_dropped_spans_total") == 0


async def test_shutdown_retries_a_refused_flush_and_counts_only_what_the_deadline_cuts() -> None:
    sink = RefusingSink()
    proc = make(sink, send_batch_size=100)
    await proc.consume(traces(5))
    stopping = asyncio.create_task(proc.shutdown())
    await wait_until(lambda: sink.refusals >= 2, what="shutdown to retry the refused flush")
    assert not stopping.done()
    stopping.cancel()                                # the Service's shutdown deadline
    with pytest.raises(asyncio.CancelledError):
        await stopping
    tel = proc.settings.telemetry
    assert tel.value("otelpipe_processor_dropped_spans_total", reason="shutdown") == 5
    assert tel.value("otelpipe_processor_dropped_spans_total") == 5


async def test_permanent_error_already_counted_by_the_exporter_is_not_counted_again() -> None:
    err = PermanentError("backend says no")
    err.counted = True
    sink = Sink(Signal.TRACES)
    sink.fail_with, sink.fail_times = err, 1
    proc = make(sink, send_batch_size=1000)
    await proc.consume(traces(7))
    await proc.force_flush()
    assert proc.settings.telemetry.value("otelpipe_processor_dropped_spans_total") == 0
    await proc.shutdown()
