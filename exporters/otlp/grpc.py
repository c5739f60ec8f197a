"""OTLP/gRPC exporter: forwards every signal to another Collector or an OTLP backend.

The payload's wire bytes go out as they came in: the call is made with no
request serializer, so an untouched request is never re-encoded (the
`Payload` keeps the bytes it was decoded from). Failures are classified the
way the OTLP specification says (`docs/specification.md`, "Failures"): a
fixed set of gRPC codes is retryable, RESOURCE_EXHAUSTED only when the server
sends `google.rpc.RetryInfo` (whose delay becomes the next wait), everything
else is permanent. A response with `partial_success` rejecting items is never
retried. Queueing, retrying and timing out are the exporter helper's job.

The endpoint is parsed by `pipeline.net.endpoint.Endpoint.dial` (it refuses user info, a query and a
fragment, so the target can be logged as is), the `tls:` block is `pipeline.net.tls.TLSClientConfig`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from exporters.otlp.common import check_partial_success
from pipeline.auth import AuthConfig, ClientAuthenticator, client_authenticator
from pipeline.component import ExporterFactory, Host, Settings, Stability
from pipeline.config.types import Issue, Secret
from pipeline.errors import PermanentError, RetryableError
from pipeline.exporterhelper import ExporterConfig
from pipeline.logutil import RateLimitedLog
from pipeline.model import ExportResponse, Payload, Signal
from pipeline.net.endpoint import Endpoint
from pipeline.net.tls import TLSClientConfig
from pipeline.net.useragent import USER_AGENT
from pipeline.redact import redact_text

METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}

# OTLP spec, "Failures": these codes mean "try again later".
RETRYABLE_CODES = frozenset({
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
})

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_METADATA_KEY_RE = re.compile(r"^[0-9a-z_.\-]+$")
_RESERVED_KEYS = frozenset({"te", "content-type", "user-agent", "grpc-timeout", "grpc-encoding"})

# Trailing metadata as grpc hands it over: (key, value) pairs, `-bin` values as bytes.
Trailing = Iterable[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class OTLPExporterConfig(ExporterConfig):
    """`exporters.otlp`: the Collector's otlpexporter settings that matter here."""

    endpoint: str = ""
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)
    headers: dict[str, Secret] = field(default_factory=dict)
    compression: Literal["gzip", "none"] = "gzip"
    balancer_name: Literal["pick_first", "round_robin"] | None = None
    # `authenticator`: an extension whose headers go with every call as metadata (e.g. bearertokenauth).
    auth: AuthConfig | None = None

    def validate(self) -> list[Issue]:
        out = ExporterConfig.validate(self)
        if not self.endpoint:
            out.append(Issue("endpoint", ("is required: the backend's gRPC address, e.g. 'tempo:4317' "
                                     "(or 'http://host:4317' for plain text)")))
        else:
            try:
                grpc_target(self.endpoint, self.tls)
            except ValueError as e:
                out.append(Issue("endpoint", str(e)))
        for key, value in self.headers.items():
            out.extend(metadata_issues(key, value))
        if self.tls.insecure_skip_verify:
            out.append(Issue("tls.insecure_skip_verify", ("is not supported by the gRPC exporter; set tls.ca_file "
                                                     "to the CA that signed the server's certificate")))
        return out


def metadata_issues(key: str, value: Secret) -> list[Issue]:
    """Problems with one `headers` entry as gRPC metadata (lowercase ASCII keys, printable values)."""
    lk = key.lower()
    path = f"headers.{key}"
    if not _METADATA_KEY_RE.match(lk):
        return [Issue(path, "a gRPC metadata key may only hold letters, digits, '-', '_' and '.'")]
    if lk.startswith("grpc-") or lk in _RESERVED_KEYS:
        return [Issue(path, f"'{lk}' is set by gRPC itself and cannot be configured")]
    if lk.endswith("-bin"):
        return [Issue(path, "binary ('-bin') metadata is not supported; use a text header")]
    if not all(0x20 <= ord(c) < 0x7F for c in value.reveal()):
        return [Issue(path, "the value must be printable ASCII")]
    return []


def grpc_target(endpoint: str, tls: TLSClientConfig) -> tuple[str, bool]:
    """`(host:port, insecure)` for an endpoint; `http://`/`https://` choose plain text/TLS as in the Collector."""
    target = Endpoint.dial(endpoint)
    return target.address, target.plaintext(tls.insecure)


