"""The `otlp` receiver's configuration: the Collector's `otlpreceiver` shape.

As in the Collector, a protocol is enabled by the presence of its key under
`protocols:` (`grpc:` with no value enables gRPC with its defaults); with no
`protocols` key at all both transports run with their defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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

# The Collector's confighttp default (`defaultMaxRequestBodySize = 20 * 1024 * 1024`).
DEFAULT_MAX_REQUEST_BODY_SIZE = ByteSize(20 * 1024 * 1024)
# grpc-go's (and so the Collector's) default receive limit.
DEFAULT_MAX_RECV_MSG_SIZE_MIB = 4
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
class GRPCConfig:
    """`protocols.grpc`: where OTLP/gRPC listens and how large a message may be."""

    endpoint: Endpoint = field(default_factory=lambda: _listen("localhost:4317"))
    # Beyond this (after decompression) grpc answers RESOURCE_EXHAUSTED before any Python runs.
    max_recv_msg_size_mib: int = DEFAULT_MAX_RECV_MSG_SIZE_MIB
    # 0 keeps grpc's default (no explicit limit on concurrent streams per connection).
    max_concurrent_streams: int = 0
    # Copy the client's gRPC metadata into Payload.headers (the Collector's include_metadata).
    include_metadata: bool = False

    def __post_init__(self) -> None:
        _as_endpoint(self)

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not 1 <= self.max_recv_msg_size_mib <= _MAX_RECV_MSG_SIZE_MIB_LIMIT:
            out.append(Issue("max_recv_msg_size_mib", (f"must be between 1 and {_MAX_RECV_MSG_SIZE_MIB_LIMIT} (MiB), "
                                                   f"got {self.max_recv_msg_size_mib}; the default is "
                                                   f"{DEFAULT_MAX_RECV_MSG_SIZE_MIB}")))
        if self.max_concurrent_streams < 0:
            out.append(Issue("max_concurrent_streams", "must be 0 (grpc's default) or a positive number"))
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


