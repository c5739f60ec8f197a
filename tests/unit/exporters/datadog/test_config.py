"""`exporters.datadog` keys: defaults, site → intake URLs, and validation messages that never show the key."""
from __future__ import annotations

from typing import Any

import pytest

from exporters.datadog.config import SITES, DatadogExporterConfig
from otelpipe import components
from pipeline.component import ComponentID
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError, ConfigIssue

KEY = "0123456789abcdef0123456789abcdef"


def decode(raw: dict[str, Any]) -> tuple[DatadogExporterConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(DatadogExporterConfig, raw, "exporters.datadog", issues)
    return cfg, issues


def messages(raw: dict[str, Any]) -> list[str]:
    return [f"{i.path}: {i.message}" for i in decode(raw)[1]]


def test_the_default_config_asks_for_the_api_key_and_nothing_else() -> None:
    assert messages({}) == ["exporters.datadog.api.key: is required: your Datadog API key, usually written as "
                            "${env:DD_API_KEY}"]


def test_defaults_follow_the_collector() -> None:
    cfg, issues = decode({"api": {"key": KEY}})
    assert issues == []
    assert cfg.api.site == "datadoghq.com" and cfg.timeout == 15.0 and cfg.compression == "gzip"
    assert cfg.metrics.delta_ttl == 3600 and cfg.metrics.sums.cumulative_monotonic_mode == "to_delta"
    assert cfg.metrics.sums.initial_cumulative_monotonic_value == "auto"
    assert cfg.metrics.summaries.mode == "gauges" and cfg.metrics.histograms.mode == "nobuckets"
    assert str(cfg.series_url()) == "https://api.datadoghq.com/api/v2/series"
    assert str(cfg.logs_url()) == "https://http-intake.logs.datadoghq.com/api/v2/logs"


@pytest.mark.parametrize(("site", "series", "logs"), [
    ("datadoghq.eu", "https://api.datadoghq.eu/api/v2/series", "https://http-intake.logs.datadoghq.eu/api/v2/logs"),
    ("us3.datadoghq.com", "https://api.us3.datadoghq.com/api/v2/series",
     "https://http-intake.logs.us3.datadoghq.com/api/v2/logs"),
    ("us5.datadoghq.com", "https://api.us5.datadoghq.com/api/v2/series",
     "https://http-intake.logs.us5.datadoghq.com/api/v2/logs"),
    ("ap1.datadoghq.com", "https://api.ap1.datadoghq.com/api/v2/series",
     "https://http-intake.logs.ap1.datadoghq.com/api/v2/logs"),
    ("ddog-gov.com", "https://api.ddog-gov.com/api/v2/series", "https://http-intake.logs.ddog-gov.com/api/v2/logs"),
])
def test_each_site_has_its_intakes(site: str, series: str, logs: str) -> None:
    cfg, issues = decode({"api": {"key": KEY, "site": site}})
    assert issues == [] and site in SITES
    assert (str(cfg.series_url()), str(cfg.logs_url())) == (series, logs)


def test_endpoints_override_the_site_and_get_the_api_path() -> None:
    cfg, issues = decode({"api": {"key": KEY}, "metrics": {"endpoint": "http://127.0.0.1:8080"},
                          "logs": {"endpoint": "https://proxy.internal/datadog/api/v2/logs"}})
    assert issues == []
    assert str(cfg.series_url()) == "http://127.0.0.1:8080/api/v2/series"
    assert str(cfg.logs_url()) == "https://proxy.internal/datadog/api/v2/logs"  # already there: kept


def test_an_unknown_site_lists_the_sites() -> None:
    [msg] = messages({"api": {"key": KEY, "site": "datadog.com"}})
    assert msg.startswith("exporters.datadog.api.site: unknown Datadog site 'datadog.com': use one of datadoghq.com")
    # with both endpoints set the site is not used
    assert messages({"api": {"key": KEY, "site": "example.com"}, "metrics": {"endpoint": "http://a"},
                     "logs": {"endpoint": "http://b"}}) == []


def test_a_key_with_other_characters_is_refused_without_being_shown() -> None:
    secret = "sk-live-not-a-datadog-key!"
    [msg] = messages({"api": {"key": secret}})
    assert msg.startswith("exporters.datadog.api.key: contains characters that are not hexadecimal")
    assert secret not in msg and "!" not in msg and "sk-" not in msg


def test_whitespace_around_the_key_is_ignored_as_in_the_collector() -> None:
    cfg, issues = decode({"api": {"key": f"  {KEY}\n"}})
    assert issues == [] and cfg.api_key() == KEY


@pytest.mark.parametrize(("raw", "expected"), [
    ({"tags": ["env:prod", "a,b"]}, "exporters.datadog.tags[1]: must be 'key:value'"),
    ({"hostname": "bad host"}, "exporters.datadog.hostname: must be a host name"),
    ({"compression": "zstd"}, "exporters.datadog.compression: invalid value 'zstd': must be one of 'gzip', "
                              "'deflate', 'none'"),
    ({"metrics": {"histograms": {"mode": "distributions"}}},
     "exporters.datadog.metrics.histograms.mode: 'distributions' (Datadog sketches) is not supported"),
    ({"metrics": {"histograms": {"send_aggregation_metrics": False}}},
     "exporters.datadog.metrics.histograms.send_aggregation_metrics: 'nobuckets' mode with"),
    ({"metrics": {"delta_ttl": 0}}, "exporters.datadog.metrics.delta_ttl: must be a number of seconds"),
    ({"metrics": {"endpoint": "ftp://x"}}, "exporters.datadog.metrics.endpoint: invalid URL 'ftp://x'"),
    ({"metrics": {"sums": {"cumulative_monotonic_mode": "delta"}}},
     "exporters.datadog.metrics.sums.cumulative_monotonic_mode: invalid value 'delta'"),
    ({"logs": {"endpoint": "http://u:secretpw@h/x"}, "metrics": {"endpointt": "x"}},
     "exporters.datadog.metrics.endpointt: unknown key 'endpointt'; did you mean 'endpoint'?"),
])
def test_bad_values_are_reported_at_their_key(raw: dict[str, Any], expected: str) -> None:
    got = messages({"api": {"key": KEY}, **raw})
    assert any(m.startswith(expected) for m in got), got
    assert all("secretpw" not in m for m in got)


def test_a_whole_config_with_the_key_from_the_environment() -> None:
    yaml = """
receivers: {otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}}
exporters:
  datadog: {api: {key: "${env:DD_API_KEY}", site: datadoghq.eu}, tags: ["env:prod"]}
service:
  pipelines:
    metrics: {receivers: [otlp], exporters: [datadog]}
    logs: {receivers: [otlp], exporters: [datadog]}
"""
    cfg = load_text(yaml, components.factories(), env={"DD_API_KEY": KEY})
    dd = cfg.exporters[ComponentID("datadog")]
    assert dd.api_key() == KEY and dd.tags == ("env:prod",)
    with pytest.raises(ConfigError, match="DD_API_KEY is not set"):
        load_text(yaml, components.factories(), env={})


def test_traces_are_not_a_datadog_signal() -> None:
    yaml = f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}}}
exporters:
  datadog: {{api: {{key: {KEY}}}}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [datadog]}}
"""
    with pytest.raises(ConfigError, match=r"service\.pipelines\.traces\.exporters\[0\].*datadog.*traces"):
        load_text(yaml, components.factories(), env={})
