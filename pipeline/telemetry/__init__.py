"""otelpipe's own metrics, recorded into a Service-owned registry (never the global one).

Every metric is declared once in `catalog.py` (name, type, labels, help, owner).
`Telemetry` makes them in its own `CollectorRegistry`; components record the
standard ones only through the small observer objects below, which the shared
wrappers (receiver helpers, the graph's processor edges, the exporter helper)
call for them, and reach their own declared metrics with `counter(name)`,
`gauge(name)` or `histogram(name)`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.process_collector import ProcessCollector

from pipeline.model import Signal
from pipeline.telemetry.catalog import LEVELS, PREFIX, Level, MetricSpec, spec

if TYPE_CHECKING:
    from pipeline.component import Settings

__all__ = ["PREFIX", "CountsByLabel", "ExporterObs", "ProcessorObs", "ReceiverObs", "Telemetry", "iter_metric_names"]


class Telemetry:
    """The registry of one Service and every self-metric in it, made from the catalogue on first use.

    `level` is `service.telemetry.metrics.level`, as in the Collector: `none`
    records nothing, `basic` only the standard receiver/processor/exporter and
    service metrics, `normal` (the default) and `detailed` everything declared.
    A metric above the level is a no-op object: it costs a method call and is
    never exported. `exposition` is what `/metrics` serves: the registry
    without the `_created` samples prometheus_client adds to every counter.
    """

    def __init__(self, *, process_metrics: bool = True, level: Level = "normal") -> None:
        self.level = level
        self.registry = CollectorRegistry(auto_describe=True)
        if process_metrics and level != "none":
            ProcessCollector(namespace="otelpipe", registry=self.registry)
        self.exposition = CollectorRegistry(auto_describe=False)
        self.exposition.register(_WithoutCreated(self.registry))
        self._metrics: dict[str, MetricWrapperBase] = {}
        per_signal = {s: s.item_name for s in Signal}
        self.receiver_accepted = {s: self.counter(f"receiver_accepted_{i}") for s, i in per_signal.items()}
        self.receiver_refused = {s: self.counter(f"receiver_refused_{i}") for s, i in per_signal.items()}
        self.processor_dropped = {s: self.counter(f"processor_dropped_{i}") for s, i in per_signal.items()}
        self.processor_incoming = {s: self.counter(f"processor_incoming_{i}") for s, i in per_signal.items()}
        self.processor_outgoing = {s: self.counter(f"processor_outgoing_{i}") for s, i in per_signal.items()}
        self.exporter_sent = {s: self.counter(f"exporter_sent_{i}") for s, i in per_signal.items()}
        self.exporter_failed = {s: self.counter(f"exporter_send_failed_{i}") for s, i in per_signal.items()}
        self.exporter_enqueue_failed = {s: self.counter(f"exporter_enqueue_failed_{i}") for s, i in per_signal.items()}
        self.queue_size = self.gauge("exporter_queue_size")
        self.queue_capacity = self.gauge("exporter_queue_capacity")
        self.export_duration = self.histogram("exporter_send_duration_seconds")
        self.config_reloads = self.counter("config_reloads")

    def receiver(self, receiver_id: str, transport: str) -> ReceiverObs:
        return ReceiverObs(self, receiver_id, transport)

    def processor(self, settings: Settings) -> ProcessorObs:
        assert settings.signal is not None
        return ProcessorObs(self, str(settings.id), settings.pipeline, settings.signal)

    def exporter(self, settings: Settings) -> ExporterObs:
        assert settings.signal is not None
        return ExporterObs(self, str(settings.id), settings.signal)

    def counter(self, name: str) -> Counter:
        """The counter declared as `name` in the catalogue; the same object on every call."""
        return self._metric(name, "counter")  # type: ignore[return-value]

    def gauge(self, name: str) -> Gauge:
        """The gauge declared as `name` in the catalogue; the same object on every call."""
        return self._metric(name, "gauge")  # type: ignore[return-value]

    def histogram(self, name: str) -> Histogram:
        """The histogram declared as `name` in the catalogue; the same object on every call."""
        return self._metric(name, "histogram")  # type: ignore[return-value]

    def _metric(self, name: str, kind: str) -> MetricWrapperBase:
        declared: MetricSpec = spec(name)
        if declared.kind != kind:
            raise TypeError(f"self-metric {declared.name} is declared as a {declared.kind}, not a {kind}")
        existing = self._metrics.get(declared.name)
        if existing is not None:
            return existing
        if LEVELS.index(declared.level) > LEVELS.index(self.level):
            return _NULL_METRIC  # type: ignore[return-value]
        labels = list(declared.labels)
        metric: MetricWrapperBase
        if kind == "counter":
            metric = Counter(declared.full_name, declared.help, labels, registry=self.registry)
        elif kind == "gauge":
            metric = Gauge(declared.full_name, declared.help, labels, registry=self.registry)
        else:
            metric = Histogram(declared.full_name, declared.help, labels, registry=self.registry,
                               buckets=declared.buckets)
        self._metrics[declared.name] = metric
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
    """Counts what one receiver transport accepted and refused.

    A signal's series appears on its first count, so a receiver never exports
    counters that cannot move (no span counters on the StatsD receiver).
    """

    def __init__(self, tel: Telemetry, receiver_id: str, transport: str) -> None:
        self._tel = tel
        self._accepted: dict[Signal, Any] = {}
        self._refused = tel.receiver_refused
        self.receiver_id = receiver_id
        self.transport = transport

    def accepted(self, signal: Signal, n: int) -> None:
        if n:
            child = self._accepted.get(signal)
            if child is None:
                child = self._accepted[signal] = self._tel.receiver_accepted[signal].labels(self.receiver_id,
                                                                                           self.transport)
            child.inc(n)

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


class _NullMetric:
    """What a metric above the configured level is: every recording call does nothing."""

    __slots__ = ()

    def labels(self, *_args: object, **_kwargs: object) -> _NullMetric:
        return self

    def inc(self, *_args: object) -> None:
        return None

    def set(self, *_args: object) -> None:
        return None

    def observe(self, *_args: object) -> None:
        return None

    def set_function(self, *_args: object) -> None:
        return None


_NULL_METRIC = _NullMetric()


class _WithoutCreated:
    """A collector that serves another registry's families without their `_created` samples.

    prometheus_client adds a `_created` timestamp to every counter and
    histogram; the Collector does not export them, dashboards do not use them,
    and they double the series count of `/metrics`.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        for family in self._registry.collect():  # fresh family objects on every scrape
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
