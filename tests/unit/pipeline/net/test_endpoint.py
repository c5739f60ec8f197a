"""Endpoint: listener and dial-target parsing, the config decoder's hook, and real sockets bound/dialled with it."""
from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest

from pipeline.config.types import Issue, decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.net.endpoint import Endpoint

SECRETS = ("s3cr3tpw", "K123")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


# ---------------------------------------------------------------- listeners

@pytest.mark.parametrize(("text", "host", "port", "shown"), [
    ("0.0.0.0:4317", "0.0.0.0", 4317, "0.0.0.0:4317"),
    (" localhost:8888 ", "localhost", 8888, "localhost:8888"),
    (":8125", "", 8125, ":8125"),
    ("[::1]:4318", "::1", 4318, "[::1]:4318"),
    ("[::]:0", "::", 0, "[::]:0"),
    ("[fe80::1%eth0]:9", "fe80::1%eth0", 9, "[fe80::1%eth0]:9"),
    ("::1:4317", "::1", 4317, "[::1]:4317"),  # unbracketed IPv6: the last ':' splits, as before
    ("my-host.example_1:65535", "my-host.example_1", 65535, "my-host.example_1:65535"),
])
def test_listen_parses(text: str, host: str, port: int, shown: str) -> None:
    ep = Endpoint.listen(text)
    assert (ep.host, ep.port, ep.scheme) == (host, port, "")
    assert str(ep) == ep.address == shown


@pytest.mark.parametrize(("text", "fragment"), [
    ("http://0.0.0.0:4317", "without a scheme"),
    ("localhost", "missing ':port'"),
    ("localhost:http", "the port is not a number"),
    ("localhost:+80", "the port is not a number"),
    ("localhost:", "the port is not a number"),
    ("0.0.0.0:99999", "port must be 0-65535"),
    ("[::1:4317", "write [ipv6]:port"),
    ("[zz]:4317", "not a host name or an IP address"),
    ("my host:4317", "not a host name or an IP address"),
    ("a/b:4317", "not a host name or an IP address"),
])
def test_listen_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint") as err:
        Endpoint.listen(text)
    assert fragment in str(err.value)


@pytest.mark.parametrize("text", ["user:s3cr3tpw@0.0.0.0:4317", "0.0.0.0:4317?api_key=K123", "0.0.0.0:4317#K123",
                                  "http://user:s3cr3tpw@0.0.0.0:4317/?api_key=K123"])
def test_listen_never_prints_secrets(text: str) -> None:
    with pytest.raises(ValueError) as err:
        Endpoint.listen(text)
    assert "0.0.0.0:4317" in str(err.value)
    assert_no_secret(str(err.value))


@pytest.mark.parametrize(("text", "local"), [
    ("0.0.0.0:4317", "127.0.0.1:4317"),
    (":4317", "127.0.0.1:4317"),
    ("[::]:4317", "[::1]:4317"),
    ("127.0.0.2:4317", "127.0.0.2:4317"),
    ("localhost:4317", "localhost:4317"),
])
def test_local_address_of_a_wildcard_is_loopback(text: str, local: str) -> None:
    assert str(Endpoint.listen(text).local()) == local


def test_bind_address_and_with_port() -> None:
    ep = Endpoint.listen(":0")
    assert (ep.is_wildcard, ep.bind_host, ep.bind_address) == (True, "0.0.0.0", "0.0.0.0:0")
    assert str(ep.with_port(4318).local()) == "127.0.0.1:4318"
    assert not Endpoint.listen("127.0.0.1:1").is_wildcard
    assert Endpoint.listen("[::1]:0").bind_address == "[::1]:0"


@pytest.mark.parametrize("text", [":0", "0.0.0.0:0", "127.0.0.1:0", "[::]:0", "[::1]:0"])
async def test_a_wildcard_listener_is_reached_through_its_local_address(text: str) -> None:
    """Bind a real server where the endpoint says, then dial `with_port(bound).local()`."""
    ep = Endpoint.listen(text)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await got.put(await reader.readexactly(5))
        writer.close()

    family = socket.AF_INET6 if ":" in ep.bind_host else socket.AF_INET
    server = await asyncio.start_server(handle, ep.bind_host, ep.port, family=family)
    try:
        bound = server.sockets[0].getsockname()[1]
        local = ep.with_port(bound).local()
        _, writer = await asyncio.open_connection(local.host, local.port)
        writer.write(b"hello")
        await writer.drain()
        async with asyncio.timeout(5):
            assert await got.get() == b"hello"
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------- dial targets

