"""service.telemetry.metrics.level changes what is recorded; /metrics has no _created samples; a receiver
exports only the counters that can move (issue 16)."""
from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from pipeline.model import Signal
from pipeline.telemetry import Telemetry


def exposed(tel: Telemetry) -> str:
    return generate_latest(tel.exposition).decode()


@pytest.mark.parametrize("level, standard, owned", [
    ("none", False, False), ("basic", True, False), ("normal", True, True), ("detailed", True, True)])
def test_the_level_decides_what_is_recorded(level: str, standard: bool, owned: bool) -> None:
    tel = Telemetry(process_metrics=False, level=level)  # type: ignore[arg-type]
    tel.receiver("otlp", "grpc").accepted(Signal.TRACES, 3)
    tel.counter("processor_batch_timeout_trigger_send").labels("batch").inc()
    text = exposed(tel)
    assert ('otelpipe_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 3.0' in text) is standard
    assert ("otelpipe_processor_batch_timeout_trigger_send_total" in text) is owned
    assert tel.value("otelpipe_receiver_accepted_spans_total") == (3 if standard else 0)


def test_metrics_has_no_created_samples() -> None:
    tel = Telemetry(process_metrics=False)
    tel.receiver("otlp", "grpc").accepted(Signal.TRACES, 1)
    tel.export_duration.labels("otlp", "traces", "success").observe(0.1)
    text = exposed(tel)
    assert "_created" not in text
    assert "otelpipe_exporter_send_duration_seconds_count" in text
    assert "_created" in generate_latest(tel.registry).decode()  # what prometheus_client alone would serve


def test_a_receiver_exports_no_counter_of_a_signal_it_never_saw() -> None:
    tel = Telemetry(process_metrics=False)
    obs = tel.receiver("statsd", "udp")
    assert 'receiver="statsd"' not in exposed(tel)
    obs.accepted(Signal.METRICS, 5)
    text = exposed(tel)
    assert 'otelpipe_receiver_accepted_metric_points_total{receiver="statsd",transport="udp"} 5.0' in text
    assert 'otelpipe_receiver_accepted_spans_total{receiver="statsd"' not in text
