"""Where the backends come from: a fixed list (`static`) or a DNS name resolved every `interval` (`dns`).

Both answer `resolve()` with the backends as sorted `host:port` strings; the exporter
compares the answer with the backends it has and adds or removes the difference. A DNS
name is looked up as the Collector's resolver does (every A and AAAA address of the name,
each a backend on `port`), which for a Kubernetes headless Service is every ready pod.
A failed or empty lookup raises, and the exporter keeps the backends it had.

`lookup_host` is the system resolver (`getaddrinfo` in the event loop's executor); a test
passes its own `lookup` to play DNS.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from exporters.loadbalancing.config import DNSResolverConfig, StaticResolverConfig
from pipeline.net.endpoint import format_host_port

#: A DNS lookup: a host name → its IP addresses.
Lookup = Callable[[str], Awaitable[list[str]]]


async def lookup_host(hostname: str) -> list[str]:
    """Every IPv4 and IPv6 address `hostname` resolves to, through the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class StaticResolver:
    """The configured list, every time."""

    name = "static"
    interval: float | None = None  # resolved once, at start

    def __init__(self, cfg: StaticResolverConfig) -> None:
        self._endpoints = cfg.endpoints()

    async def resolve(self) -> list[str]:
        return list(self._endpoints)


class DNSResolver:
    """The addresses of `cfg.hostname`, each on `cfg.port`, looked up within `cfg.timeout`."""

    name = "dns"

    def __init__(self, cfg: DNSResolverConfig, lookup: Lookup | None = None) -> None:
        self.hostname = cfg.hostname
        self.interval: float | None = float(cfg.interval)
        self._port = cfg.port
        self._timeout = float(cfg.timeout)
        self._lookup = lookup

    async def resolve(self) -> list[str]:
        lookup = self._lookup or lookup_host
        async with asyncio.timeout(self._timeout):
            addresses = await lookup(self.hostname)
        endpoints = sorted({format_host_port(a, self._port) for a in addresses})
        if not endpoints:
            raise LookupError(f"{self.hostname} resolved to no address")
        return endpoints


Resolver = StaticResolver | DNSResolver
