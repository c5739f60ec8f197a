"""OTLP/HTTP transport: POST /v1/traces, /v1/metrics and /v1/logs, protobuf or JSON, plain or gzip.

An aiohttp low-level server (no router, no middlewares: one dict lookup per
request) with aiohttp's own body decompression turned off, so that
`max_request_body_size` is enforced twice: on the bytes as sent (at most
limit+1 of them are ever read) and on the decompressed bytes, which are
inflated with `zlib.decompressobj(...).decompress(data, max_length)` and so
stop one byte past the limit — a gzip bomb costs at most limit+1 bytes of
memory and is answered 413.

Protobuf bodies are decoded once and kept as the Payload's wire bytes (no
re-encode downstream); OTLP/JSON goes through `pipeline.otlpjson`. Answers
follow the OTLP/HTTP spec and the Collector: errors carry a google.rpc.Status
in the request's content type (400 malformed, 413 too large, 429/503 with
Retry-After from the pipeline, 400 permanent), 415 and 405 are plain text as the
Collector writes them, an unknown path (or a signal no pipeline takes) is 404,
and success is an empty Export*ServiceResponse in the request's content type.
"""
from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson
from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status

from pipeline import otlpjson
from pipeline.component import Consumer, Settings
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.netaddr import parse_endpoint
from pipeline.receiverhelper import Outcome, Result, deliver
from pipeline.telemetry import ReceiverObs
from receivers.otlp_grpc import local_address

if TYPE_CHECKING:
    from receivers.otlp import CORSConfig, HTTPConfig

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# How long shutdown lets in-flight requests finish before they are cancelled.
SHUTDOWN_GRACE = 5.0

# google.rpc.Code values used in error bodies.
_INVALID_ARGUMENT = 3
_RESOURCE_EXHAUSTED = 8
_UNAVAILABLE = 14
_GRPC_CODE_FOR_OUTCOME = {Outcome.THROTTLED: _RESOURCE_EXHAUSTED, Outcome.UNAVAILABLE: _UNAVAILABLE,
                          Outcome.PERMANENT: _INVALID_ARGUMENT}

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ENCODINGS = {"": None, "identity": None, "gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
_UNSUPPORTED_MEDIA_TYPE = f"415 unsupported media type, supported: [{JSON}, {PROTOBUF}]"
_METHOD_NOT_ALLOWED = "405 method not allowed, supported: [POST]"


class BodyTooLarge(Exception):
    """The body, as sent or once decompressed, is larger than max_request_body_size."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate a gzip or deflate body, producing at most `limit + 1` bytes before giving up.

    Raises BodyTooLarge past `limit` and zlib.error for a corrupt or truncated
    stream. Concatenated gzip members are accepted (as Go's gzip reader does).
    """
    if encoding == "gzip":
        wbits = _GZIP_WBITS
    else:
        # HTTP "deflate" means the zlib format, but some clients send raw deflate.
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and ((body[0] << 8) | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    parts: list[bytes] = []
    total = 0
    data = body
    while True:
        d = zlib.decompressobj(wbits)
        # max_length >= 1 here (0 would mean "no limit"): total <= limit on every pass.
        out = d.decompress(data, limit + 1 - total)
        total += len(out)
        if total > limit:
            raise BodyTooLarge(f"decompressed body is larger than {limit} bytes")
        parts.append(out)
        if not d.eof:
            raise zlib.error(f"truncated {encoding} stream")
        data = d.unused_data
        if not data or encoding != "gzip":
            if data:
                raise zlib.error(f"unexpected data after the end of the {encoding} stream")
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_body(content: StreamReader, limit: int) -> bytes:
    """Read the whole body, but never more than `limit + 1` bytes (BodyTooLarge past `limit`)."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = await content.read(limit + 1 - total)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"body is larger than {limit} bytes")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


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

    def __init__(self, settings: Settings, cfg: HTTPConfig, consumers: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.cfg = cfg
        self.obs: ReceiverObs = settings.telemetry.receiver(str(settings.id), "http")
        self.endpoint = ""
        self._receiver = str(settings.id)
        self._limit = int(cfg.max_request_body_size)
        self._routes: dict[str, tuple[Signal, Consumer]] = {
            path: (signal, consumers[signal]) for signal, path in cfg.url_paths().items() if signal in consumers}
        self._cors = CORS(cfg.cors) if cfg.cors is not None and cfg.cors.allowed_origins else None
        self._allow = "POST, OPTIONS" if self._cors else "POST"
        self._log = RateLimitedLog(settings.logger)
        self._runner: web.ServerRunner | None = None

    async def start(self) -> str:
        """Bind and serve; returns the locally reachable address actually bound (port 0 works)."""
        host, port = parse_endpoint(self.cfg.endpoint)
        server = web.Server(self._handle, access_log=None, auto_decompress=False)
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        bind = host or "0.0.0.0"
        try:
            await web.TCPSite(runner, bind, port).start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(f"cannot listen for OTLP/HTTP on {self.cfg.endpoint}: {e}") from e
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self.endpoint = local_address(host, bound_port)
        self.settings.logger.info("OTLP/HTTP receiver listening",
                                  extra={"endpoint": self.cfg.endpoint, "bound": self.endpoint,
                                         "paths": sorted(self._routes)})
        return self.endpoint

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish for up to SHUTDOWN_GRACE seconds; safe twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

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
            body = await read_body(request.content, limit)
            if encoding is not None:
                body = decompress(body, encoding, limit)
        except BodyTooLarge as e:
            return self._refuse(signal, is_json, 413, "too_large", _RESOURCE_EXHAUSTED,
                                f"{e} (max_request_body_size)")
        except zlib.error as e:
            return self._refuse(signal, is_json, 400, "malformed", _INVALID_ARGUMENT, f"cannot decompress body: {e}")
        except (ConnectionError, HttpProcessingError) as e:
            return self._refuse(signal, is_json, 400, "malformed", _INVALID_ARGUMENT, f"cannot read body: {e}")
        try:
            if is_json:
                payload = Payload(signal, message=otlpjson.decode(signal, body), receiver=self._receiver)
            else:
                payload = Payload(signal, message=signal.request_type.FromString(body), raw=body,
                                  receiver=self._receiver)
        except (DecodeError, ValueError, TypeError, RecursionError) as e:
            return self._refuse(signal, is_json, 400, "malformed", _INVALID_ARGUMENT,
                                f"cannot decode {signal.request_type.__name__}: {e}")
        if self.cfg.include_metadata:
            payload.headers = {k.lower(): v for k, v in request.headers.items()}
        result = await deliver(consumer, payload, self.obs)
        if result.outcome is Outcome.OK:
            return web.Response(status=200, body=b"{}" if is_json else b"", content_type=JSON if is_json else PROTOBUF)
        return self._pipeline_error(signal, is_json, result)

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
        if status == 413:
            resp.force_close()  # the rest of an oversized body is not worth keeping the connection for
        return resp

    def _refuse_text(self, signal: Signal, status: int, reason: str, text: str) -> web.Response:
        self.obs.refused(signal, 1, reason)
        self._log.warning("refused an OTLP/HTTP request", key=f"{reason}-{signal.value}",
                          extra={"signal": signal.value, "status": status, "reason": reason})
        return web.Response(status=status, text=text)
