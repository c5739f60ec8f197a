"""Metric names that can never name anything, found and removed before a request enters a pipeline.

Why: a metric called `" "` (or `""`, or a run of control characters) names
nothing anyone can query, and downstream it does damage: the Prometheus
exporter once answered every scrape with a 500 for five minutes over one such
series, and other backends reject whole batches over one bad name. Refusing it
at the receiver, with a reason the sender sees (OTLP partial success), costs
the sender nothing it could have used.

What counts as unusable: a name with no visible character, i.e. empty or made
only of whitespace (every Unicode space and line separator), control characters
(Cc) and invisible format characters (Cf: zero-width spaces and joiners, bidi
marks, the BOM, ...). Anything with one visible character is left alone, even
when odd (`-`, `é`, `a b`): backends translate names (Prometheus sanitizes
them) and refuse, counted, the few they cannot write; deciding for every
backend here would refuse names that some of them accept.

Cost: one `is_unusable` per metric (a comparison on the first character for the
usual name that starts with a visible ASCII character, one C-level regex search
otherwise); no work per data point unless something is removed.
"""
from __future__ import annotations

import re
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from pipeline.model import Payload, Signal

#: The refusal reason for receivers (the `reason` label of otelpipe_receiver_refused_metric_points_total).
INVALID_NAME = "invalid_name"

# Unicode 14 (CPython 3.11): categories Cc, Cf, Zs, Zl, Zp and every `str.isspace()` character.
# tests/unit/pipeline/test_metricnames.py checks this class against the running unicodedata.
_NON_ASCII_INVISIBLE_CLASS = (
    "\\x80-\\xa0\\xad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891\\u08e2\\u1680\\u180e"
    "\\u2000-\\u200f\\u2028-\\u202f\\u205f-\\u2064\\u2066-\\u206f\\u3000\\ufeff\\ufff9-\\ufffb\\U000110bd"
    "\\U000110cd\\U00013430-\\U00013438\\U0001bca0-\\U0001bca3\\U0001d173-\\U0001d17a\\U000e0001"
    "\\U000e0020-\\U000e007f"
)
INVISIBLE_CLASS = "\\x00-\\x20\\x7f" + _NON_ASCII_INVISIBLE_CLASS
_VISIBLE = re.compile(f"[^{INVISIBLE_CLASS}]")
#: Finds an invisible character above the space (DEL and the non-ASCII ones): in a batch of text
#: without one, only names starting below `!` can be unusable.
INVISIBLE_ABOVE_SPACE = re.compile(f"[\\x7f{_NON_ASCII_INVISIBLE_CLASS}]")


def is_unusable(name: str) -> bool:
    """True when `name` has no visible character (see the module docstring)."""
    if "!" <= name[:1] <= "~":  # starts with a visible ASCII character: the usual name, no regex
        return False
    return _VISIBLE.search(name) is None


def drop_unusable_metrics(request: ExportMetricsServiceRequest) -> tuple[int, str]:
    """Remove, in place, every metric whose name `is_unusable`; returns (data points removed, message).

    The message (empty when nothing was removed) is meant for the OTLP partial
    success `error_message`; it never quotes the names. Scopes and resources
    left without metrics by the removal are removed too. A request whose names
    are all usable is not changed.
    """
    if not any(is_unusable(m.name) for rm in request.resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics):
        return 0, ""
    metrics = points = 0
    rms = request.resource_metrics
    for ri in range(len(rms) - 1, -1, -1):
        sms = rms[ri].scope_metrics
        emptied = False
        for si in range(len(sms) - 1, -1, -1):
            ms = sms[si].metrics
            removed = 0
            for mi in range(len(ms) - 1, -1, -1):
                if is_unusable(ms[mi].name):
                    points += _points(ms[mi])
                    del ms[mi]
                    removed += 1
            metrics += removed
            if removed and not ms:
                del sms[si]
                emptied = True
        if emptied and not sms:
            del rms[ri]
    message = (f"{metrics} metric(s) dropped ({points} data points): a metric name needs at least one visible "
               "character (not only whitespace, control or format characters)")
    return points, message


def screen(payload: Payload) -> tuple[int, str]:
    """Remove unusable metrics from a metrics payload the receiver just decoded; (points removed, message).

    A payload whose names are all usable is untouched (it keeps its wire
    bytes); otherwise its message is changed and its item count updated.
    """
    if payload.signal is not Signal.METRICS:
        return 0, ""
    points, message = drop_unusable_metrics(payload.message)  # type: ignore[arg-type]
    if message:
        payload.mark_changed()
    return points, message


def partial_success(points: int, message: str) -> ExportMetricsServiceResponse:
    """The OTLP answer for a request some of whose points were refused (never retried by clients)."""
    return ExportMetricsServiceResponse(
        partial_success=ExportMetricsPartialSuccess(rejected_data_points=points, error_message=message))


def _points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    return 0 if kind is None else len(getattr(metric, kind).data_points)


__all__ = ["INVALID_NAME", "INVISIBLE_ABOVE_SPACE", "INVISIBLE_CLASS", "drop_unusable_metrics", "is_unusable",
           "partial_success", "screen"]
