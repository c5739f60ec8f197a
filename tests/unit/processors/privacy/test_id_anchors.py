"""The Python walker's id anchor scan (`walker.IdAnchorScan`) on every installed scanner backend: every
occurrence of every selected id anchor holds an offset, on random and hostile bytes."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.privacy.scanner import available_backends
from processors.privacy.walker import PF_HEX, PF_NUM, PF_ULID, PF_UUID, IdAnchorScan

_ANCHORS = {
    PF_UUID: re.compile(rb"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"),
    PF_NUM: re.compile(rb"/[0-9]"),
    PF_HEX: re.compile(rb"[0-9a-fA-F]{16}"),
    PF_ULID: re.compile(rb"[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}"),
}
_ALPHABET = b"0123456789abcdefABCDEFGHJKMNPXYZilou-/{} .\x00\x0a\x80\xff"
_SCANS = {backend: IdAnchorScan(backend) for backend in available_backends()}


def _occurrences(rx: re.Pattern[bytes], data: bytes) -> list[tuple[int, int]]:
    out = []
    m = rx.search(data)
    while m is not None:  # overlapping ones too
        out.append(m.span())
        m = rx.search(data, m.start() + 1)
    return out


def _check(backend: str, data: bytes, flags: int) -> None:
    offsets = _SCANS[backend].scan(data, flags)
    assert offsets == sorted(offsets)
    assert all(0 <= o < len(data) for o in offsets)
    for f, rx in _ANCHORS.items():
        if flags & f:
            for a, b in _occurrences(rx, data):
                assert any(a <= o < b for o in offsets), (backend, f, data[a:b])


@pytest.mark.parametrize("backend", sorted(_SCANS))
def test_every_id_anchor_holds_an_offset_on_the_shared_load(backend: str) -> None:
    data = (b"\x0a\x1f/v1/agents/3f2c8a1e-9b7d-4c2e-8f1a-0123456789ab/runs/12345\x12\x1a01ARZ3NDEKTSV4RRFFQ69G5FAV"
            b"\x22\x10deadbeefcafebabe0123\x2a\x05/7/8/" + b"a" * 40 + b"-abcd-ABCD-1234-abcd-1234-")
    for flags in range(1, 16):
        _check(backend, data, flags)


@pytest.mark.parametrize("backend", sorted(_SCANS))
@settings(max_examples=400, deadline=None)
@given(data=st.lists(st.sampled_from(list(_ALPHABET)), max_size=300).map(bytes), flags=st.integers(1, 15))
def test_every_id_anchor_holds_an_offset_on_random_bytes(backend: str, data: bytes, flags: int) -> None:
    _check(backend, data, flags)


@pytest.mark.parametrize("backend", sorted(_SCANS))
def test_nothing_to_find(backend: str) -> None:
    assert _SCANS[backend].scan(b"", 15) == []
    assert _SCANS[backend].scan(b"no ids here: /v1/users/me", 15) == []