@pytest.mark.parametrize(("text", "address", "scheme", "plain_if_insecure", "plain_if_secure"), [
    ("collector:4317", "collector:4317", "", True, False),
    ("http://collector:4317", "collector:4317", "http", True, True),
    ("https://collector:4317", "collector:4317", "https", False, False),
    ("https://collector:4317/", "collector:4317", "https", False, False),
    ("[::1]:4317", "[::1]:4317", "", True, False),
    ("http://::1:4317", "[::1]:4317", "http", True, True),
])
def test_dial_parses_and_the_scheme_chooses_tls(text: str, address: str, scheme: str, plain_if_insecure: bool,
                                                plain_if_secure: bool) -> None:
    ep = Endpoint.dial(text)
    assert (ep.address, ep.scheme) == (address, scheme)
    assert str(ep) == (f"{scheme}://{address}" if scheme else address)
    assert ep.plaintext(insecure=True) is plain_if_insecure
    assert ep.plaintext(insecure=False) is plain_if_secure


@pytest.mark.parametrize(("text", "fragment"), [
    ("collector", "missing ':port'"),
    ("ftp://collector:4317", "unsupported scheme 'ftp'"),
    ("https://collector:4317/v1/traces", "has no path"),
    (":4317", "host is missing"),
    ("collector:0", "port 0 cannot be dialled"),
    ("collector:99999", "0-65535"),
])
def test_dial_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        Endpoint.dial(text)
    assert fragment in str(err.value)


@pytest.mark.parametrize(("text", "fragment"), [
    ("http://user:s3cr3tpw@collector:4317", "credentials"),
    ("user:s3cr3tpw@collector:4317", "credentials"),
    ("collector:4317?api_key=K123", "query"),
    ("https://collector:4317/otlp?api_key=K123", "query"),
    ("collector:4317#K123", "fragment"),
])
def test_dial_refuses_secrets_without_printing_them(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        Endpoint.dial(text)
    assert fragment in str(err.value) and "collector:4317" in str(err.value)
    assert_no_secret(str(err.value))


# ---------------------------------------------------------------- the config decoder's hook

@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerConfig:
    endpoint: Endpoint = field(default_factory=lambda: Endpoint.listen("localhost:4317"))
    admin: Endpoint | None = None

    def validate(self) -> list[Issue]:
        return [Issue("endpoint", "port 1 is reserved for this test")] if self.endpoint.port == 1 else []


def decode(data: object) -> tuple[ListenerConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    return decode_dataclass(ListenerConfig, data, "receivers.x", issues), issues


def test_decoder_parses_an_endpoint_once_and_keeps_defaults() -> None:
    cfg, issues = decode({"endpoint": "0.0.0.0:4318", "admin": "[::1]:0"})
    assert issues == []
    assert cfg.endpoint == Endpoint("0.0.0.0", 4318)
    assert cfg.admin == Endpoint("::1", 0)
    default, issues = decode({})
    assert issues == [] and default.endpoint == Endpoint("localhost", 4317) and default.admin is None
    _, issues = decode({"endpoint": "0.0.0.0:1"})  # validate() runs on the parsed value
    assert [(i.path, i.message) for i in issues] == [("receivers.x.endpoint", "port 1 is reserved for this test")]


@pytest.mark.parametrize(("value", "fragment"), [
    ("0.0.0.0", "missing ':port'"),
    ("http://user:s3cr3tpw@0.0.0.0:4317/?api_key=K123", "without a scheme"),
    ("user:s3cr3tpw@0.0.0.0:4317", "no user name, password"),
    (4317, "got number 4317"),
    (None, "got nothing (null)"),
    ({"host": "x"}, "got a mapping"),
])
def test_decoder_reports_a_bad_endpoint_at_its_key_path(value: object, fragment: str) -> None:
    cfg, issues = decode({"endpoint": value})
    assert [i.path for i in issues] == ["receivers.x.endpoint"]
    assert fragment in issues[0].message
    assert_no_secret(issues[0].message)
    assert cfg is not None and cfg.endpoint is None  # no value: cross-checks skip it


def test_decoder_reports_every_bad_endpoint() -> None:
    _, issues = decode({"endpoint": "nope", "admin": "also:nope"})
    assert [i.path for i in issues] == ["receivers.x.endpoint", "receivers.x.admin"]


def test_an_endpoint_equals_its_text() -> None:
    """So a config field that changes from str to Endpoint still equals what the YAML (or a test) wrote."""
    ep = Endpoint.listen("0.0.0.0:4317")
    assert ep == "0.0.0.0:4317" and "0.0.0.0:4317" == ep
    assert ep == Endpoint("0.0.0.0", 4317) and ep != Endpoint("0.0.0.0", 4318) and ep != "0.0.0.0:4318"
    assert Endpoint.dial("http://c:1") == "http://c:1" and Endpoint.dial("http://c:1") != Endpoint.dial("c:1")
    assert {ep: 1}["0.0.0.0:4317"] == 1 and len({ep, Endpoint("0.0.0.0", 4317)}) == 1
    assert ep != 4317
