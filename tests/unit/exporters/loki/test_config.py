"""`exporters.loki` keys: defaults, the checks on the push URL, tenant and labels, and the label warnings."""
from __future__ import annotations

from typing import Any

import pytest

from exporters import loki
from exporters.loki.config import LokiExporterConfig, high_cardinality
from pipeline.component import make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError, ConfigIssue
from receivers.otlp import receiver as otlp_receiver

URL = "http://loki:3100/loki/api/v1/push"
FACTORIES = make_factory_map((otlp_receiver.FACTORY, loki.FACTORY))


def decode(raw: dict[str, Any]) -> tuple[LokiExporterConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(LokiExporterConfig, raw, "exporters.loki", issues)
    return cfg, issues


def errors(raw: dict[str, Any]) -> list[str]:
    return [f"{i.path}: {i.message}" for i in decode(raw)[1] if not i.warning]


def warnings(raw: dict[str, Any]) -> list[str]:
    return [f"{i.path}: {i.message}" for i in decode(raw)[1] if i.warning]


def pipeline(exporter: str) -> str:
    return ("receivers: {otlp: {protocols: {http: {endpoint: '127.0.0.1:0'}}}}\n"
            f"exporters:\n  loki:\n{exporter}"
            "service: {pipelines: {logs: {receivers: [otlp], exporters: [loki]}}}\n")


def test_the_default_config_asks_for_the_push_url_and_nothing_else() -> None:
    assert errors({}) == ["exporters.loki.endpoint: is required: Loki's push URL, e.g. "
                          "'http://loki:3100/loki/api/v1/push'"]


def test_defaults() -> None:
    cfg, issues = decode({"endpoint": URL})
    assert issues == []
    assert cfg.compression == "gzip" and cfg.format == "raw" and cfg.structured_metadata is True
    assert cfg.tenant_id == "" and cfg.tenant_headers() == {} and cfg.timeout == 5.0
    assert cfg.labels.resource == {} and cfg.labels.attributes == {}
    assert cfg.sending_queue.enabled and cfg.retry_on_failure.enabled


def test_a_typo_is_refused_with_the_closest_key() -> None:
    msgs = errors({"endpoint": URL, "structured_metdata": False, "labels": {"resources": {}}})
    assert any(m.startswith("exporters.loki.structured_metdata: unknown key") and "structured_metadata" in m
               for m in msgs)
    assert any(m.startswith("exporters.loki.labels.resources: unknown key") and "'resource'" in m for m in msgs)


@pytest.mark.parametrize(("endpoint", "wanted"), [
    ("loki:3100", "invalid URL"),
    ("ftp://loki/loki/api/v1/push", "invalid URL"),
    ("http://loki:3100", "has no path: Loki takes pushes at /loki/api/v1/push"),
    ("http://loki:3100/", "has no path"),
    ("http://loki:3100/otlp", "is Loki's OTLP endpoint"),
    ("http://loki:3100/otlp/v1/logs", "with the otlphttp exporter"),
])
def test_bad_push_urls_are_refused_with_the_fix(endpoint: str, wanted: str) -> None:
    msgs = errors({"endpoint": endpoint})
    assert len(msgs) == 1 and msgs[0].startswith("exporters.loki.endpoint: ") and wanted in msgs[0]


def test_a_proxy_path_is_taken_as_it_is() -> None:
    assert errors({"endpoint": "https://logs-prod-eu-west-0.grafana.net/loki/api/v1/push"}) == []
    assert errors({"endpoint": "https://gateway.example.com/tenant-a/push"}) == []


def test_url_credentials_are_never_shown() -> None:
    msgs = errors({"endpoint": "ftp://user:s3cr3t@loki/push?token=t0k3n"})
    assert msgs and not any("s3cr3t" in m or "t0k3n" in m for m in msgs)


def test_tenant_id_is_sent_as_x_scope_orgid_and_checked() -> None:
    cfg, issues = decode({"endpoint": URL, "tenant_id": "team-a"})
    assert issues == [] and cfg.tenant_headers() == {"X-Scope-OrgID": "team-a"}
    assert errors({"endpoint": URL, "tenant_id": "team a"}) == [
        "exporters.loki.tenant_id: a Loki tenant id is 1 to 150 letters, digits and !-_.*'() characters"]
    assert errors({"endpoint": URL, "tenant_id": ".."}) != []
    assert errors({"endpoint": URL, "tenant_id": "a", "headers": {"x-scope-orgid": "b"}}) == [
        "exporters.loki.tenant_id: is sent as the X-Scope-OrgID header, which headers sets too: keep only one of "
        "them"]


def test_headers_the_exporter_sets_itself_are_refused() -> None:
    assert errors({"endpoint": URL, "headers": {"Content-Encoding": "br"}}) == [
        "exporters.loki.headers.Content-Encoding: 'Content-Encoding' is set by the exporter from compression"]


@pytest.mark.parametrize("fmt", ["raw", "json", "logfmt"])
def test_formats(fmt: str) -> None:
    assert decode({"endpoint": URL, "format": fmt})[0].format == fmt


def test_an_unknown_format_lists_the_valid_ones() -> None:
    msgs = errors({"endpoint": URL, "format": "text"})
    assert len(msgs) == 1 and all(f in msgs[0] for f in ("raw", "json", "logfmt"))


def test_label_names_are_sanitized_and_collisions_refused() -> None:
    cfg, issues = decode({"endpoint": URL, "labels": {"resource": {"k8s.namespace.name": "", "k8s.pod.name": "pod"},
                                                      "attributes": {"gen_ai.system": "", "1st": ""}}})
    assert issues == []
    assert sorted(cfg.labels.items()) == [("attributes", "1st", "key_1st"),
                                          ("attributes", "gen_ai.system", "gen_ai_system"),
                                          ("resource", "k8s.namespace.name", "k8s_namespace_name"),
                                          ("resource", "k8s.pod.name", "pod")]
    assert errors({"endpoint": URL, "labels": {"resource": {"k8s.pod.name": "pod", "pod": ""}}}) == [
        "exporters.loki.labels.resource.pod: becomes label 'pod', as 'k8s.pod.name' does: give one of them another "
        "label name"]
    assert errors({"endpoint": URL, "labels": {"attributes": {"": ""}}}) == [
        "exporters.loki.labels.attributes: an attribute name cannot be empty"]


@pytest.mark.parametrize("attribute", ["trace_id", "traceId", "span.id", "session.id", "user.id", "enduser.id",
                                       "gen_ai.conversation.id", "app.user_id", "SessionID"])
def test_known_high_cardinality_labels_are_a_warning_not_an_error(attribute: str) -> None:
    raw = {"endpoint": URL, "labels": {"attributes": {attribute: ""}}}
    assert errors(raw) == []
    assert warnings(raw) == [f"exporters.loki.labels.attributes.{attribute}: '{attribute}' is a high-cardinality "
                             "attribute (a trace, span, session or user id): as a label every value makes a new Loki "
                             "stream, which slows Loki down and hits its stream limits; leave it out of labels, it is "
                             "sent as structured metadata"]


def test_the_label_name_is_checked_too_and_ordinary_labels_pass() -> None:
    assert high_cardinality("x") is False and high_cardinality("k8s.namespace.name") is False
    assert high_cardinality("http.route") is False and high_cardinality("service.name") is False
    assert warnings({"endpoint": URL, "labels": {"resource": {"k8s.pod.uid": "user_id"}}}) != []
    assert warnings({"endpoint": URL, "labels": {"resource": {"k8s.namespace.name": "namespace"}}}) == []


def test_more_labels_than_loki_takes_by_default_is_a_warning() -> None:
    raw = {"endpoint": URL, "labels": {"resource": {f"a{i}": "" for i in range(14)}}}
    assert errors(raw) == []
    assert warnings(raw) == ["exporters.loki.labels: 16 labels per stream with service_name and level: Loki "
                             "refuses streams with more than 15 by default (limits_config.max_label_names_per_series)"]


def test_raw_lines_without_structured_metadata_is_a_warning() -> None:
    assert warnings({"endpoint": URL, "structured_metadata": False}) == [
        "exporters.loki.structured_metadata: is off and format is raw: log lines carry only the body, so trace ids "
        "and attributes are not sent; use format json or logfmt to keep them in the line"]
    assert warnings({"endpoint": URL, "structured_metadata": False, "format": "json"}) == []


def test_a_warning_in_a_file_leaves_the_config_valid_and_is_reported_with_its_path() -> None:
    cfg = load_text(pipeline("    endpoint: http://loki:3100/loki/api/v1/push\n"
                             "    labels: {attributes: {session.id: ''}}\n"), FACTORIES, env={},
                    name="agents.yaml")
    assert [str(w) for w in cfg.warnings] == [
        "agents.yaml: warning: exporters.loki.labels.attributes.session.id: 'session.id' is a high-cardinality "
        "attribute (a trace, span, session or user id): as a label every value makes a new Loki stream, which slows "
        "Loki down and hits its stream limits; leave it out of labels, it is sent as structured metadata"]


def test_a_warning_does_not_hide_the_errors_of_the_same_block() -> None:
    # the labels block warns; the exporter block's own check (no endpoint) must still run and fail
    with pytest.raises(ConfigError) as e:
        load_text(pipeline("    labels: {attributes: {trace_id: ''}}\n"), FACTORIES, env={})
    shown = [str(i) for i in e.value.issues]
    assert any("error: exporters.loki.endpoint: is required" in s for s in shown)
    assert any("warning: exporters.loki.labels.attributes.trace_id:" in s for s in shown)
