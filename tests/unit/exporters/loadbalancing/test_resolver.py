"""The static and DNS resolvers (DNS played by a test lookup, and once by the system resolver)."""
from __future__ import annotations

import asyncio

import pytest

from exporters.loadbalancing.config import DNSResolverConfig, StaticResolverConfig
from exporters.loadbalancing.resolver import DNSResolver, StaticResolver, lookup_host
from pipeline.config.types import Duration


async def test_static_resolver_gives_the_list_sorted_with_default_ports() -> None:
    r = StaticResolver(StaticResolverConfig(hostnames=("gw-b:4317", "gw-a", "[::1]:5317", "fd00::7")))
    assert await r.resolve() == ["[::1]:5317", "[fd00::7]:4317", "gw-a:4317", "gw-b:4317"]
    assert r.interval is None


async def test_dns_resolver_makes_one_backend_per_address_on_the_port() -> None:
    asked: list[str] = []

    async def lookup(name: str) -> list[str]:
        asked.append(name)
        return ["10.0.0.3", "10.0.0.1", "10.0.0.3", "fd00::2"]

    r = DNSResolver(DNSResolverConfig(hostname="gw-headless.obs.svc", port=5317), lookup)
    assert await r.resolve() == ["10.0.0.1:5317", "10.0.0.3:5317", "[fd00::2]:5317"]
    assert asked == ["gw-headless.obs.svc"] and r.interval == 5.0


async def test_dns_resolver_fails_on_no_address_and_on_timeout() -> None:
    async def nothing(name: str) -> list[str]:
        return []

    with pytest.raises(LookupError, match="no address"):
        await DNSResolver(DNSResolverConfig(hostname="gw"), nothing).resolve()

    never = asyncio.Event()

    async def hangs(name: str) -> list[str]:
        await never.wait()
        return []

    with pytest.raises(TimeoutError):
        await DNSResolver(DNSResolverConfig(hostname="gw", timeout=Duration(0.01)), hangs).resolve()


async def test_the_system_resolver_answers_for_localhost() -> None:
    assert "127.0.0.1" in await lookup_host("localhost")
    r = DNSResolver(DNSResolverConfig(hostname="127.0.0.1", port=4317))
    assert await r.resolve() == ["127.0.0.1:4317"]
