"""Consistent hashing: even shares, and only about 1/N of the keys move when a backend comes or goes."""
from __future__ import annotations

import os
from zlib import crc32

import pytest

from exporters.loadbalancing.ring import BUCKETS, MASK, Ring

THREE = ["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"]
KEYS = [os.urandom(16) for _ in range(30_000)]


def owners(ring: Ring) -> list[str]:
    return [ring.endpoints[ring.table[crc32(k) & MASK]] for k in KEYS]


def test_every_backend_owns_an_even_share() -> None:
    for n in (2, 3, 5, 10):
        ring = Ring([f"10.1.{i}.7:4317" for i in range(n)])
        shares = [ring.table.count(i) / BUCKETS for i in range(n)]
        assert all(abs(s * n - 1) < 0.08 for s in shares), shares


def test_shares_are_even_whatever_the_endpoint_names() -> None:
    # ports picked by the OS differ every run; no set of names may skew the split (a ring of 100
    # virtual nodes per backend is often ±15 % off at three backends)
    for base in range(30_000, 60_000, 1_500):
        ring = Ring([f"127.0.0.1:{base + d}" for d in (0, 17, 401)])
        assert all(abs(ring.table.count(i) / BUCKETS * 3 - 1) < 0.05 for i in range(3))


def test_removing_a_backend_moves_only_its_own_keys() -> None:
    before, after = owners(Ring(THREE)), owners(Ring([THREE[0], THREE[2]]))
    moved = [(a, b) for a, b in zip(before, after) if a != b]
    assert {a for a, _ in moved} == {THREE[1]}
    assert abs(len(moved) / len(KEYS) - 1 / 3) < 0.03
    # and its keys spread over both of the others
    assert {b for _, b in moved} == {THREE[0], THREE[2]}


def test_adding_a_backend_moves_about_one_key_in_n_plus_one_and_only_to_it() -> None:
    before, after = owners(Ring(THREE)), owners(Ring([*THREE, "10.0.0.4:4317"]))
    moved = [(a, b) for a, b in zip(before, after) if a != b]
    assert {b for _, b in moved} == {"10.0.0.4:4317"}
    assert abs(len(moved) / len(KEYS) - 1 / 4) < 0.03


def test_the_ring_depends_only_on_the_set_of_endpoints() -> None:
    a, b = Ring(THREE), Ring(list(reversed(THREE)) + [THREE[0]])
    assert a.endpoints == b.endpoints and a.table == b.table
    assert Ring(["only:4317"]).table == [0] * BUCKETS


def test_a_ring_needs_a_backend() -> None:
    with pytest.raises(ValueError):
        Ring([])
