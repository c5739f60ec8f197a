"""OTLP → Prometheus naming, from the compatibility spec's rules and the Collector translator's table."""
from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from exporters.prometheus.naming import (
    VALID_LABEL_NAME,
    VALID_METRIC_NAME,
    Shape,
    join_labels,
    metric_name,
    sanitize_label_name,
    sanitize_metric_name,
    unit_metadata,
    unit_words,
    value_text,
)
from pipeline.testing import any_value

C, G, U, H, S = Shape.COUNTER, Shape.GAUGE, Shape.UPDOWN, Shape.HISTOGRAM, Shape.SUMMARY


@pytest.mark.parametrize(("name", "unit", "shape", "expected"), [
    # unit words (spec: abbreviations → full words; UCUM byte prefixes; unknown units kept, cleaned)
    ("system.filesystem.usage", "By", G, "system_filesystem_usage_bytes"),
    ("system.io", "By", C, "system_io_bytes_total"),
    ("http.server.request.duration", "s", H, "http_server_request_duration_seconds"),
    ("active_directory.ds.ldap.bind.last_successful.time", "ms", G,
     "active_directory_ds_ldap_bind_last_successful_time_milliseconds"),
    ("redis.latest_fork", "us", G, "redis_latest_fork_microseconds"),
    ("gc.pause", "ns", S, "gc_pause_nanoseconds"),
    ("uptime", "d", G, "uptime_days"),
    ("uptime", "h", G, "uptime_hours"),
    ("uptime", "min", G, "uptime_minutes"),
    ("cache.size", "KiBy", G, "cache_size_kibibytes"),
    ("mongodbatlas.process.journaling.data_files", "MiBy", G, "mongodbatlas_process_journaling_data_files_mebibytes"),
    ("heap", "GiBy", G, "heap_gibibytes"),
    ("disk", "TiBy", G, "disk_tibibytes"),
    ("nsxt.node.memory.usage", "KBy", G, "nsxt_node_memory_usage_kilobytes"),
    ("net", "MBy", G, "net_megabytes"), ("net", "GBy", G, "net_gigabytes"), ("net", "TBy", G, "net_terabytes"),
    ("distance", "m", G, "distance_meters"), ("battery", "V", G, "battery_volts"),
    ("current", "A", G, "current_amperes"),
    ("energy", "J", C, "energy_joules_total"), ("power", "W", G, "power_watts"), ("mass", "g", G, "mass_grams"),
    ("cpu.temperature", "Cel", G, "cpu_temperature_celsius"),
    ("hw.cpu.speed_limit", "Hz", G, "hw_cpu_speed_limit_hertz"),
    ("active_directory.ds.name_cache.hit_rate", "%", G, "active_directory_ds_name_cache_hit_rate_percent"),
    ("apache.current_connections", "connections", G, "apache_current_connections"),
    ("apache.workers", "connections", G, "apache_workers_connections"),
    # `{...}` annotations are dropped (a count of things is unitless)
    ("system.network.dropped", "{packets}", G, "system_network_dropped"),
    ("system.network.dropped", "{packets}", C, "system_network_dropped_total"),
    ("gen_ai.client.token.usage", "{token}", C, "gen_ai_client_token_usage_total"),
    ("bytes.in", "By{compressed}", C, "bytes_in_total"),  # `bytes` already in the name
    ("payload", "By{compressed}", G, "payload_bytes"),
    # `foo/bar` → `foo_per_bar`, the denominator singular
    ("mongodbatlas.process.network.io", "By/s", G, "mongodbatlas_process_network_io_bytes_per_second"),
    ("mongodbatlas.process.oplog.rate", "GiBy/h", G, "mongodbatlas_process_oplog_rate_gibibytes_per_hour"),
    ("astro.light.speed_limit", "m/s", G, "astro_light_speed_limit_meters_per_second"),
    ("broken.metric.speed", "km/h", G, "broken_metric_speed_km_per_hour"),
    ("mongodbatlas.process.asserts", "{assertions}/s", G, "mongodbatlas_process_asserts_per_second"),
    ("requests", "1/s", G, "requests_per_second"),
    ("events", "{event}/min", C, "events_per_min_total"),
    ("mongodbatlas.process.db.query_targeting.scanned_per_returned", "{scanned}/{returned}", G,
     "mongodbatlas_process_db_query_targeting_scanned_per_returned"),
    # unit `1`: `_ratio` for gauges only (not sums, where producers misuse it for counts)
    ("system.cpu.utilization", "1", G, "system_cpu_utilization_ratio"),
    ("hw.fan.speed_ratio", "1", G, "hw_fan_speed_ratio"),
    ("system.cpu.load_average.15m", "1", G, "system_cpu_load_average_15m_ratio"),
    ("apache.requests", "1", C, "apache_requests_total"),
    ("queue.fill", "1", U, "queue_fill"),
    # unit already in the name: not repeated
    ("network_transmitted_bytes_total", "By", C, "network_transmitted_bytes_total"),
    ("request_duration_seconds", "s", H, "request_duration_seconds"),
    ("system.network.packets", "packets", G, "system_network_packets"),
    # `_total` exactly once, after the unit
    ("requests_total", "", C, "requests_total"),
    ("requests", "", C, "requests_total"),
    ("work_total", "s", C, "work_seconds_total"),
    ("active_total", "", U, "active_total"),
    # sanitizing: invalid characters → `_`, runs of `_` collapse, leading digit prefixed
    ("http.server.duration", "", G, "http_server_duration"),
    ("envoy__rule_engine_zlib_buf_error", "", G, "envoy_rule_engine_zlib_buf_error"),
    ("3.14 digits", "", G, "_3_14_digits"),
    ("unsupported.metric.temperature", "°F", G, "unsupported_metric_temperature_F"),
    ("unsupported.metric.weird", "+=.:,!* & #", G, "unsupported_metric_weird"),
    ("caf\u00e9.visits", "", C, "caf_visits_total"),
    ("job:requests:rate5m", "", G, "job:requests:rate5m"),  # `:` is valid in metric names
    ("whitespace unit", "  By\t", G, "whitespace_unit_bytes"),
])
def test_metric_name(name: str, unit: str, shape: Shape, expected: str) -> None:
    got = metric_name(name, unit, shape)
    assert got == expected
    assert VALID_METRIC_NAME.match(got)


