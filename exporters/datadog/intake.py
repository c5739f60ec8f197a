"""Request bodies for the Datadog intakes: JSON by orjson, compressed, cut under the documented limits.

Limits, from Datadog's API reference:

- `POST /api/v2/series`: at most 512,000 bytes as sent, and a compressed body must inflate to
  less than 5,242,880 bytes;
- `POST /api/v2/logs`: at most 5 MB uncompressed and 1,000 entries per request (a single log over
  1 MB is truncated by Datadog).

`BodyBuilder` cuts a request's documents (series or log entries) into batches that fit, only
between data items (all the series of one OTLP data point travel together, so a batch knows how
many points it carries). It guesses how many documents fit from the sizes it saw before, checks
every body it builds, and halves a batch that is still too big; an item too big on its own is
given up (`too_large`). `split()` halves a batch the intake refused with 413.
`text_batches()` does the same for series the C renderer (`_ddwire`) already wrote as JSON text:
a body is cut out of that text between data points and compressed in pieces, so neither a
document object per series nor the uncompressed body is ever made.

gzip is `pipeline.net.http.gzip_bytes` (ISA-L's when `isal` is installed); deflate (zlib framing)
is ISA-L's too, at level 1, else zlib's.
"""
from __future__ import annotations

import bisect
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from exporters.datadog.config import Compression
from pipeline.net.http import gzip_bytes
from pipeline.wire import Buffer

try:  # ISA-L: the same zlib streams, several times faster
    from isal import isal_zlib
except ImportError:  # pragma: no cover - isal ships wheels for every platform otelpipe runs on
    isal_zlib = None  # type: ignore[assignment]

# What one request may hold, as the API reference says (`max_sent` applies to the body as sent).
SERIES_MAX_RAW = 5_242_880 - 1
SERIES_MAX_SENT = 512_000
LOGS_MAX_RAW = 5_000_000
LOGS_MAX_ENTRIES = 1_000
# Batches are planned to this share of the limits, so the estimate rarely overshoots.
_FILL = 0.85


def _deflate(data: bytes) -> bytes:
    if isal_zlib is not None:
        return isal_zlib.compress(data, 1)
    return zlib.compress(data, 6)


def _identity(data: bytes) -> bytes:
    return data


def _gunzip(data: bytes) -> bytes:
    return zlib.decompress(data, 31)


INFLATERS: dict[Compression, Callable[[bytes], bytes]] = {"gzip": _gunzip, "deflate": zlib.decompress,
                                                          "none": _identity}
COMPRESSORS: dict[Compression, Callable[[bytes], bytes]] = {"gzip": gzip_bytes, "deflate": _deflate,
                                                            "none": _identity}


def _streaming(wbits: int) -> Callable[[Sequence[Buffer]], bytes]:
    """A compressor of a body given in parts (never joined uncompressed): gzip (wbits 31) or zlib framing (15)."""
    def compress(parts: Sequence[Buffer]) -> bytes:
        c = isal_zlib.compressobj(1, zlib.DEFLATED, wbits) if isal_zlib is not None else \
            zlib.compressobj(6, zlib.DEFLATED, wbits)
        return b"".join([*map(c.compress, parts), c.flush()])
    return compress


def _joined(parts: Sequence[Buffer]) -> bytes:
    return b"".join(parts)


PART_COMPRESSORS: dict[Compression, Callable[[Sequence[Buffer]], bytes]] = {
    "gzip": _streaming(31), "deflate": _streaming(15), "none": _joined}


@dataclass(frozen=True, slots=True)
class Limits:
    max_raw: int
    max_sent: int
    max_docs: int = 0  # 0: no limit on the number of documents


SERIES_LIMITS = Limits(SERIES_MAX_RAW, SERIES_MAX_SENT)
LOGS_LIMITS = Limits(LOGS_MAX_RAW, LOGS_MAX_RAW, LOGS_MAX_ENTRIES)


@dataclass(slots=True)
class Batch:
    """One request: its body as sent, and where its items end among the documents in it.

    The documents themselves are not kept (thousands of dicts or JSON fragments per request,
    alive while the request is sent and retried, would take several times the memory of the
    compressed body); the rare 413 reads them back from the body.
    """

    body: bytes
    cuts: list[int]  # ascending; the last one is the number of documents

    @property
    def items(self) -> int:
        return len(self.cuts)


