"""`gzip_bytes` (the HTTP exporters' request compression): ISA-L when installed, zlib otherwise; both standard gzip."""
from __future__ import annotations

import gzip

import pytest

from pipeline.net import http

BODY = b'{"streams":[{"stream":{"service_name":"agent"},"values":[["1700000000000000000","tool call done"]]}]}' * 500


def test_isal_is_used_when_installed_and_writes_standard_gzip() -> None:
    assert vars(http)["_igzip"] is not None
    out = http.gzip_bytes(BODY)
    assert out[:2] == b"\x1f\x8b" and gzip.decompress(out) == BODY and len(out) < len(BODY) // 10


def test_without_isal_zlib_writes_the_same_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "_igzip", None)
    out = http.gzip_bytes(BODY)
    assert out[:2] == b"\x1f\x8b" and gzip.decompress(out) == BODY
    assert http.gzip_bytes(b"") and gzip.decompress(http.gzip_bytes(b"")) == b""
