"""`exporters.loadbalancing`: the Collector's loadbalancingexporter keys.

```yaml
loadbalancing:
  routing_key: traceID            # traceID | service | resource | metric ("" = per signal, as the Collector)
  resolver:
    dns: {hostname: otelpipe-gateway-headless.observability.svc.cluster.local, port: 4317, interval: 5s}
    # or static: {hostnames: [gateway-0:4317, gateway-1:4317]}
  protocol:
    otlp:                          # the `otlp` exporter's settings, used for every backend (not `endpoint`)
      tls: {insecure: true}
      sending_queue: {queue_size: 1000}
      retry_on_failure: {initial_interval: 1s}
```

The top-level `timeout`, `sending_queue` and `retry_on_failure` are the load balancer's own, with
every exporter's defaults (the Collector turns them off by default): a request waits in the
load balancer's queue until every backend it is cut for has room in its own queue, and is
retried until then, so a full backend pushes back on the senders instead of failing a send.
The blocks under `protocol.otlp` are each backend's: its queue holds its share while it is slow
or down, and its retries resend that share.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from exporters.otlp.grpc import OTLPExporterConfig
from pipeline.config.types import Duration, Issue
from pipeline.exporterhelper import ExporterConfig
from pipeline.model import Signal
from pipeline.net.endpoint import Endpoint, format_host_port

DEFAULT_PORT = 4317
DEFAULT_INTERVAL = Duration(5.0)
DEFAULT_TIMEOUT = Duration(1.0)

RoutingKey = Literal["", "traceID", "service", "resource", "metric"]
#: What each routing key can route (the Collector's table); "" picks the first for the signal.
SUPPORTED: dict[str, frozenset[Signal]] = {
    "traceID": frozenset({Signal.TRACES, Signal.LOGS}),
    "service": frozenset(Signal),
    "resource": frozenset({Signal.METRICS, Signal.LOGS}),
    "metric": frozenset({Signal.METRICS}),
}
#: The Collector's defaults when `routing_key` is not set.
DEFAULT_KEY = {Signal.TRACES: "traceID", Signal.METRICS: "service", Signal.LOGS: "service"}


def with_default_port(hostname: str) -> str:
    """`host` → `host:4317`; `host:port` and `[v6]:port` stay (the Collector's endpointWithPort)."""
    text = hostname.strip()
    if text.startswith("["):
        return text if "]:" in text else f"{text}:{DEFAULT_PORT}"
    if text.count(":") > 1:  # a bare IPv6 address
        return format_host_port(text, DEFAULT_PORT)
    return text if ":" in text else f"{text}:{DEFAULT_PORT}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticResolverConfig:
    """`resolver.static`: a fixed list of backends (`host[:port]`, port 4317 when left out)."""

    hostnames: tuple[str, ...] = ()

    def validate(self) -> list[Issue]:
        if not self.hostnames:
            return [Issue("hostnames", "is required: list the backends, e.g. [gateway-0:4317, gateway-1:4317]")]
        out: list[Issue] = []
        seen: dict[str, int] = {}
        for i, name in enumerate(self.hostnames):
            if "://" in name:
                out.append(Issue(f"hostnames[{i}]", "write host:port, without a scheme: plain text or TLS is set "
                                                    "by protocol.otlp.tls.insecure"))
                continue
            try:
                ep = Endpoint.dial(with_default_port(name))
            except ValueError as e:
                out.append(Issue(f"hostnames[{i}]", str(e)))
                continue
            if ep.address in seen:
                out.append(Issue(f"hostnames[{i}]",
                                 f"'{ep.address}' is listed twice (also hostnames[{seen[ep.address]}])"))
            else:
                seen[ep.address] = i
        return out

    def endpoints(self) -> list[str]:
        """The backends as `host:port`, sorted (the order in the config does not matter)."""
        return sorted({Endpoint.dial(with_default_port(h)).address for h in self.hostnames})


@dataclass(frozen=True, slots=True, kw_only=True)
class DNSResolverConfig:
    """`resolver.dns`: every address a name resolves to (a headless Service) is a backend on `port`."""

    hostname: str = ""
    port: int = DEFAULT_PORT
    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = DEFAULT_TIMEOUT

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not self.hostname:
            out.append(Issue("hostname", "is required: the name to resolve, e.g. the headless Service "
                                         "'otelpipe-gateway-headless.observability.svc.cluster.local'"))
        else:
            try:
                Endpoint.dial(format_host_port(self.hostname, DEFAULT_PORT))
            except ValueError:
                out.append(Issue("hostname", "must be a host name or an IP address, without a port or scheme "
                                             "(the port goes under 'port')"))
        if not 1 <= self.port <= 65535:
            out.append(Issue("port", "must be 1-65535"))
        if self.interval <= 0:
            out.append(Issue("interval", "must be greater than 0, e.g. 5s"))
        if self.timeout <= 0:
            out.append(Issue("timeout", "must be greater than 0, e.g. 1s"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverConfig:
    """`resolver`: exactly one of `static` or `dns`."""

    static: StaticResolverConfig | None = None
    dns: DNSResolverConfig | None = None

    def validate(self) -> list[Issue]:
        # Neither is reported by LoadBalancingConfig, which also sees a `resolver` key left out.
        if self.static is not None and self.dns is not None:
            return [Issue("", "set only one of static and dns")]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendOTLPConfig(OTLPExporterConfig):
    """`protocol.otlp`: the `otlp` exporter's settings for every backend; the resolver supplies `endpoint`."""

    def validate(self) -> list[Issue]:
        probe = dataclasses.replace(self, endpoint="backend:4317")  # every check but the endpoint's
        out = [i for i in OTLPExporterConfig.validate(probe) if i.key != "endpoint"]
        if self.endpoint:
            out.append(Issue("endpoint", "is ignored: each backend's endpoint comes from the resolver", warning=True))
        if not self.sending_queue.enabled:
            out.append(Issue("sending_queue.enabled", "must be true: each backend's queue is what holds its share "
                                                     "while it is slow or down, without holding up the others"))
        if self.sending_queue.storage is not None:
            out.append(Issue("sending_queue.storage", "is not supported per backend (backends come and go with their "
                                                     "addresses); set it on the load balancer's own sending_queue"))
        return out

    def for_backend(self, endpoint: str) -> OTLPExporterConfig:
        """The `otlp` exporter config of one backend: every setting of this block, with `endpoint`."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(OTLPExporterConfig)}
        return OTLPExporterConfig(**{**settings, "endpoint": endpoint})


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolConfig:
    otlp: BackendOTLPConfig = field(default_factory=BackendOTLPConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadBalancingConfig(ExporterConfig):
    """`exporters.loadbalancing`."""

    routing_key: RoutingKey = ""
    resolver: ResolverConfig = field(default_factory=ResolverConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)

    def validate(self) -> list[Issue]:
        out = ExporterConfig.validate(self)
        if self.resolver.static is None and self.resolver.dns is None:
            out.append(Issue("resolver", "is required: set resolver.static.hostnames or resolver.dns.hostname"))
        return out

    def key_for(self, signal: Signal) -> str:
        """The routing key in force for `signal`; ValueError when the configured one cannot route it."""
        key = self.routing_key or DEFAULT_KEY[signal]
        if signal not in SUPPORTED[key]:
            can = ", ".join(k for k, sigs in SUPPORTED.items() if signal in sigs)
            raise ValueError(f"routing_key '{key}' cannot route {signal.value} (for {signal.value} use one of: {can})")
        return key
