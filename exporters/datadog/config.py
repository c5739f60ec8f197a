"""`exporters.datadog`: the keys, as the Collector's Datadog exporter spells them where it has them.

The intake URLs come from `api.site` (`https://api.<site>/api/v2/series`,
`https://http-intake.logs.<site>/api/v2/logs`) unless `metrics.endpoint` /
`logs.endpoint` override them (a base URL; the API path is appended unless it is
already there). `compression` and the global `tags` are this exporter's own keys (the
Collector keeps tags under `host_metadata` and compresses as it likes).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from yarl import URL

from pipeline.config.types import Duration, Issue, Secret
from pipeline.exporterhelper import ExporterConfig
from pipeline.net.tls import TLSClientConfig
from pipeline.net.urls import url_problem

#: The Datadog sites (the part after `app.` or `api.`), as the API reference lists them.
SITES = ("datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "datadoghq.eu", "ap1.datadoghq.com",
         "ap2.datadoghq.com", "uk1.datadoghq.com", "ddog-gov.com", "us2.ddog-gov.com")
DEFAULT_SITE = "datadoghq.com"
SERIES_PATH = "/api/v2/series"
LOGS_PATH = "/api/v2/logs"
# The Collector's StaticAPIKeyCheck: an API key is hexadecimal (32 characters).
_NON_HEX = re.compile(r"[^0-9a-fA-F]")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?")
MAX_TAG_LENGTH = 200
Compression = Literal["gzip", "deflate", "none"]


@dataclass(frozen=True, slots=True, kw_only=True)
class APIConfig:
    """`api`: checked by the exporter's config, so that a config without an `api` block is told the key is needed."""

    key: Secret = Secret("")
    site: str = DEFAULT_SITE


@dataclass(frozen=True, slots=True, kw_only=True)
class HistogramConfig:
    """`metrics.histograms`: `nobuckets` sends count/sum/min/max/avg, `counters` adds one count per bucket."""

    mode: Literal["nobuckets", "counters", "distributions"] = "nobuckets"
    send_aggregation_metrics: bool = True

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.mode == "distributions":
            out.append(Issue("mode", "'distributions' (Datadog sketches) is not supported: use 'nobuckets' "
                                     "(count, sum, min, max and avg series) or 'counters' (plus one count per bucket)"))
        elif self.mode == "nobuckets" and not self.send_aggregation_metrics:
            out.append(Issue("send_aggregation_metrics", "'nobuckets' mode with send_aggregation_metrics: false "
                                                         "would send no histogram metrics"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SumsConfig:
    cumulative_monotonic_mode: Literal["to_delta", "raw_value"] = "to_delta"
    initial_cumulative_monotonic_value: Literal["auto", "drop", "keep"] = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class SummariesConfig:
    mode: Literal["gauges", "noquantiles"] = "gauges"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    endpoint: str = ""
    resource_attributes_as_tags: bool = False
    instrumentation_scope_metadata_as_tags: bool = False
    # Seconds (an integer, as in the Collector) the last value of a cumulative series is kept for deltas.
    delta_ttl: int = 3600
    # The most cumulative series whose last value is kept; the least recently updated is forgotten first.
    delta_max_series: int = 100_000
    histograms: HistogramConfig = field(default_factory=HistogramConfig)
    sums: SumsConfig = field(default_factory=SumsConfig)
    summaries: SummariesConfig = field(default_factory=SummariesConfig)

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.endpoint:
            problem = url_problem(self.endpoint, {})
            if problem:
                out.append(Issue("endpoint", problem))
        if self.delta_ttl <= 0:
            out.append(Issue("delta_ttl", "must be a number of seconds greater than 0"))
        if self.delta_max_series <= 0:
            out.append(Issue("delta_max_series", "must be greater than 0"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsConfig:
    endpoint: str = ""

    def validate(self) -> list[Issue]:
        problem = url_problem(self.endpoint, {}) if self.endpoint else None
        return [Issue("endpoint", problem)] if problem else []


@dataclass(frozen=True, slots=True, kw_only=True)
class DatadogExporterConfig(ExporterConfig):
    """`exporters.datadog`: metrics to `/api/v2/series`, logs to `/api/v2/logs`."""

    timeout: Duration = Duration(15.0)  # the Collector's Datadog exporter default
    api: APIConfig = field(default_factory=APIConfig)
    hostname: str = ""
    tags: tuple[str, ...] = ()
    compression: Compression = "gzip"
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)

    def validate(self) -> list[Issue]:
        out = ExporterConfig.validate(self)
        key = self.api_key()
        if not key:
            out.append(Issue("api.key", "is required: your Datadog API key, usually written as ${env:DD_API_KEY}"))
        elif _NON_HEX.search(key):
            # Never quote the key (nor the characters found in it): it is a secret.
            out.append(Issue("api.key", "contains characters that are not hexadecimal; a Datadog API key is 32 "
                                        "hexadecimal characters (check for quotes or a stray character)"))
        if self.api.site not in SITES and not (self.metrics.endpoint and self.logs.endpoint):
            out.append(Issue("api.site", f"unknown Datadog site {self.api.site!r}: use one of {', '.join(SITES)} "
                                         "(or set metrics.endpoint and logs.endpoint)"))
        if self.hostname and not _HOSTNAME.fullmatch(self.hostname):
            out.append(Issue("hostname", "must be a host name: letters, digits, '.', '-' and '_', "
                                         "at most 255 characters"))
        for i, tag in enumerate(self.tags):
            if not tag or "," in tag or len(tag) > MAX_TAG_LENGTH or tag != tag.strip():
                out.append(Issue(f"tags[{i}]", f"must be 'key:value' or a bare tag of 1 to {MAX_TAG_LENGTH} "
                                               "characters, without commas or surrounding spaces"))
        return out

    def api_key(self) -> str:
        """The key as sent (surrounding whitespace from a secret file or variable removed, as the Collector does)."""
        return self.api.key.reveal().strip()

    def series_url(self) -> URL:
        return _with_path(self.metrics.endpoint or f"https://api.{self.api.site}", SERIES_PATH)

    def logs_url(self) -> URL:
        return _with_path(self.logs.endpoint or f"https://http-intake.logs.{self.api.site}", LOGS_PATH)


def _with_path(base: str, path: str) -> URL:
    """`base` with the API path appended to its own path (kept when it already ends with it), query kept."""
    url = URL(base)
    if url.raw_path.rstrip("/").endswith(path):
        return url
    return url.with_path(url.raw_path.rstrip("/") + path, encoded=True, keep_query=True)
