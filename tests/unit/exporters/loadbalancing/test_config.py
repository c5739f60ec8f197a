"""`exporters.loadbalancing` config: the Collector's keys, every mistake reported with its key path."""
from __future__ import annotations

import dataclasses

import pytest

from exporters.loadbalancing.config import LoadBalancingConfig
from exporters.otlp.grpc import OTLPExporterConfig
from otelpipe import components
from pipeline.config.loader import load_text
from pipeline.errors import ConfigError
from pipeline.model import Signal


def issues(exporter: str) -> list[str]:
    yaml = f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}}}
exporters:
  loadbalancing:
{exporter}
service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [loadbalancing]}}}}}}
"""
    try:
        load_text(yaml, components.factories(), env={})
    except ConfigError as e:
        return [str(i) for i in e.issues if not i.warning]
    return []


def load(exporter: str) -> LoadBalancingConfig:
    yaml = f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}}}
exporters:
  loadbalancing:
{exporter}
service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [loadbalancing]}}}}}}
"""
    cfg = load_text(yaml, components.factories(), env={})
    lb = next(iter(cfg.exporters.values()))
    assert isinstance(lb, LoadBalancingConfig)
    return lb


def test_the_collectors_example_loads() -> None:
    cfg = load("""
    routing_key: service
    protocol:
      otlp:
        timeout: 1s
        tls: {insecure: true}
    resolver:
      static:
        hostnames: [backend-1:4317, backend-2:4317, backend-3]
""")
    assert cfg.routing_key == "service"
    assert cfg.resolver.static is not None and cfg.resolver.static.endpoints() == [
        "backend-1:4317", "backend-2:4317", "backend-3:4317"]
    assert cfg.protocol.otlp.timeout == 1.0 and cfg.protocol.otlp.tls.insecure
    dns = load("""
    resolver: {dns: {hostname: gw-headless.obs.svc.cluster.local, port: 5317, interval: 2s, timeout: 500ms}}
""").resolver.dns
    assert dns is not None and (dns.port, dns.interval, dns.timeout) == (5317, 2.0, 0.5)


def test_a_resolver_is_required_and_only_one() -> None:
    assert issues("    routing_key: traceID") == ["<config>: error: exporters.loadbalancing.resolver: is required: "
                                                   "set resolver.static.hostnames or resolver.dns.hostname"]
    both = issues("    resolver: {static: {hostnames: [a:1]}, dns: {hostname: b}}")
    assert both == ["<config>: error: exporters.loadbalancing.resolver: set only one of static and dns"]


@pytest.mark.parametrize(("block", "problem"), [
    ("resolver: {static: {hostnames: []}}", "resolver.static.hostnames: is required"),
    ("resolver: {static: {hostnames: [a:1, 'a:1']}}", "resolver.static.hostnames[1]: 'a:1' is listed twice"),
    ("resolver: {static: {hostnames: ['http://a:1']}}", "resolver.static.hostnames[0]: write host:port"),
    ("resolver: {static: {hostnames: ['u:p@a:1']}}", "resolver.static.hostnames[0]: a gRPC endpoint cannot carry"),
    ("resolver: {static: {hostnams: [a]}}", "resolver.static.hostnams: unknown key 'hostnams'; did you mean "
                                            "'hostnames'?"),
    ("resolver: {dns: {port: 4317}}", "resolver.dns.hostname: is required"),
    ("resolver: {dns: {hostname: 'gw:4317'}}", "resolver.dns.hostname: must be a host name or an IP address"),
    ("resolver: {dns: {hostname: gw, port: 0}}", "resolver.dns.port: must be 1-65535"),
    ("resolver: {dns: {hostname: gw, interval: 0s}}", "resolver.dns.interval: must be greater than 0"),
    ("resolver: {dns: {hostname: gw}}\n    routing_key: traceid", "routing_key: invalid value"),
    ("resolver: {dns: {hostname: gw}}\n    protocol: {otlp: {sending_queue: {enabled: false}}}",
     "protocol.otlp.sending_queue.enabled: must be true"),
    ("resolver: {dns: {hostname: gw}}\n    protocol: {otlp: {sending_queue: {storage: /var/lib/otelpipe}}}",
     "protocol.otlp.sending_queue.storage: is not supported per backend"),
    ("resolver: {dns: {hostname: gw}}\n    protocol: {otlp: {compression: zstd}}",
     "protocol.otlp.compression: invalid value 'zstd'"),
    ("resolver: {dns: {hostname: gw}}\n    protocol: {otlp: {headers: {grpc-timeout: x}}}",
     "protocol.otlp.headers.grpc-timeout: 'grpc-timeout' is set by gRPC itself"),
])
def test_mistakes_are_reported_at_their_key(block: str, problem: str) -> None:
    found = issues(f"    {block}")
    assert any(f"exporters.loadbalancing.{problem}" in i for i in found), found


def test_an_endpoint_under_protocol_otlp_is_ignored_with_a_warning() -> None:
    yaml = """
receivers: {otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}}
exporters:
  loadbalancing: {resolver: {static: {hostnames: [a]}}, protocol: {otlp: {endpoint: other:4317}}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [loadbalancing]}}}
"""
    cfg = load_text(yaml, components.factories(), env={})
    assert any("protocol.otlp.endpoint: is ignored" in str(w) for w in cfg.warnings)


def test_the_routing_key_per_signal_follows_the_collector() -> None:
    cfg = LoadBalancingConfig()
    assert [cfg.key_for(s) for s in Signal] == ["traceID", "service", "service"]
    with pytest.raises(ValueError, match="routing_key 'traceID' cannot route metrics"):
        LoadBalancingConfig(routing_key="traceID").key_for(Signal.METRICS)
    with pytest.raises(ValueError, match="for traces use one of: traceID, service"):
        LoadBalancingConfig(routing_key="metric").key_for(Signal.TRACES)


def test_each_backend_gets_every_setting_of_protocol_otlp_with_its_own_endpoint() -> None:
    cfg = load("""
    resolver: {static: {hostnames: [a]}}
    protocol:
      otlp:
        tls: {insecure: true}
        headers: {x-tenant: agents}
        compression: none
        balancer_name: round_robin
        timeout: 3s
        sending_queue: {queue_size: 7, num_consumers: 2}
        retry_on_failure: {initial_interval: 2s}
""")
    backend = cfg.protocol.otlp.for_backend("10.0.0.7:4317")
    assert type(backend) is OTLPExporterConfig and backend.endpoint == "10.0.0.7:4317"
    assert backend.validate() == []
    same = {f.name for f in dataclasses.fields(OTLPExporterConfig)} - {"endpoint"}
    assert all(getattr(backend, k) == getattr(cfg.protocol.otlp, k) for k in same)
    assert (backend.sending_queue.queue_size, backend.retry_on_failure.initial_interval) == (7, 2.0)
