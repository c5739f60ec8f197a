"""The bearertokenauth extension: config, constant-time checks, token files that rotate, no token printed."""
from __future__ import annotations

import dataclasses
import hmac
from pathlib import Path
from typing import Any

import pytest

from extensions.bearertokenauth import FACTORY, FILE_CHECK_INTERVAL, BearerTokenAuth, BearerTokenAuthConfig
from pipeline.auth import ClientAuthenticator, ServerAuthenticator
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue
from pipeline.testing import FakeClock, nop_host, nop_settings

TOKEN = "tok-3f9a7c1e"


def decode(raw: dict[str, Any]) -> tuple[BearerTokenAuthConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(BearerTokenAuthConfig, raw, "extensions.bearertokenauth", issues)
    return cfg, issues


def make(raw: dict[str, Any]) -> BearerTokenAuth:
    cfg, issues = decode(raw)
    assert not issues
    ext = FACTORY.create(nop_settings("bearertokenauth", Kind.EXTENSION, None), cfg)
    assert isinstance(ext, BearerTokenAuth)
    return ext


@pytest.mark.parametrize(("raw", "key", "fragment"), [
    ({}, "token", "is required"),
    ({"token": "a", "tokens": ["b"]}, "tokens", "not both"),
    ({"tokens": ["a", ""]}, "tokens", "empty token"),
    ({"token": "a", "header": "X Token"}, "header", "header name"),
    ({"token": "a", "scheme": "Bearer x"}, "scheme", "one word"),
    ({"filename": "/nonexistent/token"}, "filename", "does not exist"),
    ({"token": "a", "tokn": "b"}, "tokn", "did you mean 'token'"),
])
def test_config_errors_name_the_key(raw: dict[str, Any], key: str, fragment: str) -> None:
    _cfg, issues = decode(raw)
    assert any(i.path == f"extensions.bearertokenauth.{key}" and fragment in i.message for i in issues), issues


def test_the_token_is_never_printed() -> None:
    cfg, _ = decode({"token": TOKEN, "tokens": [TOKEN]})
    assert TOKEN not in repr(cfg) and TOKEN not in str(cfg)


@pytest.mark.parametrize(("headers", "ok"), [
    ({"authorization": f"Bearer {TOKEN}"}, True),
    ({"authorization": f"bearer {TOKEN}"}, False),  # the Collector compares the scheme as written
    ({"authorization": f"Bearer {TOKEN}x"}, False),
    ({"authorization": f"Bearer {TOKEN[:-1]}"}, False),
    ({"authorization": TOKEN}, False),
    ({"authorization": ""}, False),
    ({"authorization": "Bearer ünïcode"}, False),
    ({}, False),
])
async def test_authenticate(headers: dict[str, str], ok: bool) -> None:
    ext = make({"token": TOKEN})
    await ext.start(nop_host())
    assert isinstance(ext, ServerAuthenticator) and isinstance(ext, ClientAuthenticator)
    assert ext.authenticate(headers) is ok
    assert ext.headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert ext.challenge == 'Bearer realm="otelpipe"'


async def test_custom_header_empty_scheme_and_several_tokens() -> None:
    ext = make({"tokens": ["one", "two"], "scheme": "", "header": "X-Api-Token"})
    await ext.start(nop_host())
    assert ext.authenticate({"x-api-token": "two"}) and ext.authenticate({"x-api-token": "one"})
    assert not ext.authenticate({"x-api-token": "three"}) and not ext.authenticate({"authorization": "one"})
    assert ext.headers() == {"X-Api-Token": "one"}


async def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    ext = make({"tokens": ["one", "two", "three"]})
    assert ext.authenticate({"authorization": "Bearer one"})  # matches the first, still compares all three
    assert len(calls) == 3


async def test_a_token_file_is_read_at_start_and_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    clock = FakeClock()
    cfg, _ = decode({"filename": str(path)})
    ext = BearerTokenAuth(dataclasses.replace(nop_settings("bearertokenauth", Kind.EXTENSION, None), clock=clock), cfg)
    await ext.start(nop_host())
    assert ext.authenticate({"authorization": "Bearer first-token"})
    path.write_text("second-token-longer\n")
    assert ext.authenticate({"authorization": "Bearer first-token"})  # a receiver looks once a second
    clock.advance(FILE_CHECK_INTERVAL)
    assert not ext.authenticate({"authorization": "Bearer first-token"})
    assert ext.authenticate({"authorization": "Bearer second-token-longer"})
    assert ext.headers() == {"Authorization": "Bearer second-token-longer"}
    path.write_text("")  # emptied mid-rotation: keep the last good token
    clock.advance(FILE_CHECK_INTERVAL)
    assert ext.authenticate({"authorization": "Bearer second-token-longer"})
    path.unlink()  # gone: keep it too
    clock.advance(FILE_CHECK_INTERVAL)
    assert ext.authenticate({"authorization": "Bearer second-token-longer"})


async def test_start_fails_on_an_empty_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    ext = make({"filename": str(path)})
    with pytest.raises(OSError, match="is empty"):
        await ext.start(nop_host())
