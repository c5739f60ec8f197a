"""OTLP receiver config: the Collector's shape, defaults, protocol presence, typos and bad values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.component import ExporterFactory, Kind, Stability, make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.schema import Config
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError, ConfigIssue
from pipeline.model import Signal
from receivers.otlp.config import (
    GRPCConfig,
    HTTPConfig,
    OTLPReceiverConfig,
    ProtocolsConfig,
)
from receivers.otlp.receiver import FACTORY


@dataclass(frozen=True, slots=True, kw_only=True)
class _NopExporterConfig:
    pass


_NOP_EXPORTER = ExporterFactory(type="nop", config_type=_NopExporterConfig,
                        signals={s: Stability.STABLE for s in Signal}, create=lambda settings, cfg: None)
FACTORIES = make_factory_map([FACTORY, _NOP_EXPORTER])


def load(receiver_yaml: str) -> Config:
    text = f"""
receivers:
{receiver_yaml}
exporters:
  nop:
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [nop]}}
"""
    return load_text(text, FACTORIES)


def errors(receiver_yaml: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load(receiver_yaml)
    return [i for i in err.value.issues if not i.warning]


def otlp(cfg: Config) -> OTLPReceiverConfig:
    from pipeline.component import ComponentID

    out = cfg.receivers[ComponentID("otlp")]
    assert isinstance(out, OTLPReceiverConfig)
    return out


def test_factory() -> None:
    assert FACTORY.type == "otlp" and FACTORY.kind is Kind.RECEIVER
    assert FACTORY.config_type is OTLPReceiverConfig
    assert FACTORY.signals == {Signal.TRACES: Stability.STABLE, Signal.METRICS: Stability.STABLE,
                               Signal.LOGS: Stability.STABLE}


def test_default_config_validates_with_collector_defaults() -> None:
    """Listeners default to localhost, as the Collector's do since v0.104 (configs for containers bind 0.0.0.0)."""
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(OTLPReceiverConfig, {}, "receivers.otlp", issues)
    assert issues == []
    assert cfg == OTLPReceiverConfig()
    grpc, http = cfg.protocols.grpc, cfg.protocols.http
    assert grpc.endpoint == "localhost:4317" and grpc.max_recv_msg_size_mib == 4
    assert http.endpoint == "localhost:4318"
    assert http.max_request_body_size == 20 * 1024 * 1024  # the Collector's confighttp default
    assert ((http.traces_url_path, http.metrics_url_path, http.logs_url_path)
            == ("/v1/traces", "/v1/metrics", "/v1/logs"))
    assert http.cors is None
    assert cfg.listeners() == [("tcp", "localhost:4317", "protocols.grpc.endpoint"),
                               ("tcp", "localhost:4318", "protocols.http.endpoint")]


def test_only_the_listed_protocol_is_enabled() -> None:
    cfg = otlp(load("  otlp:\n    protocols:\n      grpc: {endpoint: 127.0.0.1:5317}\n"))
    assert cfg.protocols.grpc == GRPCConfig(endpoint="127.0.0.1:5317")
    assert cfg.protocols.http is None
    assert cfg.listeners() == [("tcp", "127.0.0.1:5317", "protocols.grpc.endpoint")]
    cfg = otlp(load("  otlp:\n    protocols:\n      http: {}\n"))
    assert cfg.protocols.grpc is None and cfg.protocols.http == HTTPConfig()


def test_null_protocol_values_enable_both_with_defaults() -> None:
    cfg = otlp(load("  otlp:\n    protocols:\n      grpc:\n      http:\n"))
    assert cfg.protocols == ProtocolsConfig(grpc=GRPCConfig(), http=HTTPConfig())


@pytest.mark.parametrize("block", ["  otlp:\n    protocols:\n", "  otlp:\n    protocols: {}\n"])
def test_no_protocol_is_an_error(block: str) -> None:
    issues = errors(block)
    assert [i.path for i in issues] == ["receivers.otlp.protocols"]
    assert "at least one protocol" in issues[0].message


def test_typo_key_is_rejected_with_path_and_suggestion() -> None:
    issues = errors("  otlp:\n    protocols:\n      grpc:\n      htttp:\n")
    assert [i.path for i in issues] == ["receivers.otlp.protocols.htttp"]
    assert "did you mean 'http'" in issues[0].message
    issues = errors("  otlp:\n    protocols:\n      http: {max_request_body_sise: 1MiB}\n")
    assert [i.path for i in issues] == ["receivers.otlp.protocols.http.max_request_body_sise"]
    assert "max_request_body_size" in issues[0].message


def test_sizes_and_paths_parse() -> None:
    cfg = otlp(load("  otlp:\n    protocols:\n      http:\n        max_request_body_size: 1MiB\n"
                    "        traces_url_path: /otlp/traces\n"
                    "        cors: {allowed_origins: ['https://*.example.com'], max_age: 600}\n"))
    http = cfg.protocols.http
    assert http.max_request_body_size == 1024 * 1024
    assert http.traces_url_path == "/otlp/traces"
    assert http.cors is not None and http.cors.allowed_origins == ("https://*.example.com",)


