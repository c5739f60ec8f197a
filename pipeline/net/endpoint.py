"""`Endpoint`: one `host:port` address, parsed once where the config is read.

Two spellings exist, as in the Collector:

- a listener (`Endpoint.listen`, also what the config decoder calls for an `Endpoint` field):
  `host:port`, `[ipv6]:port` or `:port`; an empty or wildcard host (`0.0.0.0`, `::`) binds every
  interface, and `local()` gives the loopback address a local client dials instead;
- a gRPC dial target (`Endpoint.dial`): `host:port`, or `http://host:port` / `https://host:port`,
  where the scheme chooses plain text or TLS over the `tls.insecure` flag.

An endpoint never holds user info, a query or a fragment (both spellings refuse them), so it can be
printed anywhere as is; the text of a refused one is only ever shown redacted (`pipeline.redact`).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from pipeline.redact import redact_url

Scheme = Literal["", "http", "https"]

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
# A host as written: a name or IPv4 address, or (bracketed, or bare when it holds ':') an IPv6 address
# with an optional zone. Anything else (spaces, '/', '@', '%' outside a zone) is not a host.
_NAME_RE = re.compile(r"[A-Za-z0-9._\-]*")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+(?:%[0-9A-Za-z._\-]+)?")


@dataclass(frozen=True, slots=True, eq=False)
class Endpoint:
    """A parsed `host:port` (plus, for a dial target, the scheme it was written with).

    It compares equal to its text (`str(ep)`) as well as to an equal Endpoint, so a config field that
    changes from `str` to `Endpoint` still equals the text written in the YAML or a test.
    """

    host: str
    port: int
    scheme: Scheme = ""

    # -------------------------------------------------------------- parsing

    @classmethod
    def listen(cls, text: str) -> Endpoint:
        """A listener address; raises ValueError saying what is wrong (with the text redacted)."""
        stripped = text.strip()
        shown = redact_url(stripped)
        if "://" in stripped:
            raise ValueError(f"invalid endpoint {shown!r}: write host:port without a scheme, e.g. '0.0.0.0:4317'")
        if any(c in stripped for c in "@?#"):
            raise ValueError(f"invalid endpoint {shown!r}: a listener address is host:port, "
                             "with no user name, password, query or fragment")
        host, port = _split_host_port(stripped, shown)
        return cls(host, port)

    @classmethod
    def dial(cls, text: str) -> Endpoint:
        """A gRPC target: `host:port` or `http(s)://host:port`; a host and a non-zero port are required.

        User info, a query or a fragment are refused first, and said without their contents, so
        nothing after that check can print a secret.
        """
        stripped = text.strip()
        shown = redact_url(stripped)
        _refuse_secrets(stripped, shown)
        scheme: Scheme = ""
        rest = stripped
        name, sep, after = stripped.partition("://")
        if sep:
            if name == "http":
                scheme = "http"
            elif name == "https":
                scheme = "https"
            else:
                raise ValueError(f"unsupported scheme '{name}' in {stripped!r}: write host:port, "
                                 "http://host:port (plain text) or https://host:port (TLS)")
            rest, slash, path = after.partition("/")
            if slash and path:
                raise ValueError(f"a gRPC endpoint has no path: write {name}://{rest} instead of {stripped!r}")
        host, port = _split_host_port(rest, redact_url(rest))
        if not host:
            raise ValueError(f"invalid endpoint {stripped!r}: the host is missing, e.g. 'collector:4317'")
        if port == 0:
            raise ValueError(f"invalid endpoint {stripped!r}: port 0 cannot be dialled")
        return cls(host, port, scheme)

    @classmethod
    def from_config(cls, value: object) -> Endpoint:
        """The config decoder's hook (`pipeline.config.types.ParsesItself`): a listener address."""
        if not isinstance(value, str):
            got = ("nothing (null)" if value is None else f"boolean {value}" if isinstance(value, bool)
                   else f"number {value}" if isinstance(value, (int, float))
                   else "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list)
                   else type(value).__name__)
            # ValueError, not TypeError: the decoder reports a ValueError at the key path.
            raise ValueError(f"expected an endpoint like '0.0.0.0:4317' (host:port), got {got}")
        return cls.listen(value)

    # -------------------------------------------------------------- using

    @property
    def address(self) -> str:
        """`host:port`, `[v6]:port` or `:port`, without the scheme: what a socket or a gRPC channel takes."""
        return format_host_port(self.host, self.port)

    @property
    def is_wildcard(self) -> bool:
        """Whether a listener on this address binds every interface."""
        return self.host in WILDCARD_HOSTS

    @property
    def bind_host(self) -> str:
        """The host to bind: an empty host means every IPv4 interface, as `0.0.0.0`."""
        return self.host or "0.0.0.0"

    @property
    def bind_address(self) -> str:
        """`bind_host:port`, for servers that take one string (grpc `add_insecure_port`)."""
        return format_host_port(self.bind_host, self.port)

    def with_port(self, port: int) -> Endpoint:
        """The same host with the port actually bound (after listening on port 0)."""
        return dataclasses.replace(self, port=port)

    def local(self) -> Endpoint:
        """The address a local client dials: a wildcard bind is reached through loopback."""
        if not self.is_wildcard:
            return self
        return dataclasses.replace(self, host="::1" if ":" in self.host else "127.0.0.1")

    def plaintext(self, insecure: bool) -> bool:
        """Whether to dial without TLS: `http://` says yes, `https://` says no, else `tls.insecure` decides."""
        if self.scheme:
            return self.scheme == "http"
        return insecure

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}" if self.scheme else self.address

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Endpoint):
            return (self.host, self.port, self.scheme) == (other.host, other.port, other.scheme)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))  # equal to its text, so hashed as its text


def format_host_port(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refuse_secrets(text: str, shown: str) -> None:
    if "@" in text:
        raise ValueError(f"a gRPC endpoint cannot carry credentials ({shown!r}): remove 'user:password@' "
                         "and send them as a header instead, e.g. headers: {authorization: ...}")
    if "?" in text or "#" in text:
        part = "query string" if "?" in text else "fragment"
        raise ValueError(f"a gRPC endpoint has no {part} ({shown!r}): write host:port, and send keys as "
                         "headers instead, e.g. headers: {api-key: ...}")


def _split_host_port(text: str, shown: str) -> tuple[str, int]:
    """`host:port` → (host, port); the host loses its IPv6 brackets and may be empty."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid endpoint {shown!r}: write [ipv6]:port")
        host_ok = bool(_IPV6_RE.fullmatch(host))
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid endpoint {shown!r}: missing ':port', e.g. '0.0.0.0:4317'")
        host_ok = bool((_IPV6_RE if ":" in host else _NAME_RE).fullmatch(host))
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"invalid endpoint {shown!r}: the port is not a number")
    n = int(port)
    if not 0 <= n <= 65535:
        raise ValueError(f"invalid endpoint {shown!r}: port must be 0-65535")
    if not host_ok:
        raise ValueError(f"invalid endpoint {shown!r}: the host is not a host name or an IP address")
    return host, n