def retry_delay(trailing: Trailing | None) -> float | None:
    """The `google.rpc.RetryInfo` delay (seconds) carried in a status's details, if any."""
    if not trailing:
        return None
    for key, value in trailing:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay: float = max(info.retry_delay.seconds + info.retry_delay.nanos / 1e9, 0.0)
                return delay
    return None


def classify(code: grpc.StatusCode, details: str, trailing: Trailing | None) -> Exception:
    """The pipeline error for a failed call, per the OTLP spec's retry rules."""
    delay = retry_delay(trailing)
    details = redact_text(details)  # a backend or proxy may quote a URL with its credentials
    message = f"{code.name}: {details}" if details else code.name
    if code in RETRYABLE_CODES:
        return RetryableError(message, delay)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None:
        return RetryableError(message, delay)
    return PermanentError(message)


class OTLPExporter:
    """One gRPC channel to the backend, opened in start() and closed in shutdown()."""

    def __init__(self, settings: Settings, cfg: OTLPExporterConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._target, self._insecure = grpc_target(cfg.endpoint, cfg.tls)
        self._metadata = tuple((k.lower(), v.reveal()) for k, v in cfg.headers.items())
        self._compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[Signal, grpc.aio.UnaryUnaryMultiCallable[bytes, ExportResponse]] = {}
        self._log = RateLimitedLog(settings.logger)
        self._authenticator: ClientAuthenticator | None = None

    def _options(self) -> list[tuple[str, object]]:
        opts: list[tuple[str, object]] = [("grpc.primary_user_agent", USER_AGENT)]
        if self.cfg.balancer_name:
            opts.append(("grpc.lb_policy_name", self.cfg.balancer_name))
        if not self._insecure and self.cfg.tls.server_name_override:
            opts.append(("grpc.ssl_target_name_override", self.cfg.tls.server_name_override))
        return opts

    async def start(self, host: Host) -> None:
        if self._channel is not None:
            return
        self._authenticator = client_authenticator(host, self.cfg.auth)
        if self._insecure:
            channel = grpc.aio.insecure_channel(self._target, options=self._options(), compression=self._compression)
        else:
            tls = self.cfg.tls
            creds = grpc.ssl_channel_credentials(
                root_certificates=tls.read("ca_file"),
                private_key=tls.read("key_file"),
                certificate_chain=tls.read("cert_file"),
            )
            channel = grpc.aio.secure_channel(self._target, creds, options=self._options(),
                                              compression=self._compression)
        self._channel = channel
        # request_serializer=None: the request is already wire bytes and is sent as is.
        self._calls = {
            sig: channel.unary_unary(METHODS[sig], request_serializer=None,
                                     response_deserializer=sig.response_type.FromString)
            for sig in Signal
        }
        self.settings.logger.info("OTLP/gRPC exporter started",
                                  extra={"endpoint": self._target, "tls": not self._insecure,
                                         "compression": self.cfg.compression})

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        if self._authenticator is None:
            return self._metadata
        return (*self._metadata, *((k.lower(), v) for k, v in self._authenticator.headers().items()))

    async def push(self, payload: Payload) -> None:
        call = self._calls.get(payload.signal)
        if call is None:
            raise RetryableError(f"exporter {self.settings.id} is not started")
        try:
            # No deadline here: the exporter helper bounds every push by `timeout` (asyncio.timeout),
            # and cancelling the call cancels the RPC.
            response = await call(payload.serialize(), metadata=self._call_metadata())
        except grpc.aio.AioRpcError as e:
            # grpc-stubs type the trailing metadata as `_Metadatum` objects; at run time it is (key, value) pairs.
            raise classify(e.code(), e.details() or "", cast(Trailing, e.trailing_metadata())) from None
        check_partial_success(payload.signal, response, self._log)

    async def shutdown(self) -> None:
        channel, self._channel = self._channel, None
        self._calls = {}
        if channel is not None:
            await channel.close(grace=None)
            self.settings.logger.info("OTLP/gRPC exporter stopped", extra={"endpoint": self._target})


def create(settings: Settings, cfg: OTLPExporterConfig) -> OTLPExporter:
    return OTLPExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="otlp",
    config_type=OTLPExporterConfig,
    signals={Signal.TRACES: Stability.STABLE, Signal.METRICS: Stability.STABLE, Signal.LOGS: Stability.STABLE},
    create=create,
    description="Sends traces, metrics and logs over OTLP/gRPC, forwarding untouched requests byte for byte.",
)
