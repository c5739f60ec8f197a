"""The `bearertokenauth` extension: a static bearer token, checked on receivers and sent by exporters.

The Collector's bearertokenauthextension, with its keys: `token` (usually `${env:OTLP_TOKEN}`), or
`tokens` (any of them is accepted; an exporter sends the first), or `filename` (the token is the
file's content, read again whenever the file changes, so a mounted Kubernetes Secret can rotate),
`scheme` (default `Bearer`; empty sends and expects the bare token) and `header` (default
`Authorization`). An exporter checks the file before every request; a receiver at most once a
second, so a rotated token is accepted within a second.

A receiver that names it (`protocols.http.auth.authenticator: bearertokenauth`) refuses a request
whose header is not exactly `<scheme> <token>`: HTTP 401 with `WWW-Authenticate`, gRPC
UNAUTHENTICATED. The comparison is `hmac.compare_digest` against every accepted token, so its
time does not depend on how much of the token was right. An exporter that names it
(`auth: {authenticator: bearertokenauth}`) adds the header to every request. The token is a
`Secret`: it is never printed, in a log line, an error, `/status` or `otelpipe validate`.
"""
from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.component import ExtensionFactory, Host, Settings, Stability
from pipeline.config.types import Issue, Secret
from pipeline.logutil import RateLimitedLog

# How often a receiver looks at the token file (an exporter looks before every request it sends).
FILE_CHECK_INTERVAL = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BearerTokenAuthConfig:
    header: str = "Authorization"
    scheme: str = "Bearer"
    token: Secret = field(default_factory=lambda: Secret(""))
    tokens: tuple[Secret, ...] = ()
    filename: str = ""

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not self.token and not self.tokens and not self.filename:
            out.append(Issue("token", "is required: set token (e.g. '${env:OTLP_TOKEN}'), tokens or filename"))
        if self.token and self.tokens:
            out.append(Issue("tokens", "set either token or tokens, not both"))
        if any(not t for t in self.tokens):
            out.append(Issue("tokens", "must not hold an empty token"))
        if not self.header.strip() or any(c in self.header for c in " :\r\n"):
            out.append(Issue("header", "must be an HTTP header name, e.g. 'Authorization'"))
        if any(c in self.scheme for c in " \r\n"):
            out.append(Issue("scheme", "must be one word, e.g. 'Bearer' (or empty for the bare token)"))
        if self.filename and not Path(self.filename).is_file():
            out.append(Issue("filename", f"file {self.filename!r} does not exist or is not a file"))
        return out


def _file_state(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class BearerTokenAuth:
    """Both sides: `authenticate(headers)` for receivers, `headers()` for exporters."""

    def __init__(self, settings: Settings, cfg: BearerTokenAuthConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._header = cfg.header.lower()
        self._prefix = f"{cfg.scheme} " if cfg.scheme else ""
        self._log = RateLimitedLog(settings.logger)
        self._file_state: tuple[int, int, int] | None = None
        self._checked_at = -FILE_CHECK_INTERVAL
        self._expected: tuple[bytes, ...] = ()
        self._send: dict[str, str] = {}
        if not cfg.filename:
            self._use([t.reveal() for t in (cfg.tokens or (cfg.token,))])

    @property
    def challenge(self) -> str:
        return f'{self.cfg.scheme or "Bearer"} realm="otelpipe"'

    def _use(self, tokens: list[str]) -> None:
        self._expected = tuple(f"{self._prefix}{t}".encode() for t in tokens)
        self._send = {self.cfg.header: f"{self._prefix}{tokens[0]}"}

    def _read_file(self) -> None:
        """Read the token file if it changed since the last read; keep the old token if it cannot be read."""
        state = _file_state(self.cfg.filename)
        if state == self._file_state:
            return
        try:
            token = Path(self.cfg.filename).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            if not self._expected:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise OSError(f"cannot read the bearer token file {self.cfg.filename!r}: {reason}") from None
            self._log.warning("cannot read the bearer token file; still using the previous token", key="read",
                              extra={"token_file": self.cfg.filename, "error": type(e).__name__})
            return
        if not token:
            if not self._expected:
                raise OSError(f"the bearer token file {self.cfg.filename!r} is empty")
            self._log.warning("the bearer token file is empty; still using the previous token", key="empty",
                              extra={"token_file": self.cfg.filename})
            return
        self._file_state = state
        if self._expected:
            self.settings.logger.info("bearer token file changed: using the new token",
                                      extra={"token_file": self.cfg.filename})
        self._use([token])

    async def start(self, host: Host) -> None:
        if self.cfg.filename:
            self._read_file()

    async def shutdown(self) -> None:
        return None

    def authenticate(self, headers: Mapping[str, str]) -> bool:
        if self.cfg.filename:
            now = self.settings.clock()
            if now - self._checked_at >= FILE_CHECK_INTERVAL:  # a stat per request would cost more than the check
                self._checked_at = now
                self._read_file()
        got = headers.get(self._header)
        if got is None:
            return False
        presented = got.encode("utf-8", "surrogateescape")
        ok = False
        for expected in self._expected:  # every token is compared: the time does not say which one matched
            ok |= hmac.compare_digest(presented, expected)
        return ok

    def headers(self) -> Mapping[str, str]:
        if self.cfg.filename:
            self._read_file()
        return self._send


def create(settings: Settings, cfg: BearerTokenAuthConfig) -> BearerTokenAuth:
    return BearerTokenAuth(settings, cfg)


FACTORY = ExtensionFactory(
    type="bearertokenauth",
    config_type=BearerTokenAuthConfig,
    stability=Stability.BETA,
    create=create,
    description="Checks (receivers) or adds (exporters) a bearer token header; token from env or a watched file.",
)
