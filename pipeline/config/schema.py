"""The configuration's shape once decoded: pipelines, the service block and the whole `Config`.

Same shape as the Collector's: `receivers`, `processors`, `exporters`,
`connectors` and `extensions` keyed by `type[/name]`, and `service.pipelines`
wiring them per signal (`signal` or `signal/name`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.component import ComponentID, Kind
from pipeline.config.types import Duration, Issue, did_you_mean
from pipeline.errors import ConfigIssue
from pipeline.model import Signal
from pipeline.net.endpoint import Endpoint

SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions", "service")


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineConfig:
    receivers: tuple[str, ...] = ()
    processors: tuple[str, ...] = ()
    exporters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsTelemetryConfig:
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    encoding: Literal["json", "console"] = "json"


@dataclass(frozen=True, slots=True, kw_only=True)
class PrometheusPullConfig:
    """`readers[].pull.exporter.prometheus`: where the Collector (v0.123+) serves its own metrics."""

    host: str = "localhost"
    port: int = 8888

    def endpoint(self) -> Endpoint:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return Endpoint.listen(f"{host}:{self.port}")

    def validate(self) -> list[Issue]:
        return [] if 0 <= self.port <= 65535 else [Issue("port", f"must be between 0 and 65535, got {self.port}")]


@dataclass(frozen=True, slots=True, kw_only=True)
class PullExporterConfig:
    prometheus: PrometheusPullConfig | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PullReaderConfig:
    exporter: PullExporterConfig = field(default_factory=PullExporterConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricReaderConfig:
    """One of `service.telemetry.metrics.readers`; otelpipe supports the pull reader with a Prometheus exporter."""

    pull: PullReaderConfig | None = None
    periodic: dict[str, Any] | None = None  # the Collector's push reader: refused with the reason below

    def validate(self) -> list[Issue]:
        if self.periodic is not None or self.pull is None or self.pull.exporter.prometheus is None:
            return [Issue("", "only `pull: {exporter: {prometheus: {host, port}}}` is supported: otelpipe serves "
                              "its own metrics on the admin server for Prometheus to scrape, it does not push them")]
        return []


DEFAULT_ADMIN = "0.0.0.0:8888"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsTelemetryConfig:
    """The admin server: self-metrics, health, readiness and status.

    Its address is `address` (the Collector's older key, default all interfaces
    for Kubernetes probes) or, as current Collector configs write it, the host
    and port of a `readers` pull Prometheus exporter (which then wins, as the
    Collector ignores `address` since v0.123).
    """

    address: Endpoint = field(default_factory=lambda: Endpoint.listen(DEFAULT_ADMIN))
    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    readers: tuple[MetricReaderConfig, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.address, str):  # built in code with text; the decoder passes an Endpoint
            object.__setattr__(self, "address", Endpoint.listen(self.address))
        pull = self._pull()
        if pull is not None and self.address == Endpoint.listen(DEFAULT_ADMIN):
            object.__setattr__(self, "address", pull.endpoint())

    def _pull(self) -> PrometheusPullConfig | None:
        for reader in self.readers:
            if reader.pull is not None and reader.pull.exporter.prometheus is not None:
                return reader.pull.exporter.prometheus
        return None

    def validate(self) -> list[Issue]:
        if len(self.readers) > 1:
            return [Issue("readers", "otelpipe has one admin server: give one pull reader")]
        pull = self._pull()
        if pull is not None and self.address != pull.endpoint():
            return [Issue("address", "both `address` and `readers` set the admin server's address; keep `readers` "
                                     "(the Collector ignores `address` since v0.123)")]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryConfig:
    logs: LogsTelemetryConfig = field(default_factory=LogsTelemetryConfig)
    metrics: MetricsTelemetryConfig = field(default_factory=MetricsTelemetryConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    extensions: tuple[str, ...] = ()
    pipelines: dict[str, PipelineConfig] = field(default_factory=dict)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    shutdown_timeout: Duration = Duration(25.0)

    def validate(self) -> list[Issue]:
        return [Issue("shutdown_timeout", "must be greater than 0")] if self.shutdown_timeout <= 0 else []


@dataclass(frozen=True, slots=True)
class PipelineID:
    """`signal` or `signal/name`."""

    signal: Signal
    name: str = ""

    def __str__(self) -> str:
        return f"{self.signal.value}/{self.name}" if self.name else self.signal.value


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One pipeline's components; `receivers` and `exporters` may name connectors (see Config.connectors)."""

    id: PipelineID
    receivers: tuple[ComponentID, ...]
    processors: tuple[ComponentID, ...]
    exporters: tuple[ComponentID, ...]


@dataclass(frozen=True)
class Config:
    """A validated configuration, ready for the graph builder.

    `pipeline_order` lists the pipelines so that every pipeline comes before the
    pipelines a connector feeds from it (upstream first); the graph builds them
    in the reverse order, so a connector's downstream already exists.
    """

    receivers: Mapping[ComponentID, Any]
    processors: Mapping[ComponentID, Any]
    exporters: Mapping[ComponentID, Any]
    pipelines: Mapping[PipelineID, Pipeline]
    service: ServiceConfig
    connectors: Mapping[ComponentID, Any] = field(default_factory=dict)
    extensions: Mapping[ComponentID, Any] = field(default_factory=dict)
    pipeline_order: tuple[PipelineID, ...] = ()
    warnings: tuple[ConfigIssue, ...] = ()
    sources: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def components(self, kind: Kind) -> Mapping[ComponentID, Any]:
        return {Kind.RECEIVER: self.receivers, Kind.PROCESSOR: self.processors, Kind.EXPORTER: self.exporters,
                Kind.CONNECTOR: self.connectors, Kind.EXTENSION: self.extensions}[kind]

    def enabled_extensions(self) -> tuple[ComponentID, ...]:
        """The extensions `service.extensions` enables, in its order (start order)."""
        return tuple(ComponentID.parse(name) for name in self.service.extensions)


def parse_pipeline_id(text: str) -> PipelineID:
    sig, _, name = text.partition("/")
    try:
        signal = Signal(sig)
    except ValueError:
        raise ValueError(f"unknown pipeline signal '{sig}'{did_you_mean(sig, [s.value for s in Signal])}: "
                         "a pipeline id is 'traces', 'metrics' or 'logs', optionally with '/name'") from None
    if "/" in text and not name:
        raise ValueError("a pipeline name after '/' must not be empty")
    return PipelineID(signal, name)