@pytest.mark.parametrize(("name", "unit", "shape", "namespace", "suffixes", "expected"), [
    ("network.io", "By", C, "system", True, "system_network_io_bytes_total"),
    ("test", "", G, "space", True, "space_test"),
    ("#test", "", G, "space", True, "space_test"),
    ("system.io", "By", C, "", False, "system_io"),
    ("network (I/O)", "By", C, "system", False, "system_network_I_O_"),  # spec: replace, do not trim
    ("3.14 digits", "By", G, "", False, "_3_14_digits"),
    ("requests", "s", H, "agents", False, "agents_requests"),
])
def test_metric_name_namespace_and_no_suffixes(name: str, unit: str, shape: Shape, namespace: str, suffixes: bool,
                                               expected: str) -> None:
    assert metric_name(name, unit, shape, namespace=namespace, add_suffixes=suffixes) == expected


@pytest.mark.parametrize(("unit", "words"), [
    ("s", ("seconds", "")), ("By/s", ("bytes", "second")), ("{token}", ("", "")), ("{objects}/s", ("", "second")),
    ("1", ("", "")), ("", ("", "")), ("foo", ("foo", "")), ("m/m", ("meters", "minute")), ("1/d", ("", "day")),
    ("By/w", ("bytes", "week")), ("{req}/mo", ("", "month")), ("{req}/y", ("", "year")),
])
def test_unit_words(unit: str, words: tuple[str, str]) -> None:
    assert unit_words(unit) == words


@pytest.mark.parametrize(("family", "unit", "shape", "expected"), [
    ("http_server_request_duration_seconds", "s", H, "seconds"),
    ("system_io_bytes_total", "By", C, "bytes"),
    ("network_io_bytes_per_second", "By/s", G, "bytes_per_second"),
    ("system_cpu_utilization_ratio", "1", G, "ratio"),
    ("gen_ai_client_token_usage_total", "{token}", C, ""),
    ("bytes_in_total", "By", C, ""),      # unit not a suffix of the name: UNIT must be omitted
    ("requests_per_second", "1/s", G, "per_second"),
])
def test_unit_metadata(family: str, unit: str, shape: Shape, expected: str) -> None:
    assert unit_metadata(family, unit, shape) == expected


@pytest.mark.parametrize(("key", "label"), [
    ("http.method", "http_method"),
    ("http_method", "http_method"),
    ("gen_ai.request.model", "gen_ai_request_model"),
    ("a..b", "a_b"),
    ("__reserved", "_reserved"),       # never `__`: Prometheus reserves that prefix
    ("_private", "_private"),
    ("1st", "key_1st"),
    ("0.5", "key_0_5"),
    ("k8s.pod.name", "k8s_pod_name"),
    ("caf\u00e9", "caf_"),
    ("UpperCase", "UpperCase"),
])
def test_label_name(key: str, label: str) -> None:
    assert sanitize_label_name(key) == label
    assert VALID_LABEL_NAME.match(label)


def test_sanitize_metric_name_keeps_valid_names() -> None:
    for name in ("up", "process_cpu_seconds_total", "job:requests:rate5m", "_private"):
        assert sanitize_metric_name(name) == name


def test_label_collisions_join_values_in_original_key_order() -> None:
    labels = join_labels([("http_method", "POST"), ("http.method", "GET"), ("http-method", "PUT"), ("route", "/x")])
    # sorted original keys: "http-method" < "http.method" < "http_method"
    assert labels == {"http_method": "PUT;GET;POST", "route": "/x"}


def test_label_collision_with_duplicate_original_key() -> None:
    assert join_labels([("a", "2"), ("a", "1")]) == {"a": "1;2"}


def test_join_labels_uses_and_fills_cache() -> None:
    cache: dict[str, str] = {}
    assert join_labels([("k.8", "v")], cache) == {"k_8": "v"}
    assert cache == {"k.8": "k_8"}


@pytest.mark.parametrize(("value", "text"), [
    ("plain", "plain"),
    ("with \"quotes\"\n", "with \"quotes\"\n"),
    (True, "true"),
    (False, "false"),
    (42, "42"),
    (-7, "-7"),
    (1.5, "1.5"),
    (0.0, "0.0"),
    (["a", "b"], '["a","b"]'),
    ([1, 2], "[1,2]"),
    ([], "[]"),
    ({"k": "v", "n": 1}, '{"k":"v","n":1}'),
    (b"\x00\x01", '"AAE="'),
])
def test_attribute_values_are_json_encoded(value: object, text: str) -> None:
    assert value_text(any_value(value)) == text


def test_empty_any_value_is_empty_string() -> None:
    assert value_text(AnyValue()) == ""
