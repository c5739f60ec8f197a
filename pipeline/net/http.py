"""The HTTP client every HTTP exporter owns (OTLP/HTTP today; Loki, Datadog and PagerDuty next).

One `HTTPClient` wraps one aiohttp ClientSession (a connection pool): the exporter builds it from
its config, opens it in `start()` and closes it in `shutdown()` (both safe twice). It sends the base
headers (`User-Agent: otelpipe/<version>`, then the configured `headers`, which win as in the
Collector's confighttp), applies the `tls:` block, gzips bodies when `compression: gzip` (in a
worker thread above a size, since zlib releases the GIL and a big body takes milliseconds), never
follows redirects, and reads at most `max_response_bytes` of a response (the Collector's 64 KiB).
With `auth` (an exporter's `auth: {authenticator: ...}`), `start(host)` finds the authenticator
extension and every request carries the headers it gives (read per request: a token file may rotate).

`post()` returns the response of a 2xx and classifies everything else once, into the pipeline's
errors the exporter helper acts on:

- retryable (`RetryableError`, with `retry_after` from `Retry-After` in seconds or as an
  HTTP-date): the statuses in `retryable_statuses` (408, 429, 502, 503, 504 by default; OTLP/HTTP
  passes the spec's 429, 502, 503, 504), refused or reset connections, TLS handshake failures and
  truncated responses;
- `TooLargeError` for 413, so a caller can split the request and send the halves;
- permanent (`PermanentError`) for every other status, 3xx and 5xx included (the OTLP
  specification and the Collector's otlphttp exporter retry no 5xx but 502, 503 and 504);
- a connect timeout or the exporter helper's own deadline surface as `TimeoutError`, which the
  helper counts as a timeout and retries. The per-request deadline is the helper's, not ours.

Messages carry the URL redacted (`pipeline.redact`) and the backend's text redacted, never a secret.
"""
from __future__ import annotations

import asyncio
import datetime
import email.utils
import math
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from pipeline.auth import AuthConfig, ClientAuthenticator, client_authenticator
from pipeline.component import Host
from pipeline.config.types import Secret
from pipeline.errors import PermanentError, RetryableError, StartError, TooLargeError
from pipeline.net.tls import TLSClientConfig
from pipeline.net.useragent import USER_AGENT
from pipeline.redact import redact_text, redact_url

try:  # ISA-L: the same gzip streams, several times faster
    from isal import igzip as _igzip
except ImportError:  # pragma: no cover - isal ships wheels for the platforms otelpipe runs on
    _igzip = None  # type: ignore[assignment]

Compression = Literal["gzip", "none"]
ErrorDetail = Callable[[bytes, str], str]

RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
# Compressing a large body takes milliseconds: above this size it is done off the event loop.
COMPRESS_INLINE_MAX = 64 * 1024
# What the Collector's otlphttp exporter reads of a response; the rest is discarded with the connection.
MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_CONNECT_TIMEOUT = 30.0
SNIPPET = 200


