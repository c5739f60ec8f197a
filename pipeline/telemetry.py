"""otelpipe's own metrics: the one place their names are defined.

Names mirror the Collector's internal metrics with the `otelpipe_` prefix so the
well-known Collector dashboards port by a prefix swap. Everything lives in a
Service-owned `CollectorRegistry` (never the global one), and components only
record through the small observer objects below, which the shared wrappers
(receiver helpers, processor adapter, exporter helper) call for them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.process_collector import ProcessCollector

from pipeline.model import Signal

if TYPE_CHECKING:
    from pipeline.component import Settings

PREFIX = "otelpipe_"


class Telemetry:
    """The registry and the standard per-signal counters of one Service."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics:
            ProcessCollector(namespace="otelpipe", registry=self.registry)
        self._custom: dict[str, MetricWrapperBase] = {}
        r = self.registry
        self.receiver_accepted: dict[Signal, Counter] = {}
        self.receiver_refused: dict[Signal, Counter] = {}
        self.processor_dropped: dict[Signal, Counter] = {}
        self.processor_incoming: dict[Signal, Counter] = {}
        self.processor_outgoing: dict[Signal, Counter] = {}
        self.exporter_sent: dict[Signal, Counter] = {}
        self.exporter_failed: dict[Signal, Counter] = {}
        self.exporter_enqueue_failed: dict[Signal, Counter] = {}
        for sig in Signal:
            item = sig.item_name
            words = item.replace("_", " ")
            self.receiver_accepted[sig] = Counter(
                f"{PREFIX}receiver_accepted_{item}", f"Number of {words} successfully pushed into the pipeline.",
                ["receiver", "transport"], registry=r)
            self.receiver_refused[sig] = Counter(
                f"{PREFIX}receiver_refused_{item}", f"Number of {words} that could not be pushed into the pipeline.",
                ["receiver", "transport", "reason"], registry=r)
            self.processor_dropped[sig] = Counter(
                f"{PREFIX}processor_dropped_{item}", f"Number of {words} dropped by the processor.",
                ["processor", "pipeline", "reason"], registry=r)
            self.processor_incoming[sig] = Counter(
                f"{PREFIX}processor_incoming_{item}", f"Number of {words} that entered the processor.",
                ["processor", "pipeline"], registry=r)
            self.processor_outgoing[sig] = Counter(
                f"{PREFIX}processor_outgoing_{item}", f"Number of {words} the processor handed on.",
                ["processor", "pipeline"], registry=r)
            self.exporter_sent[sig] = Counter(
                f"{PREFIX}exporter_sent_{item}", f"Number of {words} successfully sent to destination.",
                ["exporter"], registry=r)
            self.exporter_failed[sig] = Counter(
                f"{PREFIX}exporter_send_failed_{item}", f"Number of {words} in failed attempts to send to destination.",
                ["exporter", "reason"], registry=r)
            self.exporter_enqueue_failed[sig] = Counter(
                f"{PREFIX}exporter_enqueue_failed_{item}", f"Number of {words} failed to be added to the sending queue.",
                ["exporter", "reason"], registry=r)
        self.queue_size = Gauge(f"{PREFIX}exporter_queue_size", "Current size of the sending queue, in the unit of its sizer (requests by default).",
                                ["exporter", "data_type"], registry=r)
        self.queue_capacity = Gauge(f"{PREFIX}exporter_queue_capacity", "Fixed capacity of the sending queue, in the unit of its sizer (requests by default).",
                                    ["exporter", "data_type"], registry=r)
        self.export_duration = Histogram(
            f"{PREFIX}exporter_send_duration_seconds", "Duration of one push to the destination, by outcome.",
            ["exporter", "data_type", "outcome"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.config_reloads = Counter(f"{PREFIX}config_reloads", "Configuration reloads by result.", ["result"], registry=r)

    def receiver(self, receiver_id: str, transport: str) -> ReceiverObs:
        return ReceiverObs(self, receiver_id, transport)

    def processor(self, settings: Settings) -> ProcessorObs:
        assert settings.signal is not None
        return ProcessorObs(self, str(settings.id), settings.pipeline, settings.signal)

    def exporter(self, settings: Settings) -> ExporterObs:
        assert settings.signal is not None
        return ExporterObs(self, str(settings.id), settings.signal)

    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> Counter:
        """A component-specific counter (e.g. StatsD unknown fields); same name returns the same counter."""
        return self._get_or_make(Counter, name, documentation, labelnames)  # type: ignore[return-value]

    def gauge(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> Gauge:
        """A component-specific gauge; same name returns the same gauge."""
        return self._get_or_make(Gauge, name, documentation, labelnames)  # type: ignore[return-value]

    def _get_or_make(self, cls: type[MetricWrapperBase], name: str, documentation: str,
                     labelnames: tuple[str, ...]) -> MetricWrapperBase:
        if not name.startswith(PREFIX):
            name = PREFIX + name
        existing = self._custom.get(name)
        if existing is not None:
            if not isinstance(existing, cls) or tuple(existing._labelnames) != tuple(labelnames):
                raise ValueError(f"self-metric {name} already defined with another type or labels")
            return existing
        metric = cls(name, documentation, list(labelnames), registry=self.registry)
        self._custom[name] = metric
        return metric

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        """Every otelpipe_ sample as plain data, for `/status` and tests."""
        out: dict[str, list[dict[str, object]]] = {}
        for family in self.registry.collect():
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                out.setdefault(s.name, []).append({"labels": dict(s.labels), "value": s.value})
        return out

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        total = 0.0
        for sample in self.snapshot().get(name, []):
            lab = sample["labels"]
            assert isinstance(lab, dict)
            if all(lab.get(k) == v for k, v in labels.items()):
                total += float(sample["value"])  # type: ignore[arg-type]
        return total


class ReceiverObs:
    """Counts what one receiver transport accepted and refused."""

    def __init__(self, tel: Telemetry, receiver_id: str, transport: str) -> None:
        self._tel = tel
        self._accepted = {s: tel.receiver_accepted[s].labels(receiver_id, transport) for s in Signal}
        self._refused = tel.receiver_refused
        self.receiver_id = receiver_id
        self.transport = transport

    def accepted(self, signal: Signal, n: int) -> None:
        if n:
            self._accepted[signal].inc(n)

    def refused(self, signal: Signal, n: int, reason: str) -> None:
        # A request refused before decoding still counts once, so refusals are never invisible.
        self._refused[signal].labels(self.receiver_id, self.transport, reason).inc(max(n, 1))


class ProcessorObs:
    """Counts what one processor instance (in one pipeline) dropped."""

    def __init__(self, tel: Telemetry, processor_id: str, pipeline: str, signal: Signal) -> None:
        self._dropped = tel.processor_dropped[signal]
        self._incoming = tel.processor_incoming[signal].labels(processor_id, pipeline)
        self._outgoing = tel.processor_outgoing[signal].labels(processor_id, pipeline)
        self.processor_id = processor_id
        self.pipeline = pipeline
        self.signal = signal

    def incoming(self, n: int) -> None:
        self._incoming.inc(n)

    def outgoing(self, n: int) -> None:
        self._outgoing.inc(n)

    def dropped(self, n: int, reason: str) -> None:
        if n:
            self._dropped.labels(self.processor_id, self.pipeline, reason).inc(n)


class ExporterObs:
    """Counts what one exporter (for one signal) sent, failed and could not enqueue."""

    def __init__(self, tel: Telemetry, exporter_id: str, signal: Signal) -> None:
        self._tel = tel
        self.exporter_id = exporter_id
        self.signal = signal
        self._sent = tel.exporter_sent[signal].labels(exporter_id)
        self._failed = tel.exporter_failed[signal]
        self._enqueue_failed = tel.exporter_enqueue_failed[signal]
        self._durations = tel.export_duration

    def sent(self, n: int) -> None:
        self._sent.inc(n)

    def failed(self, n: int, reason: str) -> None:
        self._failed.labels(self.exporter_id, reason).inc(n)

    def enqueue_failed(self, n: int, reason: str = "queue_full") -> None:
        self._enqueue_failed.labels(self.exporter_id, reason).inc(n)

    def observe_push(self, seconds: float, outcome: str) -> None:
        self._durations.labels(self.exporter_id, self.signal.value, outcome).observe(seconds)

    def register_queue(self, size: Callable[[], int], capacity: int) -> None:
        dt = self.signal.value
        self._tel.queue_size.labels(self.exporter_id, dt).set_function(size)
        self._tel.queue_capacity.labels(self.exporter_id, dt).set(capacity)


class CountsByLabel:
    """Adds per-request counts ({label value: n}) to a counter whose other labels are fixed.

    `Counter.labels()` validates and looks up its arguments on every call (~1.5 us); processors
    that count per detector on every request keep the labelled children here instead.
    """

    __slots__ = ("_children", "_counter", "_fixed")

    def __init__(self, counter: Counter, *fixed: str) -> None:
        self._counter = counter
        self._fixed = fixed
        self._children: dict[str, Any] = {}

    def add(self, counts: dict[str, int]) -> None:
        children = self._children
        for label, n in counts.items():
            child = children.get(label)
            if child is None:
                child = children[label] = self._counter.labels(*self._fixed, label)
            child.inc(n)


def iter_metric_names(tel: Telemetry) -> Iterator[str]:
    """All self-metric family names (used by docs and conformance tests)."""
    for family in tel.registry.collect():
        yield family.name
