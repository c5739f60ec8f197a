"""OTLP/HTTP exporter: POSTs every signal to `<endpoint>/v1/{traces,metrics,logs}`.

Protobuf bodies are the payload's own wire bytes (never re-encoded while the
request is unchanged); JSON bodies use the OTLP/JSON codec. Responses are
classified as the OTLP/HTTP specification says: 429, 502, 503 and 504 (and
connection failures) are retried, honouring `Retry-After`; every other non-2xx
status is permanent; a 2xx whose `partial_success` rejects items is never
retried. Queueing, retrying and timing out are the exporter helper's job.

Endpoints may carry credentials (`https://user:token@host/otlp?api_key=...`):
user info is sent as HTTP Basic auth (by aiohttp), and only the redacted form
(`pipeline.redact`) of a URL is ever logged or put in an error.
"""
from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
import zlib
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import orjson
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from yarl import URL

from exporters.otlp import USER_AGENT, check_partial_success
from pipeline import otlpjson
from pipeline.component import Factory, Host, Kind, Settings, Stability
from pipeline.configtypes import Secret
from pipeline.errors import PermanentError, RetryableError
from pipeline.exporterhelper import ExporterConfig
from pipeline.logutil import RateLimitedLog
from pipeline.model import ExportResponse, Payload, Signal
from pipeline.redact import redact_text, redact_url
from pipeline.tlsconfig import TLSClientConfig

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
CONTENT_TYPES = {"proto": "application/x-protobuf", "json": "application/json"}
_SIGNAL_PATHS = {Signal.TRACES: "v1/traces", Signal.METRICS: "v1/metrics", Signal.LOGS: "v1/logs"}
_SIGNAL_KEYS = {Signal.TRACES: "traces_endpoint", Signal.METRICS: "metrics_endpoint", Signal.LOGS: "logs_endpoint"}
_OWN_HEADERS = frozenset({"content-type", "content-encoding", "content-length"})
# Compressing a large body takes milliseconds; do that off the event loop (zlib releases the GIL).
_COMPRESS_INLINE_MAX = 64 * 1024
_SNIPPET = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class OTLPHTTPExporterConfig(ExporterConfig):
    """`exporters.otlphttp`: a base URL and/or one full URL per signal, as in the Collector."""

    endpoint: str = ""
    traces_endpoint: str = ""
    metrics_endpoint: str = ""
    logs_endpoint: str = ""
    encoding: Literal["proto", "json"] = "proto"
    compression: Literal["gzip", "none"] = "gzip"
    headers: dict[str, Secret] = field(default_factory=dict)
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)

    def validate(self) -> list[object]:
        out = ExporterConfig.validate(self)
        keys = ("endpoint", *_SIGNAL_KEYS.values())
        if not any(getattr(self, k) for k in keys):
            out.append(("endpoint", ("is required: the backend's base URL, e.g. 'https://otlp.example.com:4318' "
                                     "(or set traces_endpoint / metrics_endpoint / logs_endpoint)")))
        auth_header = any(name.lower() == "authorization" for name in self.headers)
        for key in keys:
            value = getattr(self, key)
            if not value:
                continue
            url, problem = parse_url(value)
            if problem:
                out.append((key, problem))
            elif auth_header and url is not None and has_userinfo(url):
                # aiohttp refuses to send both (a ValueError on every attempt, retried forever).
                out.append((key, ("holds a user name or password, which is sent as HTTP Basic auth, and "
                                  "headers.Authorization is set too: keep only one of them")))
        for name, value in self.headers.items():
            if name.lower() in _OWN_HEADERS:
                out.append((f"headers.{name}", f"'{name}' is set by the exporter from encoding/compression"))
            elif any(c in value.reveal() for c in "\r\n"):
                out.append((f"headers.{name}", "the value must not contain line breaks"))
        return out

    def signal_url(self, signal: Signal) -> str:
        """The URL a signal is POSTed to; raises ValueError when neither endpoint covers it."""
        return str(self.signal_target(signal))

    def signal_target(self, signal: Signal) -> URL:
        """`traces_endpoint` as given, else `endpoint` + `v1/traces`, appended to the path, before any query."""
        explicit = getattr(self, _SIGNAL_KEYS[signal])
        if explicit:
            return URL(explicit)
        if not self.endpoint:
            raise ValueError(f"no URL for {signal.value}: set endpoint or {_SIGNAL_KEYS[signal]}")
        base = URL(self.endpoint)
        path = base.raw_path if base.raw_path.endswith("/") else base.raw_path + "/"
        return base.with_path(path + _SIGNAL_PATHS[signal], encoded=True, keep_query=True)


def parse_url(value: str) -> tuple[URL | None, str | None]:
    """`(url, None)` for a usable endpoint URL, else `(None, problem)` said without user info or query values."""
    shown = redact_url(value)
    try:
        url = URL(value)
    except ValueError as e:
        # yarl's reason may quote part of the URL: give it only when the URL holds nothing secret.
        reason = str(e) if shown == value else ("it does not parse; percent-encode '@', ':', '/', '?' and '#' "
                                                "inside the user name, password and query values")
        return None, f"invalid URL {shown!r}: {reason}"
    if url.scheme not in ("http", "https") or not url.host:
        return None, f"invalid URL {shown!r}: write http://host:port or https://host:port"
    return url, None


def has_userinfo(url: URL) -> bool:
    """Whether aiohttp will send Basic auth for this URL (it does for a user name or a password)."""
    return url.user is not None or url.password is not None