@dataclass(frozen=True, slots=True)
class Response:
    """A 2xx response: its status, headers and (at most `max_response_bytes` of) its body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


def gzip_bytes(data: bytes) -> bytes:
    """`data` gzipped: by ISA-L at level 1 when `isal` is installed (several times zlib's speed at about
    zlib level 6's ratio; for a JSON logs body 0.66 us instead of 6.7 us per 400-byte record), else by zlib."""
    if _igzip is not None:
        return _igzip.compress(data, 1)
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    return c.compress(data) + c.flush()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).

    A value that is neither (or not finite) gives None, so the backoff decides; a date in the past gives 0.
    HTTP-dates are GMT, the asctime form included, which carries no zone.
    """
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def describe_body(body: bytes, content_type: str) -> str:
    """A short description of an error body: a JSON `message`, `error` or `errors`, or the start of a text body."""
    if not body:
        return ""
    ct = content_type.lower()
    msg = ""
    if ct.startswith("application/json") or ct.endswith("+json"):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return ""
        if isinstance(doc, dict):
            for key in ("message", "error", "errors"):
                value = doc.get(key)
                if isinstance(value, list):
                    value = "; ".join(str(v) for v in value if isinstance(v, str | int | float))
                if isinstance(value, str) and value:
                    msg = value
                    break
    elif ct.startswith("text/"):
        msg = body[:SNIPPET].decode("utf-8", "replace")
    return msg[:SNIPPET]


def status_error(status: int, shown_url: str, detail: str, headers: Mapping[str, str],
                 retryable_statuses: frozenset[int] = RETRYABLE_STATUSES) -> PermanentError | RetryableError:
    """The pipeline error for a non-2xx response; `shown_url` and `detail` must already be redacted."""
    message = f"POST {shown_url} returned HTTP {status}" + (f": {detail}" if detail else "")
    if status == 413:
        return TooLargeError(message)
    if status in retryable_statuses:
        return RetryableError(message, parse_retry_after(headers.get("Retry-After")))
    if 300 <= status < 400:
        message += (f" (redirect to {redact_url(headers.get('Location', ''))!r} not followed: "
                    "point the endpoint at the final URL)")
    return PermanentError(message)


class HTTPClient:
    """One connection pool for one exporter: opened by `start()`, closed by `close()`."""

    def __init__(self, *, headers: Mapping[str, Secret | str] | None = None, tls: TLSClientConfig | None = None,
                 compression: Compression = "none", retryable_statuses: frozenset[int] = RETRYABLE_STATUSES,
                 error_detail: ErrorDetail = describe_body, connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
                 max_response_bytes: int = MAX_RESPONSE_BYTES, compress_inline_max: int = COMPRESS_INLINE_MAX,
                 auth: AuthConfig | None = None) -> None:
        """`tls=None` uses the system's trust store for https URLs, as an exporter with only http URLs does.
        `auth` names an authenticator extension whose headers go on every request (found by `start(host)`)."""
        base: CIMultiDict[str] = CIMultiDict({"User-Agent": USER_AGENT})
        for name, value in (headers or {}).items():
            base[name] = value.reveal() if isinstance(value, Secret) else value
        self._headers = base
        self._tls = tls
        self._gzip = compression == "gzip"
        self._retryable = retryable_statuses
        self._error_detail = error_detail
        self._connect_timeout = connect_timeout
        self._max_response = max_response_bytes
        self._inline_max = compress_inline_max
        self._server_name = (tls.server_name_override or None) if tls is not None else None
        self._ssl: ssl.SSLContext | bool = True
        self._session: aiohttp.ClientSession | None = None
        self._auth = auth
        self._authenticator: ClientAuthenticator | None = None

    @property
    def started(self) -> bool:
        return self._session is not None

    async def start(self, host: Host | None = None) -> None:
        """Open the connection pool; reads the TLS files (off the event loop). A second call does nothing.
        With `auth`, `host` is required: the authenticator extension is looked up there."""
        if self._session is not None:
            return
        if self._auth is not None:
            if host is None:
                raise StartError("this exporter's auth needs the host: call HTTPClient.start(host)")
            self._authenticator = client_authenticator(host, self._auth)
        if self._tls is not None:
            ctx = await asyncio.to_thread(self._tls.ssl_context)
            # `tls.insecure` means plain text, which an https URL cannot be: it still verifies.
            self._ssl = ctx if ctx is not None else True
        self._session = aiohttp.ClientSession(
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
        )

    async def close(self) -> None:
        """Close the pool; safe without start() and twice."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def compress(self, body: bytes) -> bytes:
        """`body` gzipped when `compression: gzip` (big bodies in a worker thread), else as is."""
        if not self._gzip:
            return body
        if len(body) <= self._inline_max:
            return gzip_bytes(body)
        return await asyncio.to_thread(gzip_bytes, body)

    async def post(self, url: URL | str, body: bytes, content_type: str,
                   extra_headers: Mapping[str, str] | None = None) -> Response:
        """POST `body` (compressed here when configured); the 2xx response, or the classified error raised."""
        session = self._session
        if session is None:
            raise RetryableError(f"POST {redact_url(url)}: the HTTP client is not started")
        headers = {"Content-Type": content_type}
        if self._gzip:
            body = await self.compress(body)
            headers["Content-Encoding"] = "gzip"
        if self._authenticator is not None:
            headers.update(self._authenticator.headers())
        if extra_headers:
            headers.update(extra_headers)
        # Library exceptions may quote the URL (InvalidURL is the URL, ClientResponseError carries it):
        # errors hold the redacted URL and the redacted text of the exception.
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False, ssl=self._ssl,
                                    server_hostname=self._server_name) as resp:
                content = await _read_at_most(resp, self._max_response)
                status = resp.status
                resp_headers = resp.headers
        except aiohttp.InvalidURL:
            raise PermanentError(f"invalid URL {redact_url(url)}") from None
        except TimeoutError:
            raise  # a connect timeout or the helper's deadline: counted as a timeout and retried
        except (aiohttp.ClientError, OSError) as e:
            # Connection refused/reset, TLS handshake, truncated response: transient.
            raise RetryableError(f"POST {redact_url(url)} failed: {type(e).__name__}: {redact_text(str(e))}") from None
        except ValueError as e:
            # aiohttp refusing to build the request (e.g. Basic auth from the URL plus an Authorization
            # header): every retry would fail the same way.
            raise PermanentError(f"POST {redact_url(url)} could not be sent: {redact_text(str(e))}") from None
        if 200 <= status < 300:
            return Response(status, resp_headers, content)
        detail = redact_text(self._error_detail(content, resp_headers.get("Content-Type", "")))
        raise status_error(status, redact_url(url), detail, resp_headers, self._retryable)


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to `limit` bytes of the body; a longer body is cut (the connection is then closed, not reused)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
