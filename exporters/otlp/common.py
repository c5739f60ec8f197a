"""What both OTLP exporters share: reading a backend's partial-success answer.

OTLP (gRPC and HTTP alike) lets a backend accept a request while rejecting
some of its items (`partial_success`); such a request is never retried, and
the rejected items are counted as `send_failed{reason="partial_success"}` by
the exporter helper when `check_partial_success` raises.
"""
from __future__ import annotations

from pipeline.errors import PartialSuccessError
from pipeline.logutil import RateLimitedLog
from pipeline.model import ExportResponse, Signal
from pipeline.redact import redact_text

_REJECTED_FIELD = {
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
    Signal.LOGS: "rejected_log_records",
}


def check_partial_success(signal: Signal, response: ExportResponse, log: RateLimitedLog) -> None:
    """Raise PartialSuccessError when the backend rejected items; log a warning it sent without rejecting."""
    if not response.HasField("partial_success"):
        return
    ps = response.partial_success
    rejected = int(getattr(ps, _REJECTED_FIELD[signal]))
    error_message = redact_text(ps.error_message)
    if rejected > 0:
        raise PartialSuccessError(rejected, error_message or f"backend rejected {rejected} {signal.item_name}")
    if error_message:
        log.warning("backend accepted the request with a warning", key="partial_warning",
                    extra={"error_message": error_message[:500]})