BAD_VALUES = [
    ("grpc: {endpoint: localhost}", "receivers.otlp.protocols.grpc.endpoint", "port"),
    ("grpc: {endpoint: 'http://0.0.0.0:4317'}", "receivers.otlp.protocols.grpc.endpoint", "scheme"),
    ("grpc: {max_recv_msg_size_mib: 0}", "receivers.otlp.protocols.grpc.max_recv_msg_size_mib", "between 1"),
    ("grpc: {max_recv_msg_size_mib: 4096}", "receivers.otlp.protocols.grpc.max_recv_msg_size_mib", "between 1"),
    ("grpc: {max_recv_msg_size_mib: four}", "receivers.otlp.protocols.grpc.max_recv_msg_size_mib", "integer"),
    ("http: {max_request_body_size: lots}", "receivers.otlp.protocols.http.max_request_body_size", "size"),
    ("http: {max_request_body_size: 0}", "receivers.otlp.protocols.http.max_request_body_size", "greater than 0"),
    ("http: {traces_url_path: v1/traces}", "receivers.otlp.protocols.http.traces_url_path", "start with '/'"),
    ("http: {logs_url_path: /v1/traces}", "receivers.otlp.protocols.http.logs_url_path", "already used"),
    ("http: {endpoint: '0.0.0.0:99999'}", "receivers.otlp.protocols.http.endpoint", "0-65535"),
    ("http: {cors: {max_age: -1}}", "receivers.otlp.protocols.http.cors.max_age", "seconds"),
    ("http: {cors: {allowed_origin: ['*']}}", "receivers.otlp.protocols.http.cors.allowed_origin",
     "did you mean 'allowed_origins'"),
    ("grpc: [4317]", "receivers.otlp.protocols.grpc", "mapping"),
]


@pytest.mark.parametrize("line,path,words", BAD_VALUES, ids=[b[1].rpartition(".")[2] + ":" + b[0] for b in BAD_VALUES])
def test_bad_values_are_rejected_with_their_path(line: str, path: str, words: str) -> None:
    issues = errors(f"  otlp:\n    protocols:\n      {line}\n")
    assert path in [i.path for i in issues], issues
    assert words in next(i.message for i in issues if i.path == path)


def test_grpc_and_http_on_the_same_port_clash() -> None:
    issues = errors("  otlp:\n    protocols:\n      grpc: {endpoint: '0.0.0.0:4317'}\n"
                    "      http: {endpoint: '127.0.0.1:4317'}\n")
    assert [i.path for i in issues] == ["receivers.otlp.protocols.http.endpoint"]
    assert "4317" in issues[0].message


def test_two_receivers_on_the_default_ports_clash() -> None:
    text = """
receivers:
  otlp:
  otlp/2:
exporters:
  nop:
service:
  pipelines:
    traces: {receivers: [otlp, otlp/2], exporters: [nop]}
"""
    with pytest.raises(ConfigError) as err:
        load_text(text, FACTORIES)
    paths = sorted(i.path for i in err.value.issues)
    assert paths == ["receivers.otlp/2.protocols.grpc.endpoint", "receivers.otlp/2.protocols.http.endpoint"]


def test_port_zero_never_clashes() -> None:
    cfg: Any = otlp(load("  otlp:\n    protocols:\n      grpc: {endpoint: '127.0.0.1:0'}\n"
                         "      http: {endpoint: '127.0.0.1:0'}\n"))
    assert cfg.protocols.grpc.endpoint == "127.0.0.1:0"


def test_http_server_limits_default_to_the_collectors_confighttp() -> None:
    http = HTTPConfig()
    # confighttp.NewDefaultServerConfig: no read timeout, 1m header, 30s write, 1m idle
    assert (http.read_timeout, http.read_header_timeout, http.write_timeout, http.idle_timeout) == (0, 60, 30, 60)
    assert http.max_connections == 0  # automatic: a share of the open-file limit
    cfg = otlp(load("  otlp:\n    protocols:\n      http:\n        read_timeout: 30s\n"
                    "        read_header_timeout: 5s\n        write_timeout: 1m\n        idle_timeout: 90s\n"
                    "        max_connections: 500\n"))
    http = cfg.protocols.http
    assert (http.read_timeout, http.read_header_timeout, http.write_timeout, http.idle_timeout) == (30, 5, 60, 90)
    assert http.max_connections == 500


@pytest.mark.parametrize("line,path,words", [
    ("http: {max_connections: -1}", "receivers.otlp.protocols.http.max_connections", "automatic"),
    ("http: {read_header_timeout: 5}", "receivers.otlp.protocols.http.read_header_timeout", "unit"),
    ("http: {idle_timout: 5s}", "receivers.otlp.protocols.http.idle_timout", "did you mean 'idle_timeout'"),
])
def test_bad_http_server_limits_are_rejected_with_their_path(line: str, path: str, words: str) -> None:
    issues = errors(f"  otlp:\n    protocols:\n      {line}\n")
    assert path in [i.path for i in issues], issues
    assert words in next(i.message for i in issues if i.path == path)
