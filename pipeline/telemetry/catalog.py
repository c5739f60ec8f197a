"""Every self-metric otelpipe exports, declared once: name, type, labels, help and owner.

Names mirror the Collector's internal metrics with the `otelpipe_` prefix (so
the Collector dashboards port by a prefix swap); components only ever name a
metric declared here (`Telemetry.counter("processor_batch_timeout_trigger_send")`),
so the whole set can be read, documented and checked in one place — the
conformance test checks that each component's own metrics move when data flows.

`owner` says who records a metric: a kind (`receiver`, `processor`, `exporter`:
every component of that kind, through the shared wrappers), a component type
(`processor/batch`), or `service`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.model import Signal

PREFIX = "otelpipe_"
MetricKind = Literal["counter", "gauge", "histogram"]
Level = Literal["none", "basic", "normal", "detailed"]
LEVELS: tuple[Level, ...] = ("none", "basic", "normal", "detailed")
PUSH_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One self-metric. `name` has no prefix and, for counters, no `_total` (prometheus_client adds it)."""

    name: str
    kind: MetricKind
    labels: tuple[str, ...]
    help: str
    owner: str
    buckets: tuple[float, ...] = ()
    level: Level = "normal"  # the lowest service.telemetry.metrics.level that records it

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


def _per_signal(template: str, kind: MetricKind, labels: tuple[str, ...], help_template: str,
                owner: str) -> list[MetricSpec]:
    return [MetricSpec(template.format(item=s.item_name), kind, labels,
                       help_template.format(words=s.item_name.replace("_", " ")), owner, level="basic")
            for s in Signal]


STANDARD: tuple[MetricSpec, ...] = (
    *_per_signal("receiver_accepted_{item}", "counter", ("receiver", "transport"),
                 "Number of {words} successfully pushed into the pipeline.", "receiver"),
    *_per_signal("receiver_refused_{item}", "counter", ("receiver", "transport", "reason"),
                 "Number of {words} that could not be pushed into the pipeline.", "receiver"),
    *_per_signal("processor_incoming_{item}", "counter", ("processor", "pipeline"),
                 "Number of {words} that entered the processor.", "processor"),
    *_per_signal("processor_outgoing_{item}", "counter", ("processor", "pipeline"),
                 "Number of {words} the processor handed on.", "processor"),
    *_per_signal("processor_dropped_{item}", "counter", ("processor", "pipeline", "reason"),
                 "Number of {words} dropped by the processor.", "processor"),
    *_per_signal("exporter_sent_{item}", "counter", ("exporter",),
                 "Number of {words} successfully sent to destination.", "exporter"),
    *_per_signal("exporter_send_failed_{item}", "counter", ("exporter", "reason"),
                 "Number of {words} in failed attempts to send to destination.", "exporter"),
    *_per_signal("exporter_enqueue_failed_{item}", "counter", ("exporter", "reason"),
                 "Number of {words} failed to be added to the sending queue.", "exporter"),
    MetricSpec("exporter_queue_size", "gauge", ("exporter", "data_type"),
               "Current size of the sending queue, in the unit of its sizer (requests by default).", "exporter",
               level="basic"),
    MetricSpec("exporter_queue_capacity", "gauge", ("exporter", "data_type"),
               "Fixed capacity of the sending queue, in the unit of its sizer (requests by default).", "exporter",
               level="basic"),
    MetricSpec("exporter_send_duration_seconds", "histogram", ("exporter", "data_type", "outcome"),
               "Duration of one push to the destination, by outcome.", "exporter", PUSH_DURATION_BUCKETS),
    MetricSpec("config_reloads", "counter", ("result",), "Configuration reloads by result.", "service",
               level="basic"),
    MetricSpec("build_info", "gauge", ("version", "python_version"),
               "Always 1; the labels say which otelpipe (and Python) this is.", "service", level="basic"),
)

