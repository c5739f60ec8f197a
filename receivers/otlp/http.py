"""OTLP/HTTP transport: POST /v1/traces, /v1/metrics and /v1/logs, protobuf or JSON, plain or gzip.

An aiohttp low-level server (no router, no middlewares: one dict lookup per
request) with aiohttp's own body decompression turned off, so that
`max_request_body_size` is enforced twice: on the bytes as sent (at most
limit+1 of them are ever read) and on the decompressed bytes (see
`http_body`: inflating stops one byte past the limit, a gzip bomb is
answered 413, and more than MAX_GZIP_MEMBERS concatenated members 400).

The event loop only ever does a bounded amount of work per request: a body
larger than a few hundred KiB (protobuf) or a few KiB (JSON, whose decoding
is Python code) is inflated and decoded in this server's small worker pool,
so `/healthz`, other clients and signal handling keep running meanwhile.
Connections are capped and timed out as the Collector's confighttp server
does (`pipeline.net.server`); a body that arrives slower than `read_timeout`
allows is answered 408.

Protobuf bodies are decoded once and kept as the Payload's wire bytes (no
re-encode downstream); OTLP/JSON goes through `pipeline.otlpjson`. Answers
follow the OTLP/HTTP spec and the Collector: errors carry a google.rpc.Status
in the request's content type (400 malformed, 413 too large, 429/503 with
Retry-After from the pipeline, 400 permanent), 415 and 405 are plain text as the
Collector writes them, an unknown path (or a signal no pipeline takes) is 404,
and success is an empty Export*ServiceResponse in the request's content type.

With `tls` the listener serves TLS (mTLS with `client_ca_file`); its SSLContext follows the
certificate files (`pipeline.net.tls.server_ssl_context`). With `auth`, a request to an OTLP
path must carry credentials the authenticator extension accepts, checked before its body is
read; otherwise 401 with `WWW-Authenticate`, counted once as `unauthenticated`. CORS preflights
are answered without credentials, as the Collector's confighttp does.
"""
from __future__ import annotations

import asyncio
import math
import re
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status