class BodyBuilder:
    """Builds the batches of one exporter (and learns its typical document size as it goes)."""

    def __init__(self, wrap: Callable[[list[Any]], object], unwrap: Callable[[Any], list[Any]],
                 compression: Compression, limits: Limits) -> None:
        self._wrap = wrap
        self._unwrap = unwrap
        self._compress = COMPRESSORS[compression]
        self._compress_parts = PART_COMPRESSORS[compression]
        self._inflate = INFLATERS[compression]
        self._limits = limits
        self._raw_per_doc = 400.0
        self._ratio = 1.0 if compression == "none" else 8.0

    def batches(self, docs: list[Any], cuts: list[int]) -> tuple[list[Batch], int]:
        """The batches holding `docs`, in order, and how many items were too large to send at all."""
        out: list[Batch] = []
        too_large = 0
        stack = self._plan(docs, cuts)
        stack.reverse()
        lim, dumps, wrap = self._limits, orjson.dumps, self._wrap
        while stack:
            part, part_cuts = stack.pop()
            raw = dumps(wrap(part))
            if len(raw) <= lim.max_raw and (not lim.max_docs or len(part) <= lim.max_docs):
                body = self._compress(raw)
                if len(body) <= lim.max_sent:
                    out.append(Batch(body, part_cuts))
                    self._learn(len(part), len(raw), len(body))
                    continue
            if len(part_cuts) <= 1:
                too_large += len(part_cuts)
                continue
            first, second = _halves(part, part_cuts)
            stack.append(second)
            stack.append(first)
        return out, too_large

    def text_batches(self, head: bytes, text: bytes, cuts: list[int], offsets: list[int],
                     tail: bytes = b"]}") -> tuple[list[Batch], int]:
        """`batches` for documents already written as JSON, each followed by a comma, one after another in
        `text` (`exporters.datadog._ddwire`): `offsets[i]` is where the i-th item's documents end in it,
        `cuts[i]` how many documents there are up to there. A body is `head`, the documents, `tail`."""
        out: list[Batch] = []
        too_large = 0
        if not cuts:
            return out, too_large
        lim = self._limits
        view = memoryview(text)
        stack = self._plan_items(cuts)
        stack.reverse()
        while stack:
            lo, hi = stack.pop()
            start, base = (offsets[lo - 1], cuts[lo - 1]) if lo else (0, 0)
            end, docs = offsets[hi - 1], cuts[hi - 1] - base
            part = view[start:end - 1] if end > start else b""
            size = len(head) + len(part) + len(tail)
            if size <= lim.max_raw and (not lim.max_docs or docs <= lim.max_docs):
                body = self._compress_parts((head, part, tail))  # the uncompressed body is never made
                if len(body) <= lim.max_sent:
                    out.append(Batch(body, [c - base for c in cuts[lo:hi]] if base else cuts[lo:hi]))
                    self._learn(max(docs, 1), size, len(body))
                    continue
            if hi - lo <= 1:
                too_large += hi - lo
                continue
            mid = lo + (hi - lo) // 2
            stack.append((mid, hi))
            stack.append((lo, mid))
        return out, too_large

    def _plan_items(self, cuts: list[int]) -> list[tuple[int, int]]:
        """`_plan` by item numbers: [lo, hi) ranges of items of about as many documents as the limits should take."""
        target = self._target()
        parts: list[tuple[int, int]] = []
        lo, n = 0, len(cuts)
        while lo < n:
            base = cuts[lo - 1] if lo else 0
            hi = max(lo + 1, bisect.bisect_right(cuts, base + target, lo))
            parts.append((lo, hi))
            lo = hi
        return parts

    def split(self, batch: Batch) -> tuple[list[Batch], int]:
        """A batch the intake refused as too large (413), in two halves; a single item cannot be split."""
        if batch.items <= 1:
            return [], batch.items
        out: list[Batch] = []
        too_large = 0
        for docs, cuts in _halves(self.documents(batch), batch.cuts):
            got, lost = self.batches(docs, cuts)
            out.extend(got)
            too_large += lost
        return out, too_large

    def documents(self, batch: Batch) -> list[Any]:
        """The documents of a batch, read back from its body."""
        return self._unwrap(orjson.loads(self._inflate(batch.body)))

    def _target(self) -> int:
        """How many documents a request should hold, from the sizes seen so far."""
        lim = self._limits
        per_part = min(lim.max_raw * _FILL / self._raw_per_doc,
                       lim.max_sent * _FILL * self._ratio / self._raw_per_doc)
        if lim.max_docs:
            per_part = min(per_part, lim.max_docs)
        return max(1, int(per_part))

    def _plan(self, docs: list[Any], cuts: list[int]) -> list[tuple[list[Any], list[int]]]:
        """Cut at item boundaries into parts of about as many documents as the limits should take."""
        target = self._target()
        if len(docs) <= target:
            return [(docs, cuts)]
        parts: list[tuple[list[Any], list[int]]] = []
        start = 0
        rel: list[int] = []
        for c in cuts:
            if rel and c - start > target:
                parts.append((docs[start:start + rel[-1]], rel))
                start += rel[-1]
                rel = []
            rel.append(c - start)
        if rel:
            parts.append((docs[start:start + rel[-1]], rel))
        return parts

    def _learn(self, docs: int, raw: int, sent: int) -> None:
        self._raw_per_doc = 0.5 * self._raw_per_doc + 0.5 * max(raw / docs, 1.0)
        self._ratio = 0.5 * self._ratio + 0.5 * max(raw / max(sent, 1), 1.0)


def _halves(docs: list[Any], cuts: list[int]) -> tuple[tuple[list[Any], list[int]], tuple[list[Any], list[int]]]:
    mid = len(cuts) // 2
    at = cuts[mid - 1]
    return (docs[:at], cuts[:mid]), (docs[at:], [c - at for c in cuts[mid:]])