COMPONENT: tuple[MetricSpec, ...] = (
    # the admin server and receivers' connection guards
    MetricSpec("admin_refused_connections", "counter", ("reason",),
               "Connections the admin server closed before reading a request, by reason.", "service"),
    MetricSpec("receiver_refused_connections", "counter", ("receiver", "transport", "reason"),
               "Connections a receiver closed before reading a request, by reason.", "receiver/otlp"),
    # statsd
    MetricSpec("receiver_statsd_ignored", "counter", ("receiver", "reason"),
               "StatsD input ignored by design: events and service checks (lines), unknown |fields (fields).",
               "receiver/statsd"),
    MetricSpec("receiver_statsd_lines", "counter", ("receiver",), "StatsD metric lines parsed and aggregated.",
               "receiver/statsd"),
    MetricSpec("receiver_statsd_datagrams", "counter", ("receiver",), "UDP datagrams read by the StatsD receiver.",
               "receiver/statsd"),
    MetricSpec("receiver_statsd_kernel_drops", "gauge", ("receiver",),
               "Datagrams the kernel dropped on the StatsD socket because its receive buffer was full "
               "(from /proc/net/udp; -1 when unavailable).", "receiver/statsd"),
    MetricSpec("receiver_statsd_socket_buffer_bytes", "gauge", ("receiver",),
               "Receive buffer the kernel granted the StatsD socket (SO_RCVBUF as read back).", "receiver/statsd"),
    # processors
    MetricSpec("processor_batch_batch_size_trigger_send", "counter", ("processor",),
               "Number of times a batch was sent because of its size.", "processor/batch"),
    MetricSpec("processor_batch_timeout_trigger_send", "counter", ("processor",),
               "Number of times a batch was sent because of the timeout.", "processor/batch"),
    MetricSpec("memory_limiter_refusing", "gauge", ("processor",),
               "1 while the memory limiter refuses data (memory above its soft limit), else 0.",
               "processor/memory_limiter"),
    MetricSpec("processor_cardinality_limit_folded_points", "counter", ("processor", "pipeline", "metric"),
               "Data points folded into their metric's overflow series.", "processor/cardinality_limit"),
    MetricSpec("processor_cardinality_limit_dropped_points", "counter", ("processor", "pipeline", "metric"),
               "Data points dropped because their metric was at its series limit.", "processor/cardinality_limit"),
    MetricSpec("processor_cardinality_limit_series", "gauge", ("processor", "pipeline", "metric"),
               "Current series of each limited metric.", "processor/cardinality_limit"),
    MetricSpec("processor_masked_values", "counter", ("processor", "pipeline", "detector"),
               "Values masked by secret_mask, by detector ('key' for key-name matches).", "processor/secret_mask"),
    MetricSpec("processor_normalized_values", "counter", ("processor", "pipeline", "detector"),
               "Identifiers replaced by placeholders, by detector.", "processor/uuid_normalize"),
    MetricSpec("processor_probabilistic_sampler_errors", "counter", ("processor", "pipeline", "reason"),
               "Items whose sampling information was unusable, by reason (fail_closed decides their fate).",
               "processor/probabilistic_sampler"),
    MetricSpec("processor_tail_sampling_traces_pending", "gauge", ("processor", "pipeline"),
               "Traces held in memory waiting for a sampling decision.", "processor/tail_sampling"),
    MetricSpec("processor_tail_sampling_policy_decisions", "counter", ("processor", "pipeline", "policy", "decision"),
               "Traces each tail-sampling policy evaluated, by decision.", "processor/tail_sampling"),
    MetricSpec("processor_tail_sampling_late_spans", "counter", ("processor", "pipeline", "decision"),
               "Spans that arrived after their trace was decided, by the decision they followed.",
               "processor/tail_sampling"),
    MetricSpec("processor_tail_sampling_traces_decided_early", "counter", ("processor", "pipeline"),
               "Traces decided before decision_wait because num_traces was exceeded.", "processor/tail_sampling"),
    MetricSpec("processor_tail_sampling_traces", "counter", ("processor", "pipeline", "decision"),
               "Traces decided, by decision.", "processor/tail_sampling"),
    # exporters
    MetricSpec("exporter_prometheus_series", "gauge", ("exporter",), "Series held by the Prometheus exporter.",
               "exporter/prometheus"),
    MetricSpec("exporter_prometheus_skipped_metric_points", "counter", ("exporter", "reason"),
               "Metric points the Prometheus exporter did not apply, by reason.", "exporter/prometheus"),
    MetricSpec("exporter_prometheus_skipped_series", "counter", ("exporter", "reason"),
               "Series left out of a scrape because they could not be written, by reason.", "exporter/prometheus"),
    MetricSpec("exporter_datadog_skipped_metric_points", "counter", ("exporter", "reason"),
               "Metric points the Datadog exporter did not send, by reason (invalid_name, invalid_timestamp, "
               "invalid_value, unsupported and too_large are also send failures; initial_value, out_of_order and "
               "no_recorded_value are not).",
               "exporter/datadog"),
    MetricSpec("exporter_datadog_skipped_log_records", "counter", ("exporter", "reason"),
               "Log records the Datadog exporter could not send (too_large), by reason.", "exporter/datadog"),
    MetricSpec("exporter_datadog_cumulative_series", "gauge", ("exporter",),
               "Cumulative series whose last point the Datadog exporter keeps to compute deltas.", "exporter/datadog"),
    MetricSpec("alerts_firing", "gauge", ("exporter", "rule"),
               "Alerts of each rule currently firing (one per group whose condition held for `for`).",
               "exporter/pagerduty"),
    MetricSpec("exporter_pagerduty_series", "gauge", ("exporter",),
               "Series whose history the PagerDuty exporter keeps for its rules.", "exporter/pagerduty"),
    MetricSpec("exporter_pagerduty_skipped_points", "counter", ("exporter", "reason"),
               "Points of metrics a rule names that the PagerDuty exporter did not keep, by reason "
               "(series_limit, unsupported_type (per metric), invalid, out_of_order).", "exporter/pagerduty"),
    MetricSpec("exporter_pagerduty_alerts_suppressed", "counter", ("exporter", "rule", "reason"),
               "Groups that held a rule's condition but got no alert, by reason (limit: the rule had `limit` alerts).",
               "exporter/pagerduty"),
    # loadbalancing (the Collector's otelcol_loadbalancer_* plus items per backend)
    MetricSpec("loadbalancer_num_resolutions", "counter", ("exporter", "resolver", "success"),
               "Resolutions of the backends by the resolver, by outcome.", "exporter/loadbalancing"),
    MetricSpec("loadbalancer_num_backends", "gauge", ("exporter", "resolver"), "Backends routed to now.",
               "exporter/loadbalancing"),
    MetricSpec("loadbalancer_num_backend_updates", "counter", ("exporter", "resolver"),
               "Resolutions that changed the list of backends (each rebuilds the ring).", "exporter/loadbalancing"),
    *(MetricSpec(f"loadbalancer_backend_{s.item_name}", "counter", ("exporter", "endpoint"),
                 f"{s.item_name.replace('_', ' ').capitalize()} routed to each backend's queue.",
                 "exporter/loadbalancing") for s in Signal),
    *(MetricSpec(f"loadbalancer_rerouted_{s.item_name}", "counter", ("exporter",),
                 f"{s.item_name.replace('_', ' ').capitalize()} that removed backends still held, routed again "
                 "over the remaining backends.", "exporter/loadbalancing") for s in Signal),
    # connectors
    MetricSpec("connector_genai_metrics_runs", "counter", ("connector", "closed_by"),
               "Traces with GenAI spans accounted by genai_metrics, by what closed them: root (the root span "
               "arrived), timeout (trace_timeout of silence), max_traces, max_spans or shutdown.",
               "connector/genai_metrics"),
    MetricSpec("connector_genai_metrics_traces_pending", "gauge", ("connector",),
               "Traces genai_metrics holds until their root span arrives.", "connector/genai_metrics"),
    MetricSpec("connector_genai_metrics_late_spans", "counter", ("connector",),
               "GenAI spans that arrived after their trace was accounted (counted on their own, not in the run).",
               "connector/genai_metrics"),
    MetricSpec("connector_genai_metrics_unpriced_calls", "counter", ("connector",),
               "Model calls with token counts whose model has no price (and no default price is set).",
               "connector/genai_metrics"),
    MetricSpec("connector_genai_metrics_overflow_series", "counter", ("connector", "metric"),
               "Series folded into their metric's overflow series (otel.metric.overflow=true), per flush interval.",
               "connector/genai_metrics"),
    MetricSpec("connector_genai_metrics_dropped_metric_points", "counter", ("connector", "reason"),
               "Metric points genai_metrics made that downstream refused for good (export_failed) or at shutdown.",
               "connector/genai_metrics"),
    MetricSpec("connector_genai_metrics_skipped_spans", "counter", ("connector", "reason"),
               "Spans genai_metrics could not read (malformed).", "connector/genai_metrics"),
    # persistent sending queues (sending_queue.storage)
    MetricSpec("exporter_queue_disk_bytes", "gauge", ("exporter", "data_type"),
               "Bytes of the persistent sending queue's segment files on disk (bounded by max_size).", "exporter"),
    MetricSpec("exporter_queue_disk_capacity_bytes", "gauge", ("exporter", "data_type"),
               "The most bytes the persistent sending queue may use on disk (its max_size).", "exporter"),
    MetricSpec("exporter_queue_disk_items", "gauge", ("exporter", "data_type"),
               "Spans, metric points or log records in the persistent sending queue on disk, not yet sent.",
               "exporter"),
    MetricSpec("exporter_queue_oldest_item_age_seconds", "gauge", ("exporter", "data_type"),
               "Age of the oldest request in the persistent sending queue not yet sent (0 when empty).", "exporter"),
    MetricSpec("exporter_queue_replayed_records", "counter", ("exporter", "data_type"),
               "Requests found on disk at start and queued again (sent before, maybe: at-least-once).", "exporter"),
    MetricSpec("exporter_queue_skipped_records", "counter", ("exporter", "data_type", "reason"),
               "Damaged parts of the persistent queue skipped, by reason (torn_tail: a write cut short by a crash; "
               "corrupt: bad bytes or checksum).", "exporter"),
    # TLS listeners (receivers' tls blocks)
    MetricSpec("receiver_tls_reloads", "counter", ("receiver", "transport", "result"),
               "Loads of a TLS listener's certificate files after they changed (result: ok, or failed while "
               "the previous certificate is still served).", "receiver/otlp"),
)

CATALOGUE: dict[str, MetricSpec] = {spec.name: spec for spec in (*STANDARD, *COMPONENT)}
assert len(CATALOGUE) == len(STANDARD) + len(COMPONENT), "a self-metric is declared twice"


def spec(name: str) -> MetricSpec:
    """The declaration of `name` (with or without the `otelpipe_` prefix); KeyError names the fix."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    try:
        return CATALOGUE[key]
    except KeyError:
        raise KeyError(f"self-metric {key!r} is not declared in pipeline/telemetry/catalog.py; declare it there "
                       "(name, type, labels, help, owner) before using it") from None