from pipeline import metricnames, otlpjson
from pipeline.auth import UNAUTHENTICATED, ServerAuthenticator
from pipeline.component import Consumer, Settings, acknowledges
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.net.server import GuardedServer, auto_max_connections
from pipeline.net.tls import server_ssl_context
from pipeline.receiverhelper import Outcome, Result, ack_wait, deliver
from pipeline.telemetry import ReceiverObs
from receivers.otlp.config import CORSConfig, HTTPConfig
from receivers.otlp.http_body import (
    BodyTooLarge,
    Inflater,
    TooManyMembers,
    decompress,
    read_body,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# How long shutdown lets in-flight requests finish before they are cancelled.
SHUTDOWN_GRACE = 5.0
# Bodies up to these sizes (as sent, and once inflated) are decoded on the event loop; larger
# ones in the worker pool. upb decodes protobuf at ~1 GB/s (256 KiB: ~0.3 ms); OTLP/JSON goes
# through Python-level json_format at ~7 MB/s (16 KiB: ~2 ms).
INLINE_PROTOBUF_BYTES = 256 * 1024
INLINE_JSON_BYTES = 16 * 1024
# Worker threads per OTLP/HTTP server: decoding holds the GIL (except zlib), so more threads
# add no throughput, only more contention with the event loop.
DECODE_WORKERS = 2

__all__ = ["BodyTooLarge", "OTLPHTTPServer", "decompress"]
_T = TypeVar("_T")

# google.rpc.Code values used in error bodies.
_INVALID_ARGUMENT = 3
_DEADLINE_EXCEEDED = 4
_RESOURCE_EXHAUSTED = 8
_UNAVAILABLE = 14
_GRPC_CODE_FOR_OUTCOME = {Outcome.THROTTLED: _RESOURCE_EXHAUSTED, Outcome.UNAVAILABLE: _UNAVAILABLE,
                          Outcome.PERMANENT: _INVALID_ARGUMENT}

_ENCODINGS = {"": None, "identity": None, "gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
_UNSUPPORTED_MEDIA_TYPE = f"415 unsupported media type, supported: [{JSON}, {PROTOBUF}]"
_METHOD_NOT_ALLOWED = "405 method not allowed, supported: [POST]"


class CORS:
    """Cross-origin handling for browsers (the rs/cors behaviour the Collector configures)."""

    _IMPLICIT_HEADERS = frozenset({"accept", "accept-language", "content-type", "content-language"})

    def __init__(self, cfg: CORSConfig) -> None:
        self._any_origin = "*" in cfg.allowed_origins
        self._origins = [re.compile(".*".join(re.escape(p) for p in o.split("*")), re.IGNORECASE)
                         for o in cfg.allowed_origins if o != "*"]
        headers = {h.strip().lower() for h in cfg.allowed_headers}
        self._any_header = "*" in headers
        self._headers = self._IMPLICIT_HEADERS | headers | ({"x-requested-with"} if not headers else set())
        self._max_age = cfg.max_age

    def origin_allowed(self, origin: str) -> bool:
        return self._any_origin or any(p.fullmatch(origin) for p in self._origins)

    def preflight(self, request: web.BaseRequest) -> web.Response:
        """Answer an OPTIONS preflight: 204, with the allow headers only when the request is allowed."""
        resp = web.Response(status=204)
        resp.headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        origin = request.headers.get("Origin", "")
        method = request.headers.get("Access-Control-Request-Method", "")
        if not origin or method.upper() != "POST" or not self.origin_allowed(origin):
            return resp
        requested = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
                     if h.strip()]
        if not self._any_header and any(h not in self._headers for h in requested):
            return resp
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Methods"] = "POST"
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        if requested:
            resp.headers["Access-Control-Allow-Headers"] = ", ".join(requested)
        if self._max_age:
            resp.headers["Access-Control-Max-Age"] = str(self._max_age)
        return resp

    def decorate(self, request: web.BaseRequest, resp: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        resp.headers["Vary"] = "Origin"
        if origin and self.origin_allowed(origin):
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Credentials"] = "true"


def _status_body(is_json: bool, code: int, message: str) -> bytes:
    if is_json:
        return orjson.dumps({"code": code, "message": message})
    body: bytes = Status(code=code, message=message).SerializeToString()
    return body


class OTLPHTTPServer:
    """One aiohttp server serving the OTLP/HTTP paths of the signals that have a consumer."""

    def __init__(self, settings: Settings, cfg: HTTPConfig, consumers: Mapping[Signal, Consumer],
                 authenticator: ServerAuthenticator | None = None) -> None:
        self.settings = settings
        self.cfg = cfg
        self._authenticator = authenticator
        self.obs: ReceiverObs = settings.telemetry.receiver(str(settings.id), "http")
        self.endpoint = ""
        self._receiver = str(settings.id)
        self._limit = int(cfg.max_request_body_size)
        self._read_timeout = float(cfg.timeouts().read_timeout)
        self._routes: dict[str, tuple[Signal, Consumer]] = {
            path: (signal, consumers[signal]) for signal, path in cfg.url_paths().items() if signal in consumers}
        self._cors = CORS(cfg.cors) if cfg.cors is not None and cfg.cors.allowed_origins else None
        self._allow = "POST, OPTIONS" if self._cors else "POST"
        self._log = RateLimitedLog(settings.logger)
        self._refused_connections = settings.telemetry.counter("receiver_refused_connections")
        self._runner: web.ServerRunner | None = None
        self._server: GuardedServer | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> str:
        """Bind and serve; returns the locally reachable address actually bound (port 0 works)."""
        ep = self.cfg.endpoint
        max_connections = self.cfg.max_connections or auto_max_connections()
        server = GuardedServer(self._handle, max_connections=max_connections, timeouts=self.cfg.timeouts(),
                               on_refused=self._connection_refused, access_log=None, auto_decompress=False)
        tls = self.cfg.tls
        try:
            ssl_context = None if tls is None else server_ssl_context(
                tls, self.settings.logger, self._tls_reloaded, self.settings.clock)
        except OSError as e:  # ssl.SSLError included
            raise OSError(f"cannot load the TLS certificate for OTLP/HTTP: {e}") from e
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, ep.bind_host, ep.port, ssl_context=ssl_context).start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(f"cannot listen for OTLP/HTTP on {self.cfg.endpoint}: {e}") from e
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._server = runner, server
        self._executor = ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix=f"{self._receiver}-http-decode")
        bound_port = runner.addresses[0][1]
        self.endpoint = str(ep.with_port(bound_port).local())
        self.settings.logger.info("OTLP/HTTP receiver listening",
                                  extra={"endpoint": self.cfg.endpoint, "bound": self.endpoint,
                                         "paths": sorted(self._routes), "max_connections": max_connections,
                                         "tls": tls is not None, "mtls": bool(tls and tls.client_ca_file),
                                         "auth": self.cfg.auth.authenticator if self.cfg.auth else None})
        return self.endpoint

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish for up to SHUTDOWN_GRACE seconds; safe twice."""
        runner, self._runner, self._server = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
        executor, self._executor = self._executor, None
        if executor is not None:
            # A decode still running after the grace period finishes in its thread; nothing waits for it.
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def open_connections(self) -> int:
        return self._server.open_connections if self._server is not None else 0

    def _tls_reloaded(self, result: str) -> None:
        self.settings.telemetry.counter("receiver_tls_reloads").labels(self._receiver, "http", result).inc()

    def _connection_refused(self, reason: str) -> None:
        self._refused_connections.labels(self._receiver, "http", reason).inc()
        self._log.warning("closed an OTLP/HTTP connection", key=f"connection-{reason}",
                          extra={"reason": reason, "max_connections": self._server and self._server.max_connections})

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self._routes.get(request.path)
        if route is None:
            return web.Response(status=404, text=f"404 not found: {request.path}")
        signal, consumer = route
        if request.method != "POST":
            if request.method == "OPTIONS" and self._cors is not None:
                return self._cors.preflight(request)
            self.obs.refused(signal, 1, "method_not_allowed")
            return web.Response(status=405, text=_METHOD_NOT_ALLOWED, headers={"Allow": self._allow})
        authenticator = self._authenticator
        if authenticator is not None and not authenticator.authenticate(request.headers):  # case-insensitive
            resp = self._refuse_text(signal, 401, UNAUTHENTICATED, "401 unauthorized: missing or invalid credentials")
            resp.headers["WWW-Authenticate"] = authenticator.challenge
        else:
            resp = await self._export(request, signal, consumer)
        if self._cors is not None:
            self._cors.decorate(request, resp)
        return resp

    async def _export(self, request: web.BaseRequest, signal: Signal, consumer: Consumer) -> web.Response:
        ctype = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if ctype == PROTOBUF:
            is_json = False
        elif ctype == JSON:
            is_json = True
        else:
            return self._refuse_text(signal, 415, "unsupported_media_type", _UNSUPPORTED_MEDIA_TYPE)
        encoding_name = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding_name not in _ENCODINGS:
            return self._refuse(signal, is_json, 415, "unsupported_encoding", _INVALID_ARGUMENT,
                                f"unsupported Content-Encoding {encoding_name!r}, supported: gzip, deflate, identity")
        encoding = _ENCODINGS[encoding_name]
        limit = self._limit
        length = request.content_length
        if length is not None and length > limit:
            return self._refuse(signal, is_json, 413, "too_large", _RESOURCE_EXHAUSTED,
                                f"request body of {length} bytes is larger than max_request_body_size ({limit})")
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            if self._read_timeout:
                async with asyncio.timeout(self._read_timeout):
                    body = await read_body(request.content, limit)
            else:
                body = await read_body(request.content, limit)
            payload = await self._decode_body(signal, is_json, body, encoding, limit)
        except TimeoutError:
            return self._refuse(signal, is_json, 408, "timeout", _DEADLINE_EXCEEDED,
                                f"the request body took longer than read_timeout ({self._read_timeout:g}s) to arrive")
        except BodyTooLarge as e:
            return self._refuse(signal, is_json, 413, "too_large", _RESOURCE_EXHAUSTED,
                                f"{e} (max_request_body_size)")
        except TooManyMembers as e:
            return self._refuse(signal, is_json, 400, "too_many_members", _INVALID_ARGUMENT,
                                f"cannot decompress body: {e}")
        except zlib.error as e:
            return self._refuse(signal, is_json, 400, "malformed", _INVALID_ARGUMENT, f"cannot decompress body: {e}")
        except (ConnectionError, HttpProcessingError) as e:
            return self._refuse(signal, is_json, 400, "malformed", _INVALID_ARGUMENT, f"cannot read body: {e}")
        except (DecodeError, ValueError, TypeError, RecursionError) as e:
            return self._refuse(signal, is_json, 400, "malformed", _INVALID_ARGUMENT,
                                f"cannot decode {signal.request_type.__name__}: {e}")
        if self.cfg.include_metadata:
            payload.headers = {k.lower(): v for k, v in request.headers.items()}
        rejected, why = metricnames.screen(payload)
        if rejected:
            self.obs.refused(signal, rejected, metricnames.INVALID_NAME)
        if why and payload.items == 0:  # nothing usable was left to deliver
            return self._partial_success(is_json, rejected, why)
        # Answers that wait for persistent queues are bounded (OTLP/HTTP sends no deadline).
        result = await deliver(consumer, payload, self.obs, ack_wait(None) if acknowledges(consumer) else None)
        if result.outcome is Outcome.OK:
            if why:
                return self._partial_success(is_json, rejected, why)
            return web.Response(status=200, body=b"{}" if is_json else b"", content_type=JSON if is_json else PROTOBUF)
        return self._pipeline_error(signal, is_json, result)

    def _partial_success(self, is_json: bool, rejected: int, why: str) -> web.Response:
        """200 with an ExportMetricsServiceResponse whose partial_success says what was refused and why."""
        response = metricnames.partial_success(rejected, why)
        body = otlpjson.encode(response) if is_json else response.SerializeToString()
        return web.Response(status=200, body=body, content_type=JSON if is_json else PROTOBUF)

    async def _decode_body(self, signal: Signal, is_json: bool, body: bytes, encoding: str | None,
                           limit: int) -> Payload:
        """Inflate and decode, on the event loop while the work is small, in the worker pool otherwise.

        A compressed body is inflated on the loop only up to the inline size;
        past it, the worker pool resumes inflating where the loop stopped.
        """
        inline = INLINE_JSON_BYTES if is_json else INLINE_PROTOBUF_BYTES
        inflater = Inflater(body, encoding, limit) if encoding is not None else None
        if len(body) <= inline and (inflater is None or inflater.run(inline)):
            data = body if inflater is None else inflater.result()
            if len(data) <= inline:
                return self._decode(signal, is_json, data, False)
            return await self._in_worker(self._decode, signal, is_json, data, True)
        return await self._in_worker(self._inflate_and_decode, signal, is_json, body, inflater)

    def _inflate_and_decode(self, signal: Signal, is_json: bool, body: bytes, inflater: Inflater | None) -> Payload:
        if inflater is not None:
            inflater.run()
            body = inflater.result()
        return self._decode(signal, is_json, body, True)

    def _decode(self, signal: Signal, is_json: bool, data: bytes, in_worker: bool) -> Payload:
        if not is_json:
            return Payload(signal, message=signal.request_type.FromString(data), raw=data, receiver=self._receiver)
        payload = Payload(signal, message=otlpjson.decode(signal, data), receiver=self._receiver)
        if in_worker:
            payload.serialize()  # encode now, in the worker, rather than later on the event loop
        return payload

    async def _in_worker(self, fn: Callable[..., _T], *args: object) -> _T:
        executor = self._executor
        if executor is None:  # stopped while this request was being read
            raise ConnectionResetError("the OTLP/HTTP receiver is shutting down")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    def _pipeline_error(self, signal: Signal, is_json: bool, result: Result) -> web.Response:
        """deliver() already counted the refusal; answer 429/503 with Retry-After, or 400."""
        status = result.http_status
        self._log.warning("pipeline refused an OTLP/HTTP request", key=f"{result.outcome.value}-{signal.value}",
                          extra={"signal": signal.value, "status": status, "error": result.message})
        resp = web.Response(status=status, body=_status_body(is_json, _GRPC_CODE_FOR_OUTCOME[result.outcome],
                                                                  result.message or result.outcome.value),
                            content_type=JSON if is_json else PROTOBUF)
        if result.outcome is not Outcome.PERMANENT:
            resp.headers["Retry-After"] = str(max(1, math.ceil(result.retry_after)))
        return resp

    def _refuse(self, signal: Signal, is_json: bool, status: int, reason: str, code: int, message: str) -> web.Response:
        """Count a request refused before it reached the pipeline (items unknown: it counts once)."""
        self.obs.refused(signal, 1, reason)
        self._log.warning("refused an OTLP/HTTP request", key=f"{reason}-{signal.value}",
                          extra={"signal": signal.value, "status": status, "reason": reason, "error": message})
        resp = web.Response(status=status, body=_status_body(is_json, code, message),
                            content_type=JSON if is_json else PROTOBUF)
        if status in (408, 413):
            resp.force_close()  # the rest of a slow or oversized body is not worth keeping the connection for
        return resp

    def _refuse_text(self, signal: Signal, status: int, reason: str, text: str) -> web.Response:
        self.obs.refused(signal, 1, reason)
        self._log.warning("refused an OTLP/HTTP request", key=f"{reason}-{signal.value}",
                          extra={"signal": signal.value, "status": status, "reason": reason})
        return web.Response(status=status, text=text)
