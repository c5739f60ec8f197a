"""Request bodies: cut under the limits, only between items, every document once and in order."""
from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.datadog.exporter import series_body, series_docs
from exporters.datadog.intake import LOGS_LIMITS, SERIES_LIMITS, BodyBuilder, Limits
from exporters.datadog.logs import logs_body


def series(n: int, pad: int = 0) -> list[dict[str, Any]]:
    return [{"metric": f"m{i}", "type": 3, "points": [{"timestamp": 1, "value": i}], "tags": ["x" * pad]}
            for i in range(n)]


def inflate(body: bytes, compression: str) -> Any:
    raw = gzip.decompress(body) if compression == "gzip" else zlib.decompress(body) if compression == "deflate" \
        else body
    return orjson.loads(raw)


def test_small_requests_are_one_batch_in_each_compression() -> None:
    docs = series(3)
    for compression in ("gzip", "deflate", "none"):
        [batch], lost = BodyBuilder(series_body, series_docs, compression, SERIES_LIMITS).batches(docs, [1, 3])  # type: ignore[arg-type]
        assert lost == 0 and batch.items == 2 and inflate(batch.body, compression) == {"series": docs}


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=60), pad=st.integers(0, 300),
       compression=st.sampled_from(["gzip", "none"]))
def test_batches_fit_the_limits_and_keep_items_whole(sizes: list[int], pad: int, compression: str) -> None:
    limits = Limits(max_raw=3_000, max_sent=1_500, max_docs=20)
    cuts, n = [], 0
    for size in sizes:
        n += size
        cuts.append(n)
    docs = series(n, pad)
    builder = BodyBuilder(series_body, series_docs, compression, limits)  # type: ignore[arg-type]
    batches, lost = builder.batches(docs, cuts)
    sent = [d for b in batches for d in builder.documents(b)]
    for b in batches:
        got = builder.documents(b)
        assert len(b.body) <= limits.max_sent and len(got) <= limits.max_docs
        assert len(orjson.dumps(series_body(got))) <= limits.max_raw
        assert inflate(b.body, compression) == {"series": got}
        assert b.cuts[-1] == len(got)
    # items too large alone are given up whole; every other item is sent once, whole, in order
    assert sum(b.items for b in batches) + lost == len(sizes)
    items = [docs[a:b] for a, b in zip([0, *cuts], cuts)]
    at, missing = 0, 0
    for item in items:
        if sent[at:at + len(item)] == item:
            at += len(item)
        else:
            missing += 1
    assert at == len(sent) and missing == lost


def test_an_item_too_large_alone_is_counted() -> None:
    builder = BodyBuilder(series_body, series_docs, "none", Limits(max_raw=1_000, max_sent=1_000))
    batches, lost = builder.batches(series(3, pad=2_000)[:1] + series(2), [1, 3])
    assert lost == 1 and [b.items for b in batches] == [1]


def test_a_refused_batch_splits_in_halves_at_item_boundaries() -> None:
    builder = BodyBuilder(series_body, series_docs, "gzip", SERIES_LIMITS)
    [batch], _ = builder.batches(series(10), [2, 4, 6, 8, 10])
    halves, lost = builder.split(batch)
    assert lost == 0 and [h.cuts for h in halves] == [[2, 4], [2, 4, 6]]
    assert [d for h in halves for d in builder.documents(h)] == builder.documents(batch) == series(10)
    [single], _ = builder.batches(series(2), [2])
    assert builder.split(single) == ([], 1)


def test_logs_batches_hold_at_most_1000_entries() -> None:
    entries = [{"message": f"m{i}"} for i in range(2_500)]
    batches, lost = BodyBuilder(logs_body, logs_body, "gzip", LOGS_LIMITS).batches(entries, list(range(1, 2_501)))
    assert lost == 0 and [b.items for b in batches] == [1000, 1000, 500]
    assert [e for b in batches for e in inflate(b.body, "gzip")] == entries
