"""The `statsd` receiver's configuration: the Collector's `statsdreceiver` shape.

`endpoint`, `transport`, `aggregation_interval`, `enable_metric_type` and
`timer_histogram_mapping` as the Collector spells them, plus `max_packet_size`
and `socket_buffer_size`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pipeline.component import Listener
from pipeline.config.types import ByteSize, Duration, Issue
from pipeline.net.endpoint import Endpoint
from receivers.statsd.aggregator import DEFAULT_QUANTILES, Observer
from receivers.statsd.parser import DISTRIBUTION, HISTOGRAM, TIMER

DEFAULT_ENDPOINT = "localhost:8125"
DEFAULT_SOCKET_BUFFER = ByteSize(8 * 1024 * 1024)
DEFAULT_AGGREGATION_INTERVAL = Duration(10.0)
MAX_UDP_PACKET = 65535

_STATSD_TYPES = {"timing": TIMER, "timer": TIMER, "histogram": HISTOGRAM, "distribution": DISTRIBUTION}


@dataclass(frozen=True, slots=True, kw_only=True)
class HistogramObserverConfig:
    """Explicit bucket upper bounds, in the output unit (seconds for timers), strictly increasing."""

    buckets: tuple[float, ...] = ()

    def validate(self) -> list[Issue]:
        b = self.buckets
        if any(not math.isfinite(x) for x in b):
            return [Issue("buckets", "bucket bounds must be finite numbers (+Inf is always implied)")]
        if any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
            return [Issue("buckets", f"bucket bounds must be strictly increasing, got {list(b)}")]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryObserverConfig:
    """Quantiles to report, as fractions (`quantiles: [0.5, 0.99]`) or as the Collector's `percentiles: [50, 99]`."""

    quantiles: tuple[float, ...] = ()
    percentiles: tuple[float, ...] = ()

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.quantiles and self.percentiles:
            out.append(Issue("", "give either quantiles (0-1) or percentiles (0-100), not both"))
        if any(not 0.0 <= q <= 1.0 for q in self.quantiles):
            out.append(Issue("quantiles", f"each quantile must be between 0 and 1, got {list(self.quantiles)}"))
        if any(not 0.0 <= p <= 100.0 for p in self.percentiles):
            out.append(Issue("percentiles", f"each percentile must be between 0 and 100, got {list(self.percentiles)}"))
        return out

    def resolved(self) -> tuple[float, ...]:
        if self.percentiles:
            return tuple(p / 100.0 for p in self.percentiles)
        return self.quantiles or DEFAULT_QUANTILES


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerHistogramMappingConfig:
    """How one StatsD type (`timing`/`timer`, `histogram`, `distribution`) is turned into OTLP."""

    statsd_type: str = ""
    observer_type: Literal["histogram", "summary", "gauge"] = "histogram"
    histogram: HistogramObserverConfig | None = None
    summary: SummaryObserverConfig | None = None

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.statsd_type not in _STATSD_TYPES:
            out.append(Issue("statsd_type", f"must be one of timing, timer, histogram, distribution; "
                                       f"got {self.statsd_type!r}" if self.statsd_type else
                                       "is required: one of timing, timer, histogram, distribution"))
        if self.histogram is not None and self.observer_type != "histogram":
            out.append(Issue("histogram",
                             f"only applies to observer_type 'histogram' (this one is {self.observer_type!r})"))
        if self.summary is not None and self.observer_type != "summary":
            out.append(Issue("summary",
                             f"only applies to observer_type 'summary' (this one is {self.observer_type!r})"))
        return out

    def observer(self) -> Observer:
        if self.observer_type == "summary":
            return Observer("summary", quantiles=(self.summary or SummaryObserverConfig()).resolved())
        if self.observer_type == "gauge":
            return Observer("gauge")
        return Observer("histogram", buckets=self.histogram.buckets if self.histogram else ())


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsDReceiverConfig:
    """The `statsd` receiver (the Collector's statsdreceiver keys, plus socket sizing)."""

    endpoint: Endpoint = field(default_factory=lambda: Endpoint.listen(DEFAULT_ENDPOINT))
    transport: Literal["udp"] = "udp"
    aggregation_interval: Duration = DEFAULT_AGGREGATION_INTERVAL
    enable_metric_type: bool = False
    timer_histogram_mapping: tuple[TimerHistogramMappingConfig, ...] = ()
    # Larger datagrams are cut at this size; the complete lines before the cut are kept.
    max_packet_size: int = MAX_UDP_PACKET
    # SO_RCVBUF to ask for; 0 keeps the kernel default. What was granted is logged and exported.
    socket_buffer_size: ByteSize = DEFAULT_SOCKET_BUFFER

    def __post_init__(self) -> None:
        if isinstance(self.endpoint, str):  # built in code with text; the decoder passes an Endpoint
            object.__setattr__(self, "endpoint", Endpoint.listen(self.endpoint))

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.aggregation_interval <= 0:
            out.append(Issue("aggregation_interval", "must be greater than 0, e.g. '10s' (the default)"))
        if not 1 <= self.max_packet_size <= MAX_UDP_PACKET:
            out.append(Issue("max_packet_size",
                             f"must be between 1 and {MAX_UDP_PACKET} bytes, got {self.max_packet_size}"))
        seen: dict[int, str] = {}
        for i, m in enumerate(self.timer_histogram_mapping):
            code = _STATSD_TYPES.get(m.statsd_type)
            if code is None:
                continue
            if code in seen:
                out.append(Issue(f"timer_histogram_mapping[{i}].statsd_type",
                            f"{m.statsd_type!r} is already mapped by {seen[code]}"))
            else:
                seen[code] = f"timer_histogram_mapping[{i}]"
        return out

    def observers(self) -> dict[int, Observer]:
        return {_STATSD_TYPES[m.statsd_type]: m.observer() for m in self.timer_histogram_mapping
                if m.statsd_type in _STATSD_TYPES}

    def listeners(self) -> list[Listener]:
        return [Listener("udp", self.endpoint, "endpoint")]


# -- kernel statistics ---------------------------------------------------------------------------------
