"""A prometheus_client custom collector that turns a store snapshot into metric families.

prometheus_client's encoders do all the writing (escaping, number format,
TYPE/HELP/UNIT lines, exemplars); this module only builds the families. It
appends `Sample` tuples directly, because the series of one family may carry
different label names (attributes differ between data points), which the
`add_metric(label_values)` helpers cannot express, and because it keeps the
per-series cost to one tuple per sample for the 100k-series budget.

`openmetrics=True` adds the `_created` samples the spec asks for (start time of
cumulative series). The 0.0.4 text format has no place for them
(prometheus_client would turn them into extra `*_created` gauge families), so
the text view leaves them out, as the Collector's exporter does.

A family that cannot be built (prometheus_client refuses its name, say) is
left out of the scrape and reported through `on_skip` with its series count:
one bad series must never turn every scrape into a 500. The store refuses the
names it knows to be unusable; this is the net for whatever it does not know.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    Sample,
    SummaryMetricFamily,
)

from exporters.prometheus.naming import Shape
from exporters.prometheus.store import FamilyView, MetricStore

TARGET_HELP = "Target metadata"
SCOPE_HELP = "Instrumentation scope metadata"

#: Told about each family left out of a scrape: (family name, series in it, what went wrong).
SkipReporter = Callable[[str, int, BaseException], None]


def ignore_skip(_family: str, _series: int, _error: BaseException) -> None:
    """The default SkipReporter: nothing to report to."""


class StoreCollector:
    """Yields one family per store family, plus `target_info` and `otel_scope_info`."""

    def __init__(self, store: MetricStore, *, openmetrics: bool, on_skip: SkipReporter | None = None) -> None:
        self._store = store
        self._openmetrics = openmetrics
        self._on_skip = on_skip or ignore_skip

    def collect(self) -> Iterator[Metric]:
        snap = self._store.snapshot()
        if snap.targets:
            yield _info("target", TARGET_HELP, snap.targets)
        if snap.scopes:
            yield _info("otel_scope", SCOPE_HELP, snap.scopes)
        om = self._openmetrics
        for fam in snap.families:
            if not fam.series:
                continue
            shape = fam.shape
            try:
                if shape is Shape.COUNTER:
                    metric = _counter(fam, om)
                elif shape is Shape.HISTOGRAM:
                    metric = _histogram(fam, om)
                elif shape is Shape.SUMMARY:
                    metric = _summary(fam, om)
                else:
                    metric = _gauge(fam)
            except Exception as e:
                self._on_skip(fam.name, len(fam.series), e)
                continue
            yield metric


def _info(name: str, help_text: str, label_sets: list[dict[str, str]]) -> Metric:
    fam = InfoMetricFamily(name, help_text)
    sample_name = name + "_info"
    fam.samples.extend(Sample(sample_name, labels, 1.0) for labels in label_sets)
    return fam


def _counter(view: FamilyView, om: bool) -> Metric:
    fam = CounterMetricFamily(view.name, view.help, unit=view.unit)
    append = fam.samples.append
    total, created = fam.name + "_total", fam.name + "_created"
    if om:
        for s in view.series:
            labels = s.labels
            append(Sample(total, labels, s.value, None, s.exemplar))
            append(Sample(created, labels, s.created))
    else:
        for s in view.series:
            append(Sample(total, s.labels, s.value))
    return fam


def _gauge(view: FamilyView) -> Metric:
    fam = GaugeMetricFamily(view.name, view.help, unit=view.unit)
    append = fam.samples.append
    name = fam.name
    for s in view.series:
        append(Sample(name, s.labels, s.value))
    return fam


def _histogram(view: FamilyView, om: bool) -> Metric:
    fam = HistogramMetricFamily(view.name, view.help, unit=view.unit)
    append = fam.samples.append
    name = fam.name
    bucket, count_name, sum_name, created = name + "_bucket", name + "_count", name + "_sum", name + "_created"
    for s in view.series:
        hist = s.hist
        if hist is None:
            continue
        _bounds, les, cum, count, total, exemplars = hist
        labels = s.labels
        last = len(les) - 1
        for i, le in enumerate(les):
            bucket_labels = labels.copy()
            bucket_labels["le"] = le
            value = cum[i] if i < last else count
            append(Sample(bucket, bucket_labels, value, None, exemplars[i] if exemplars and om else None))
        append(Sample(count_name, labels, count))
        if total is not None:
            append(Sample(sum_name, labels, total))
        if om:
            append(Sample(created, labels, s.created))
    return fam


def _summary(view: FamilyView, om: bool) -> Metric:
    fam = SummaryMetricFamily(view.name, view.help, unit=view.unit)
    append = fam.samples.append
    name = fam.name
    count_name, sum_name, created = name + "_count", name + "_sum", name + "_created"
    for s in view.series:
        hist = s.hist
        if hist is None:
            continue
        quantiles, values, count, total = hist
        labels = s.labels
        for q, v in zip(quantiles, values):
            q_labels = labels.copy()
            q_labels["quantile"] = q
            append(Sample(name, q_labels, v))
        append(Sample(count_name, labels, count))
        if total is not None:
            append(Sample(sum_name, labels, total))
        if om:
            append(Sample(created, labels, s.created))
    return fam
