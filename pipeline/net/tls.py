"""TLS client settings shared by every exporter (the `tls:` block, as the Collector's configtls).

`insecure` means plain text, and only a gRPC exporter dialling `host:port` reads it (an `http://`
or `https://` endpoint says it itself); `insecure_skip_verify` keeps TLS but trusts any certificate.
"""
from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pipeline.clock import SYSTEM_CLOCK, Clock
from pipeline.config.types import Duration, Issue
from pipeline.logutil import RateLimitedLog

FileKey = Literal["ca_file", "cert_file", "key_file"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSClientConfig:
    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name_override: str = ""

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, key)
            if value and not Path(value).is_file():
                out.append(Issue(key, f"file {value!r} does not exist or is not a file"))
        if bool(self.cert_file) != bool(self.key_file):
            out.append(Issue("cert_file", "cert_file and key_file must be given together (client certificate)"))
        return out

    def read(self, name: FileKey) -> bytes | None:
        """The bytes of `ca_file`, `cert_file` or `key_file` (gRPC takes PEM bytes, not paths), or None."""
        value: str = getattr(self, name)
        return Path(value).read_bytes() if value else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSLContext for HTTP clients, or None for plain text (`insecure: true`). Reads files: call it once."""
        if self.insecure:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


# --- server side -------------------------------------------------------------------------------------------------

TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
                "1.3": ssl.TLSVersion.TLSv1_3}
DEFAULT_MIN_VERSION = "1.2"  # the Collector's configtls default


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSServerConfig:
    """A listener's `tls:` block (the Collector's configtls.ServerConfig).

    `cert_file`/`key_file` are the server's certificate chain and key; `client_ca_file` turns on
    mutual TLS (a client must present a certificate signed by it). The certificate and key files
    are watched: a handshake after one of them changed (or, with `reload_interval`, after that much
    time) loads them again, so a rotated certificate is served without a restart and without
    closing a connection. A change of the client CA file alone reloads only with
    `reload_client_ca_file: true`, as in the Collector (every reload reads it again anyway).
    """

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    reload_client_ca_file: bool = False
    min_version: str = DEFAULT_MIN_VERSION
    max_version: str = ""
    reload_interval: Duration = Duration(0.0)

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not self.cert_file or not self.key_file:
            out.append(Issue("cert_file" if not self.cert_file else "key_file",
                             "is required: a TLS listener needs cert_file and key_file (PEM)"))
        for key in ("cert_file", "key_file", "client_ca_file"):
            value = getattr(self, key)
            if value and not Path(value).is_file():
                out.append(Issue(key, f"file {value!r} does not exist or is not a file"))
        for key in ("min_version", "max_version"):
            value = getattr(self, key)
            if value and value not in TLS_VERSIONS:
                out.append(Issue(key, f"invalid TLS version {value!r}: must be one of {', '.join(TLS_VERSIONS)}"))
        low, high = TLS_VERSIONS.get(self.min_version or DEFAULT_MIN_VERSION), TLS_VERSIONS.get(self.max_version)
        if low is not None and high is not None and low > high:
            out.append(Issue("max_version", f"{self.max_version} is lower than min_version {self.min_version}"))
        if self.reload_interval < 0:
            out.append(Issue("reload_interval", "must not be negative; 0 reloads only when a file changes"))
        return out

    def watched_files(self) -> tuple[str, ...]:
        """The files whose change reloads the certificate: the client CA too with `reload_client_ca_file`."""
        ca = self.client_ca_file if self.reload_client_ca_file else ""
        return tuple(f for f in (self.cert_file, self.key_file, ca) if f)

    def ssl_context(self) -> ssl.SSLContext:
        """A server SSLContext from the files as they are now (raises OSError/ssl.SSLError when they do not load)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[self.min_version or DEFAULT_MIN_VERSION]
        if self.max_version:
            ctx.maximum_version = TLS_VERSIONS[self.max_version]
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(cafile=self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


# Errors a half-rotated or broken set of certificate files raises while loading.
LOAD_ERRORS = (OSError, ssl.SSLError, ValueError)
FileState = tuple[tuple[int, int, int] | None, ...]


def _file_state(paths: tuple[str, ...]) -> FileState:
    """(inode, size, mtime) of each file, None for one that is missing: a change means "load again"."""
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class CertificateReloader(Generic[T]):
    """What a listener's handshakes use, loaded from a `TLSServerConfig`'s files, reloaded when they change.

    `load` turns the files into what the transport takes (an SSLContext for aiohttp, a grpc
    certificate configuration). Each new handshake calls `refresh()`, which costs a few `stat`
    calls: when a file changed (or `reload_interval` passed) it loads them again. A load that
    fails (a certificate written before its key) keeps serving the previous certificate, logs a
    warning and counts `result="failed"`; the next change tries again. Open connections are
    never touched: only new handshakes see the new certificate.
    """

    def __init__(self, cfg: TLSServerConfig, load: Callable[[], T], logger: logging.LoggerAdapter[logging.Logger],
                 on_reload: Callable[[str], None], clock: Clock = SYSTEM_CLOCK) -> None:
        self._cfg = cfg
        self._files = cfg.watched_files()
        self._load = load
        self._interval = float(cfg.reload_interval)
        self._clock = clock
        self._log = RateLimitedLog(logger)
        self._logger = logger
        self._on_reload = on_reload
        self._state = _file_state(self._files)
        self.value = load()  # raises: a listener whose certificate does not load does not start
        self._loaded_at = clock()

    def refresh(self) -> bool:
        """Load the files again if they changed or `reload_interval` passed; True when `value` is new."""
        state = _file_state(self._files)
        now = self._clock()
        if state == self._state and not (self._interval and now - self._loaded_at >= self._interval):
            return False
        self._state, self._loaded_at = state, now
        try:
            value = self._load()
        except LOAD_ERRORS as e:
            self._on_reload("failed")
            self._log.warning("cannot reload the TLS certificate; still serving the previous one",
                              key="tls-reload", extra={"files": list(self._files), "error": str(e)})
            return False
        self.value = value
        self._on_reload("ok")
        self._logger.info("TLS certificate reloaded", extra={"files": list(self._files)})
        return True


def server_ssl_context(cfg: TLSServerConfig, logger: logging.LoggerAdapter[logging.Logger],
                       on_reload: Callable[[str], None], clock: Clock = SYSTEM_CLOCK) -> ssl.SSLContext:
    """A server SSLContext for an asyncio listener whose certificates follow their files.

    Every handshake goes through the context's `sni_callback` (OpenSSL calls it for every
    ClientHello, with or without a server name), which refreshes the reloader and switches the
    connection to the newest context.
    """
    reloader = CertificateReloader(cfg, cfg.ssl_context, logger, on_reload, clock)
    base = reloader.value

    def pick(conn: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        reloader.refresh()
        if reloader.value is not base:
            conn.context = reloader.value

    base.sni_callback = pick
    return base