def gzip_bytes(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    return c.compress(data) + c.flush()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def status_message(body: bytes, content_type: str) -> str:
    """A short description of an error body: the google.rpc.Status message if it decodes, else the text."""
    if body:
        msg: str
        try:
            if "protobuf" in content_type:
                msg = status_pb2.Status.FromString(body).message
            elif content_type.startswith("application/json"):
                msg = str(orjson.loads(body).get("message", ""))
            else:
                msg = body[:_SNIPPET].decode("utf-8", "replace") if content_type.startswith("text/") else ""
        except (DecodeError, ValueError, AttributeError):
            msg = ""
        if msg:
            return msg[:_SNIPPET]
    return ""


def decode_response(signal: Signal, body: bytes, content_type: str) -> ExportResponse | None:
    """The Export*ServiceResponse of a 2xx body, or None when it is empty or unreadable."""
    if not body:
        return None
    try:
        if content_type.startswith("application/json"):
            return otlpjson.decode_response(signal, body)  # type: ignore[return-value]
        return signal.response_type.FromString(body)
    except (DecodeError, ValueError):
        return None


class OTLPHTTPExporter:
    """One aiohttp ClientSession (connection pool) per exporter, opened in start()."""

    def __init__(self, settings: Settings, cfg: OTLPHTTPExporterConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        signals = (settings.signal,) if settings.signal is not None else tuple(Signal)
        self._urls = {sig: cfg.signal_target(sig) for sig in signals}
        # What logs and errors show instead of the URL (user info and query values redacted).
        self._shown = {sig: redact_url(url) for sig, url in self._urls.items()}
        headers = {k: v.reveal() for k, v in cfg.headers.items()}
        headers.update({"User-Agent": USER_AGENT, "Content-Type": CONTENT_TYPES[cfg.encoding]})
        if cfg.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        self._log = RateLimitedLog(settings.logger)

    async def start(self, host: Host) -> None:
        if self._session is not None:
            return
        if any(u.scheme == "https" for u in self._urls.values()):
            # `tls.insecure` only matters for plain-text URLs; an https URL always verifies (or skips, if asked).
            ctx = self.cfg.tls.ssl_context()
            self._ssl = ctx if ctx is not None else True
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=float(self.cfg.timeout)))
        self.settings.logger.info("OTLP/HTTP exporter started",
                                  extra={"urls": sorted(set(self._shown.values())), "encoding": self.cfg.encoding,
                                         "compression": self.cfg.compression})

    async def _body(self, payload: Payload) -> bytes:
        if self.cfg.encoding == "json":
            body = otlpjson.encode(payload.message)
        else:
            body = payload.serialize()
        if self.cfg.compression == "gzip":
            body = gzip_bytes(body) if len(body) <= _COMPRESS_INLINE_MAX else await asyncio.to_thread(gzip_bytes, body)
        return body

    async def push(self, payload: Payload) -> None:
        session = self._session
        url = self._urls.get(payload.signal)
        if session is None:
            raise RetryableError(f"exporter {self.settings.id} is not started")
        if url is None:
            raise PermanentError(f"exporter {self.settings.id} was built for {self.settings.signal} "
                                 f"and has no URL for {payload.signal.value}")
        body = await self._body(payload)
        shown = self._shown[payload.signal]
        # Library exceptions may quote the URL (InvalidURL is the URL, ClientResponseError carries it):
        # errors hold the redacted URL and the redacted text of the exception.
        try:
            async with session.post(url, data=body, headers=self._headers, allow_redirects=False, ssl=self._ssl,
                                    server_hostname=self.cfg.tls.server_name_override or None) as resp:
                content = await resp.read()
                status = resp.status
                content_type = resp.headers.get("Content-Type", "")
                retry_after = resp.headers.get("Retry-After")
                location = resp.headers.get("Location", "")
        except aiohttp.InvalidURL:
            raise PermanentError(f"invalid URL {shown}") from None
        except TimeoutError:
            raise  # the exporter helper counts it as a timeout and retries
        except (aiohttp.ClientError, OSError) as e:
            # Connection refused/reset, TLS handshake, truncated response: transient.
            raise RetryableError(f"POST {shown} failed: {type(e).__name__}: {redact_text(str(e))}") from None
        except ValueError as e:
            # aiohttp refusing to build the request (e.g. Basic auth from the URL plus an Authorization
            # header, when validation was bypassed): every retry would fail the same way.
            raise PermanentError(f"POST {shown} could not be sent: {redact_text(str(e))}") from None
        if 200 <= status < 300:
            response = decode_response(payload.signal, content, content_type)
            if response is None and content:
                self._log.warning("could not decode the backend's response; treating the request as accepted",
                                  key="bad_response", extra={"url": shown, "status": status})
            if response is not None:
                check_partial_success(payload.signal, response, self._log)
            return
        detail = redact_text(status_message(content, content_type))  # a backend may echo the URL it was sent
        message = f"POST {shown} returned HTTP {status}" + (f": {detail}" if detail else "")
        if status in RETRYABLE_STATUSES:
            raise RetryableError(message, parse_retry_after(retry_after))
        if 300 <= status < 400:
            message += (f" (redirect to {redact_url(location)!r} not followed: "
                        "point the endpoint at the final URL)")
        raise PermanentError(message)

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            self.settings.logger.info("OTLP/HTTP exporter stopped")


def create(settings: Settings, cfg: OTLPHTTPExporterConfig) -> OTLPHTTPExporter:
    return OTLPHTTPExporter(settings, cfg)


FACTORY = Factory(
    type="otlphttp",
    kind=Kind.EXPORTER,
    config_type=OTLPHTTPExporterConfig,
    signals={Signal.TRACES: Stability.STABLE, Signal.METRICS: Stability.STABLE, Signal.LOGS: Stability.STABLE},
    create=create,
    description="Sends traces, metrics and logs over OTLP/HTTP (protobuf or JSON, gzip).",
)
