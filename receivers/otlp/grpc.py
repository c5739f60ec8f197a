"""OTLP/gRPC transport: the TraceService, MetricsService and LogsService `Export` methods.

The methods are registered with no request deserializer, so each call hands us
the raw message bytes: we decode them once with the request type's `FromString`
(malformed → INVALID_ARGUMENT) and keep those bytes on the Payload, so nothing
is re-encoded on the way to an exporter that sends protobuf. grpc core does the
rest in C: gzip decompression and the `max_recv_msg_size_mib` limit (checked on
the decompressed message; RESOURCE_EXHAUSTED before any Python runs).

So that those core refusals are counted too, `Export` is registered as a
stream-unary method: the handler starts before the message is read and reads
it itself (`context.read()`). A unary client cannot tell the difference, and a
read that yields no message means core ended the call: counted `too_large`
(the message was over the limit or could not be inflated; core gives no
reason, so a client that cancels before its message arrives counts the same),
or `timeout` when the client's deadline had passed. A client that really sent
no message (only a hand-made streaming call can) gets INVALID_ARGUMENT and
counts as `malformed`.
A signal with no consumer has no service registered, so grpc answers
UNIMPLEMENTED for it.

With `tls`, the listener serves TLS (mTLS with `client_ca_file`) through grpc's dynamic
credentials: each new handshake asks `CertificateReloader` whether the files changed, so a
rotated certificate is served without a restart and open connections are left alone. With
`auth`, every call's metadata goes to the authenticator extension before its message is
read; a refused call gets UNAUTHENTICATED and counts once as `unauthenticated`.
`max_concurrent_streams` (default 100) and the keepalive pings bound what one connection can
hold: a client that never reads its answers keeps at most that many calls open, and is
disconnected when it stops answering pings.

Pipeline outcomes map as the Collector's do: throttled → RESOURCE_EXHAUSTED,
unavailable → UNAVAILABLE, both with a google.rpc.RetryInfo; permanent →
INVALID_ARGUMENT. The RetryInfo travels in `grpc-status-details-bin` (a
google.rpc.Status, as grpc-go and the Collector send it) and also as
`google.rpc.retryinfo-bin`, which is where the OpenTelemetry Python SDK's
exporter looks for it.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import cast

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from pipeline import metricnames
from pipeline.auth import UNAUTHENTICATED, ServerAuthenticator
from pipeline.component import Consumer, Settings, acknowledges
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.net.tls import CertificateReloader
from pipeline.receiverhelper import Outcome, Result, ack_wait, deliver
from pipeline.telemetry import ReceiverObs
from receivers.otlp.config import GRPCConfig

SERVICE_NAMES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
# How long shutdown lets in-flight calls finish before grpc cancels them.
SHUTDOWN_GRACE = 5.0
# An empty Export*ServiceResponse (partial_success unset) is zero bytes on the wire.
_EMPTY_RESPONSE = b""

_STATUS_FOR_OUTCOME = {
    Outcome.THROTTLED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Outcome.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Outcome.PERMANENT: grpc.StatusCode.INVALID_ARGUMENT,
}

Metadata = tuple[tuple[str, str | bytes], ...]
ExportHandler = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]


def error_metadata(code: grpc.StatusCode, message: str, retry_after: float | None) -> Metadata:
    """Trailing metadata for an error: a google.rpc.Status (with RetryInfo when a delay is known)."""
    status = Status(code=code.value[0], message=message)
    if retry_after is None:
        return (("grpc-status-details-bin", status.SerializeToString()),)
    seconds = max(retry_after, 0.0)
    whole = int(seconds)
    info = RetryInfo(retry_delay=Duration(seconds=whole, nanos=round((seconds - whole) * 1e9)))
    detail = AnyProto()
    detail.Pack(info)
    status.details.append(detail)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class OTLPGRPCServer:
    """One grpc.aio server serving Export for every signal that has a consumer."""

    def __init__(self, settings: Settings, cfg: GRPCConfig, consumers: Mapping[Signal, Consumer],
                 authenticator: ServerAuthenticator | None = None) -> None:
        self.settings = settings
        self.cfg = cfg
        self.consumers = dict(consumers)
        self.obs: ReceiverObs = settings.telemetry.receiver(str(settings.id), "grpc")
        self.endpoint = ""
        self._receiver = str(settings.id)
        self._authenticator = authenticator
        self._log = RateLimitedLog(settings.logger)
        self._server: grpc.aio.Server | None = None

    def _options(self) -> list[tuple[str, int]]:
        opts = [
            ("grpc.max_receive_message_length", self.cfg.max_recv_msg_size_mib * 1024 * 1024),
            # Without this, grpc binds with SO_REUSEPORT and a port clash goes unnoticed.
            ("grpc.so_reuseport", 0),
        ]
        if self.cfg.max_concurrent_streams:
            opts.append(("grpc.max_concurrent_streams", self.cfg.max_concurrent_streams))
        opts.extend(self.cfg.keepalive.grpc_options())
        return opts

    def _credentials(self) -> grpc.ServerCredentials:
        """TLS credentials whose certificate follows its files (read at each new handshake when they changed)."""
        tls = self.cfg.tls
        assert tls is not None
        reloads = self.settings.telemetry.counter("receiver_tls_reloads")

        def load() -> grpc.ServerCertificateConfiguration:
            tls.ssl_context()  # raises when the key does not match the certificate (grpc would only fail handshakes)
            ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
            pair = (Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())
            return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

        reloader = CertificateReloader(tls, load, self.settings.logger,
                                       lambda result: reloads.labels(self._receiver, "grpc", result).inc(),
                                       self.settings.clock)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            return reloader.value if reloader.refresh() else None  # None: keep the current one (grpc's contract)

        fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], fetch)  # grpc-stubs omit the None
        return grpc.dynamic_ssl_server_credentials(reloader.value, fetcher,
                                                   require_client_authentication=bool(tls.client_ca_file))

    async def start(self) -> str:
        """Bind and serve; returns the locally reachable address actually bound (port 0 works)."""
        ep = self.cfg.endpoint
        server = grpc.aio.server(options=self._options())
        for signal, consumer in self.consumers.items():
            handler = grpc.stream_unary_rpc_method_handler(self._make_export(signal, consumer))
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(SERVICE_NAMES[signal], {"Export": handler}),))
        bind = ep.bind_address
        try:
            creds = self._credentials() if self.cfg.tls is not None else None
        except (OSError, ValueError) as e:
            await server.stop(None)
            raise OSError(f"cannot load the TLS certificate for OTLP/gRPC: {e}") from e
        try:
            bound = server.add_insecure_port(bind) if creds is None else server.add_secure_port(bind, creds)
        except RuntimeError as e:
            await server.stop(None)
            raise OSError(f"cannot listen for OTLP/gRPC on {bind}: {e}") from e
        if not bound:  # older grpc versions report a failed bind as port 0
            await server.stop(None)
            raise OSError(f"cannot listen for OTLP/gRPC on {bind}")
        await server.start()
        self._server = server
        self.endpoint = str(ep.with_port(bound).local())
        self.settings.logger.info("OTLP/gRPC receiver listening",
                                  extra={"endpoint": bind, "bound": self.endpoint, "tls": self.cfg.tls is not None,
                                         "mtls": bool(self.cfg.tls and self.cfg.tls.client_ca_file),
                                         "auth": self.cfg.auth.authenticator if self.cfg.auth else None,
                                         "signals": [s.value for s in self.consumers]})
        return self.endpoint

    async def stop(self) -> None:
        """Stop accepting, let in-flight calls finish for up to SHUTDOWN_GRACE seconds; safe twice."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(SHUTDOWN_GRACE)

    def _make_export(self, signal: Signal, consumer: Consumer) -> ExportHandler:
        decode = signal.request_type.FromString
        obs = self.obs
        receiver = self._receiver
        include_metadata = self.cfg.include_metadata
        authenticator = self._authenticator

        async def export(_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            if authenticator is not None and not authenticator.authenticate(_metadata(context)):
                obs.refused(signal, 1, UNAUTHENTICATED)  # items unknown (not read): the call counts once
                self._log.warning("refused an unauthenticated OTLP/gRPC request", key=f"auth-{signal.value}",
                                  extra={"signal": signal.value, "peer": context.peer()})
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid credentials")
            body = await context.read()
            if not isinstance(body, bytes):  # grpc.aio.EOF: no message
                await self._no_message(signal, context)
                return _EMPTY_RESPONSE
            try:
                msg = decode(body)
            except (DecodeError, ValueError) as e:
                obs.refused(signal, 1, "malformed")  # items unknown: the request counts once
                self._log.warning("refused a malformed OTLP/gRPC request", key=f"malformed-{signal.value}",
                                  extra={"signal": signal.value, "error": str(e), "bytes": len(body)})
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"cannot decode {signal.request_type.__name__}: {e}")
            headers = _metadata(context) if include_metadata else None
            payload = Payload(signal, message=msg, raw=body, receiver=receiver, headers=headers)
            rejected, why = metricnames.screen(payload)
            if rejected:
                obs.refused(signal, rejected, metricnames.INVALID_NAME)
            if why and payload.items == 0:  # nothing usable was left to deliver
                return bytes(metricnames.partial_success(rejected, why).SerializeToString())
            # Answers wait for persistent queues (asked per request: a reload may change that): bound them.
            wait = ack_wait(context.time_remaining()) if acknowledges(consumer) else None
            result = await deliver(consumer, payload, obs, wait)
            if result.outcome is Outcome.OK:
                return bytes(metricnames.partial_success(rejected, why).SerializeToString()) if why else _EMPTY_RESPONSE
            await self._abort(context, signal, result)
            return _EMPTY_RESPONSE  # not reached: abort raises

        return export

    async def _no_message(self, signal: Signal, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        """The call ended without a request message: find out whether grpc core ended it, and count it once.

        If core refused the message (or the client gave up), the call is over:
        the next operation on it fails, or grpc cancels this handler. Only a
        client that half-closed without sending anything lets it succeed.
        """
        remaining = context.time_remaining()
        reason = "timeout" if remaining is not None and remaining <= 0 else "too_large"
        try:
            await context.send_initial_metadata(())
        except asyncio.CancelledError:
            self._count_core_refusal(signal, reason)
            raise
        except grpc.aio.InternalError:  # ExecuteBatchError: the call was already finished by core
            self._count_core_refusal(signal, reason)
            return
        self.obs.refused(signal, 1, "malformed")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"no {signal.request_type.__name__} message was sent")

    def _count_core_refusal(self, signal: Signal, reason: str) -> None:
        self.obs.refused(signal, 1, reason)
        self._log.warning("grpc refused an OTLP/gRPC request before it was read", key=f"{reason}-{signal.value}",
                          extra={"signal": signal.value, "reason": reason,
                                 "max_recv_msg_size_mib": self.cfg.max_recv_msg_size_mib})

    async def _abort(self, context: grpc.aio.ServicerContext[bytes, bytes], signal: Signal, result: Result) -> None:
        code = _STATUS_FOR_OUTCOME[result.outcome]
        retry_after = None if result.outcome is Outcome.PERMANENT else result.retry_after
        self._log.warning("pipeline refused an OTLP/gRPC request", key=f"{result.outcome.value}-{signal.value}",
                          extra={"signal": signal.value, "code": code.name, "error": result.message})
        message = result.message or result.outcome.value
        await context.abort(code, message, error_metadata(code, message, retry_after))


def _metadata(context: grpc.aio.ServicerContext[bytes, bytes]) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
