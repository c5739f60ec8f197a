"""The `otlp` receiver's configuration: the Collector's `otlpreceiver` shape.

As in the Collector, a protocol is enabled by the presence of its key under
`protocols:` (`grpc:` with no value enables gRPC with its defaults); with no
`protocols` key at all both transports run with their defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.auth import AuthConfig
from pipeline.component import Listener
from pipeline.config.types import ByteSize, Duration, Issue
from pipeline.model import Signal
from pipeline.net.endpoint import Endpoint
from pipeline.net.server import (
    AUTO_MAX_CONNECTIONS_CEILING,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_READ_HEADER_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    ServerTimeouts,
)
from pipeline.net.tls import TLSServerConfig

# The Collector's confighttp default (`defaultMaxRequestBodySize = 20 * 1024 * 1024`).
DEFAULT_MAX_REQUEST_BODY_SIZE = ByteSize(20 * 1024 * 1024)
# grpc-go's (and so the Collector's) default receive limit.
DEFAULT_MAX_RECV_MSG_SIZE_MIB = 4
# Per connection; see GRPCConfig.max_concurrent_streams.
DEFAULT_MAX_CONCURRENT_STREAMS = 100
# The server pings a connection quiet for this long, and closes it if the ping is not answered in
# DEFAULT_KEEPALIVE_TIMEOUT (grpc-go's defaults are 2 h and 20 s: far too long to hold a stuck client).
DEFAULT_KEEPALIVE_TIME = Duration(30.0)
DEFAULT_KEEPALIVE_TIMEOUT = Duration(20.0)
# grpc core keeps message sizes in a signed 32-bit int.
_MAX_RECV_MSG_SIZE_MIB_LIMIT = 2047


def _listen(text: str) -> Endpoint:
    return Endpoint.listen(text)


def _as_endpoint(cfg: GRPCConfig | HTTPConfig) -> None:
    """Configs built in code (tests, defaults) may pass the endpoint as text; the decoder passes an Endpoint."""
    value = cfg.endpoint
    if isinstance(value, str):
        object.__setattr__(cfg, "endpoint", Endpoint.listen(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerParametersConfig:
    """`keepalive.server_parameters` (the Collector's configgrpc keys).

    The server pings a connection that has been quiet for `time`; one that does not answer within
    `timeout` is closed, with every call it holds (a client that stopped reading its socket does
    not answer). `max_connection_idle`/`max_connection_age` close idle / old connections (0: never).
    """

    time: Duration = DEFAULT_KEEPALIVE_TIME
    timeout: Duration = DEFAULT_KEEPALIVE_TIMEOUT
    max_connection_idle: Duration = Duration(0.0)
    max_connection_age: Duration = Duration(0.0)
    max_connection_age_grace: Duration = Duration(0.0)

    def validate(self) -> list[Issue]:
        return [Issue(k, "must not be negative") for k in ("time", "timeout", "max_connection_idle",
                                                          "max_connection_age", "max_connection_age_grace")
                if getattr(self, k) < 0]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnforcementPolicyConfig:
    """`keepalive.enforcement_policy`: how often a client may ping (grpc-go's defaults: 5m, no pings when idle)."""

    min_time: Duration = Duration(300.0)
    permit_without_stream: bool = False

    def validate(self) -> list[Issue]:
        return [Issue("min_time", "must not be negative")] if self.min_time < 0 else []


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepaliveConfig:
    server_parameters: ServerParametersConfig = field(default_factory=lambda: ServerParametersConfig())
    enforcement_policy: EnforcementPolicyConfig = field(default_factory=lambda: EnforcementPolicyConfig())

    def grpc_options(self) -> list[tuple[str, int]]:
        sp, ep = self.server_parameters, self.enforcement_policy
        # grpc core waits for a keepalive ping's ack for `ping_timeout_ms`, not `keepalive_timeout_ms`: set both.
        ms = [("grpc.keepalive_time_ms", sp.time), ("grpc.keepalive_timeout_ms", sp.timeout),
              ("grpc.http2.ping_timeout_ms", sp.timeout),
              ("grpc.max_connection_idle_ms", sp.max_connection_idle),
              ("grpc.max_connection_age_ms", sp.max_connection_age),
              ("grpc.max_connection_age_grace_ms", sp.max_connection_age_grace),
              ("grpc.http2.min_ping_interval_without_data_ms", ep.min_time)]
        opts = [(name, int(value * 1000)) for name, value in ms if value > 0]
        # grpc core stops pinging after 2 pings with no data frame in between, so a stuck connection
        # (no data either way) would never be found out: ping as long as it takes.
        opts.append(("grpc.http2.max_pings_without_data", 0))
        if ep.permit_without_stream:
            opts.append(("grpc.keepalive_permit_without_calls", 1))
        return opts


@dataclass(frozen=True, slots=True, kw_only=True)
class GRPCConfig:
    """`protocols.grpc`: where OTLP/gRPC listens and how large a message may be."""

    endpoint: Endpoint = field(default_factory=lambda: _listen("localhost:4317"))
    # Beyond this (after decompression) grpc answers RESOURCE_EXHAUSTED before any Python runs.
    max_recv_msg_size_mib: int = DEFAULT_MAX_RECV_MSG_SIZE_MIB
    # Concurrent calls one connection may hold open (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). grpc's
    # own default is unlimited, which lets one client that never reads its answers hold thousands of
    # calls and their messages in memory; past the limit that client waits, nobody else does.
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    # Copy the client's gRPC metadata into Payload.headers (the Collector's include_metadata).
    include_metadata: bool = False
    # TLS (and mTLS with client_ca_file); absent: plain text.
    tls: TLSServerConfig | None = None
    # `authenticator`: an extension that checks every call's metadata (e.g. bearertokenauth).
    auth: AuthConfig | None = None
    keepalive: KeepaliveConfig = field(default_factory=lambda: KeepaliveConfig())

    def __post_init__(self) -> None:
        _as_endpoint(self)

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not 1 <= self.max_recv_msg_size_mib <= _MAX_RECV_MSG_SIZE_MIB_LIMIT:
            out.append(Issue("max_recv_msg_size_mib", (f"must be between 1 and {_MAX_RECV_MSG_SIZE_MIB_LIMIT} (MiB), "
                                                   f"got {self.max_recv_msg_size_mib}; the default is "
                                                   f"{DEFAULT_MAX_RECV_MSG_SIZE_MIB}")))
        if self.max_concurrent_streams < 0:
            out.append(Issue("max_concurrent_streams", "must be a positive number, or 0 for no limit (grpc's default)"))
        if self.tls is not None:
            # grpc core negotiates TLS 1.2 or 1.3 and offers no setting for it.
            if self.tls.min_version not in ("", "1.2"):
                out.append(Issue("tls.min_version", "the gRPC listener always accepts TLS 1.2 and 1.3: "
                                                    "leave min_version at 1.2"))
            if self.tls.max_version not in ("", "1.3"):
                out.append(Issue("tls.max_version", "the gRPC listener always accepts TLS 1.2 and 1.3: "
                                                    "leave max_version unset"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class CORSConfig:
    """`protocols.http.cors`: browser access to OTLP/HTTP (the Collector's confighttp CORSConfig).

    Origins may hold `*` wildcards (`https://*.example.com`, or `*` for any).
    Accept, Accept-Language, Content-Type and Content-Language are always
    allowed request headers; with no `allowed_headers`, X-Requested-With is too.
    """

    allowed_origins: tuple[str, ...] = ()
    allowed_headers: tuple[str, ...] = ()
    max_age: int = 0

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.max_age < 0:
            out.append(Issue("max_age", "must be 0 (no Access-Control-Max-Age header) or a number of seconds"))
        for i, origin in enumerate(self.allowed_origins):
            if not origin.strip():
                out.append(Issue(f"allowed_origins[{i}]", "must not be empty"))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPConfig:
    """`protocols.http`: where OTLP/HTTP listens, its URL paths, its request size limit and connection limits.

    The timeouts are the Collector's confighttp ones, with its defaults and Go's
    fallbacks (a zero `read_header_timeout` or `idle_timeout` takes `read_timeout`;
    0 everywhere means no timeout). `max_connections` has no Collector
    equivalent: 0 picks a quarter of the process's open-file limit (at most
    4096), so idle sockets can never starve the other listeners of descriptors.
    """

    endpoint: Endpoint = field(default_factory=lambda: _listen("localhost:4318"))
    # Enforced on the body as sent AND after decompression (a gzip bomb is refused with 413).
    max_request_body_size: ByteSize = DEFAULT_MAX_REQUEST_BODY_SIZE
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"
    cors: CORSConfig | None = None
    # Copy the request's HTTP headers into Payload.headers (the Collector's include_metadata).
    include_metadata: bool = False
    # Whole body, once the header is read; slower is answered 408 (0: no limit, the Collector's default).
    read_timeout: Duration = DEFAULT_READ_TIMEOUT
    # A connection whose first request header is not complete by then is closed.
    read_header_timeout: Duration = DEFAULT_READ_HEADER_TIMEOUT
    # A response that cannot be written by then (a client that stopped reading) closes the connection.
    write_timeout: Duration = DEFAULT_WRITE_TIMEOUT
    # A keep-alive connection with no complete next request by then is closed.
    idle_timeout: Duration = DEFAULT_IDLE_TIMEOUT
    # Concurrent connections; past it new ones are closed at once. 0: automatic (see above).
    max_connections: int = 0
    # TLS (and mTLS with client_ca_file); absent: plain text.
    tls: TLSServerConfig | None = None
    # `authenticator`: an extension that checks every request's headers (e.g. bearertokenauth).
    auth: AuthConfig | None = None

    def __post_init__(self) -> None:
        _as_endpoint(self)

    def url_paths(self) -> dict[Signal, str]:
        return {Signal.TRACES: self.traces_url_path, Signal.METRICS: self.metrics_url_path,
                Signal.LOGS: self.logs_url_path}

    def timeouts(self) -> ServerTimeouts:
        return ServerTimeouts(read_timeout=self.read_timeout, read_header_timeout=self.read_header_timeout,
                              write_timeout=self.write_timeout, idle_timeout=self.idle_timeout)

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.max_request_body_size <= 0:
            out.append(Issue("max_request_body_size", "must be greater than 0, e.g. '20MiB' (the default)"))
        out.extend(self.timeouts().validate())
        if self.max_connections < 0:
            out.append(Issue("max_connections", (f"must be 0 (automatic: a quarter of the open-file limit, at most "
                                            f"{AUTO_MAX_CONNECTIONS_CEILING}) or a positive number")))
        seen: dict[str, str] = {}
        for signal, path in self.url_paths().items():
            key = f"{signal.value}_url_path"
            if not path.startswith("/"):
                out.append(Issue(key, f"must start with '/', e.g. '/{path}'"))
            elif path in seen:
                out.append(Issue(key, f"{path!r} is already used by {seen[path]}"))
            else:
                seen[path] = key
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolsConfig:
    """`protocols`: a transport is enabled when its key is present, as in the Collector.

    The fields are declared with their config type rather than `X | None` on
    purpose: the strict decoder turns a YAML null (`grpc:` with no value) into
    the block's defaults only for a non-Optional dataclass type, while an absent
    key keeps the field's default, None, which means "not enabled".
    """

    grpc: GRPCConfig = None  # type: ignore[assignment]
    http: HTTPConfig = None  # type: ignore[assignment]

    def validate(self) -> list[Issue]:
        if self.grpc is None and self.http is None:
            return [Issue("", "must specify at least one protocol when using the OTLP receiver: "
                              "add 'grpc:' and/or 'http:'")]
        return []


def _both_protocols() -> ProtocolsConfig:
    return ProtocolsConfig(grpc=GRPCConfig(), http=HTTPConfig())


@dataclass(frozen=True, slots=True, kw_only=True)
class OTLPReceiverConfig:
    """The `otlp` receiver. With no `protocols` key both transports run with their defaults."""

    protocols: ProtocolsConfig = field(default_factory=_both_protocols)

    def listeners(self) -> list[Listener]:
        out = []
        if self.protocols.grpc is not None:
            out.append(Listener("tcp", self.protocols.grpc.endpoint, "protocols.grpc.endpoint"))
        if self.protocols.http is not None:
            out.append(Listener("tcp", self.protocols.http.endpoint, "protocols.http.endpoint"))
        return out


