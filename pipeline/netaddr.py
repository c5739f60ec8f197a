"""Endpoint parsing shared by every listener and client (`host:port`, `[::1]:4317`, `:8888`)."""
from __future__ import annotations

from pipeline.redact import redact_url


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Split `host:port`; an empty host means all interfaces. Raises ValueError saying what is wrong."""
    text = endpoint.strip()
    shown = redact_url(text)
    if "://" in text:
        raise ValueError(f"invalid endpoint {shown!r}: write host:port without a scheme, e.g. '0.0.0.0:4317'")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid endpoint {shown!r}: write [ipv6]:port")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid endpoint {shown!r}: missing ':port', e.g. '0.0.0.0:4317'")
    try:
        n = int(port)
    except ValueError:
        raise ValueError(f"invalid endpoint {shown!r}: the port is not a number") from None
    if not 0 <= n <= 65535:
        raise ValueError(f"invalid endpoint {shown!r}: port must be 0-65535")
    return host, n


def format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
