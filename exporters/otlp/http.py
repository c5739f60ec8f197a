"""OTLP/HTTP exporter: POSTs every signal to `<endpoint>/v1/{traces,metrics,logs}`.

Protobuf bodies are the payload's own wire bytes (never re-encoded while the
request is unchanged); JSON bodies use the OTLP/JSON codec. Responses are
classified as the OTLP/HTTP specification says: 429, 502, 503 and 504 (and
connection failures) are retried, honouring `Retry-After`; every other non-2xx
status is permanent; a 2xx whose `partial_success` rejects items is never
retried. Queueing, retrying and timing out are the exporter helper's job; the
connection pool, headers, TLS, gzip and the status classification are
`pipeline.net.http.HTTPClient`'s.

Endpoints may carry credentials (`https://user:token@host/otlp?api_key=...`):
user info is sent as HTTP Basic auth (by aiohttp), and only the redacted form
(`pipeline.redact`) of a URL is ever logged or put in an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from yarl import URL

from exporters.otlp.common import check_partial_success
from pipeline import otlpjson
from pipeline.auth import AuthConfig
from pipeline.component import ExporterFactory, Host, Settings, Stability
from pipeline.config.types import Issue, Secret
from pipeline.errors import PermanentError, RetryableError
from pipeline.exporterhelper import ExporterConfig
from pipeline.logutil import RateLimitedLog
from pipeline.model import ExportResponse, Payload, Signal
from pipeline.net.http import SNIPPET, Compression, HTTPClient, describe_body
from pipeline.net.tls import TLSClientConfig
from pipeline.net.urls import header_issues, url_problem
from pipeline.redact import redact_url

# OTLP specification, "Failures" (OTLP/HTTP): only these are retried; every other 4xx and 5xx is not.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
CONTENT_TYPES = {"proto": "application/x-protobuf", "json": "application/json"}
_SIGNAL_PATHS = {Signal.TRACES: "v1/traces", Signal.METRICS: "v1/metrics", Signal.LOGS: "v1/logs"}
_SIGNAL_KEYS = {Signal.TRACES: "traces_endpoint", Signal.METRICS: "metrics_endpoint", Signal.LOGS: "logs_endpoint"}
_OWN_HEADERS = frozenset({"content-type", "content-encoding", "content-length"})


@dataclass(frozen=True, slots=True, kw_only=True)
class OTLPHTTPExporterConfig(ExporterConfig):
    """`exporters.otlphttp`: a base URL and/or one full URL per signal, as in the Collector."""

    endpoint: str = ""
    traces_endpoint: str = ""
    metrics_endpoint: str = ""
    logs_endpoint: str = ""
    encoding: Literal["proto", "json"] = "proto"
    compression: Compression = "gzip"
    headers: dict[str, Secret] = field(default_factory=dict)
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)
    # `authenticator`: an extension that adds credentials to every request (e.g. bearertokenauth).
    auth: AuthConfig | None = None

    def validate(self) -> list[Issue]:
        out = ExporterConfig.validate(self)
        keys = ("endpoint", *_SIGNAL_KEYS.values())
        if not any(getattr(self, k) for k in keys):
            out.append(Issue("endpoint", ("is required: the backend's base URL, e.g. 'https://otlp.example.com:4318' "
                                     "(or set traces_endpoint / metrics_endpoint / logs_endpoint)")))
        for key in keys:
            value = getattr(self, key)
            problem = url_problem(value, self.headers) if value else None
            if problem:
                out.append(Issue(key, problem))
        out.extend(header_issues(self.headers, _OWN_HEADERS, "from encoding/compression"))
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


def status_message(body: bytes, content_type: str) -> str:
    """A short description of an error body: the google.rpc.Status message if it decodes, else the text."""
    if body and "protobuf" in content_type:
        try:
            return str(status_pb2.Status.FromString(body).message)[:SNIPPET]
        except DecodeError:
            return ""
    return describe_body(body, content_type)


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
    """POSTs each signal to its URL through one `HTTPClient` (a connection pool), opened in start()."""

    def __init__(self, settings: Settings, cfg: OTLPHTTPExporterConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        signals = (settings.signal,) if settings.signal is not None else tuple(Signal)
        self._urls = {sig: cfg.signal_target(sig) for sig in signals}
        # What logs and errors show instead of the URL (user info and query values redacted).
        self._shown = {sig: redact_url(url) for sig, url in self._urls.items()}
        self._content_type = CONTENT_TYPES[cfg.encoding]
        # `tls` only matters for https URLs (`tls.insecure` never turns an https URL into plain text).
        https = any(u.scheme == "https" for u in self._urls.values())
        self._client = HTTPClient(headers=cfg.headers, tls=cfg.tls if https else None, compression=cfg.compression,
                                  retryable_statuses=RETRYABLE_STATUSES, error_detail=status_message,
                                  auth=cfg.auth)
        self._log = RateLimitedLog(settings.logger)

    async def start(self, host: Host) -> None:
        if self._client.started:
            return
        await self._client.start(host)
        self.settings.logger.info("OTLP/HTTP exporter started",
                                  extra={"urls": sorted(set(self._shown.values())), "encoding": self.cfg.encoding,
                                         "compression": self.cfg.compression})

    def _body(self, payload: Payload) -> bytes:
        if self.cfg.encoding == "json":
            return otlpjson.encode(payload.message)
        return payload.serialize()

    async def push(self, payload: Payload) -> None:
        url = self._urls.get(payload.signal)
        if not self._client.started:
            raise RetryableError(f"exporter {self.settings.id} is not started")
        if url is None:
            raise PermanentError(f"exporter {self.settings.id} was built for {self.settings.signal} "
                                 f"and has no URL for {payload.signal.value}")
        resp = await self._client.post(url, self._body(payload), self._content_type)
        response = decode_response(payload.signal, resp.body, resp.content_type)
        if response is None and resp.body:
            self._log.warning("could not decode the backend's response; treating the request as accepted",
                              key="bad_response", extra={"url": self._shown[payload.signal], "status": resp.status})
        if response is not None:
            check_partial_success(payload.signal, response, self._log)

    async def shutdown(self) -> None:
        if self._client.started:
            await self._client.close()
            self.settings.logger.info("OTLP/HTTP exporter stopped")


def create(settings: Settings, cfg: OTLPHTTPExporterConfig) -> OTLPHTTPExporter:
    return OTLPHTTPExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="otlphttp",
    config_type=OTLPHTTPExporterConfig,
    signals={Signal.TRACES: Stability.STABLE, Signal.METRICS: Stability.STABLE, Signal.LOGS: Stability.STABLE},
    create=create,
    description="Sends traces, metrics and logs over OTLP/HTTP (protobuf or JSON, gzip).",
)
