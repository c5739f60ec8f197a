"""Reading and inflating an OTLP/HTTP request body, with every cost bounded by the body's own size.

A client controls three things here: how many bytes it sends, how far they
inflate, and (with gzip) how many members it concatenates. `read_body` never
reads more than `limit + 1` bytes; `Inflater` never produces more than
`limit + 1` bytes, refuses more than `max_members` gzip members, and walks the
body through a memoryview in bounded slices, so each input byte is handed to
zlib once. (The obvious loop, `data = d.unused_data` per member, copies the rest
of the body once per member: 100,000 empty members in 2 MB cost minutes.)

Inflating can stop after a budget of output and resume later, possibly in a
worker thread: the receiver inflates a small body on the event loop and hands a
large one, from where it stopped, to a thread (zlib releases the GIL).
"""
from __future__ import annotations

import zlib

from aiohttp import StreamReader

# Go's gzip reader accepts any number of concatenated members; real clients send one.
MAX_GZIP_MEMBERS = 1000
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# Input is fed in slices that start small for each member after the first and double up to
# the maximum, so the leftover zlib copies when a member ends (`unused_data`) is never much
# larger than the member itself: the whole walk stays linear in the body. The first member
# (usually the only one) starts large, so a typical body is one zlib call.
_FIRST_MEMBER_SLICE = 64 * 1024
_NEXT_MEMBER_SLICE = 1024
_MAX_SLICE = 256 * 1024


class BodyTooLarge(Exception):
    """The body, as sent or once decompressed, is larger than max_request_body_size."""


class TooManyMembers(Exception):
    """A gzip body made of more concatenated members than MAX_GZIP_MEMBERS."""


class Inflater:
    """Inflates one gzip (possibly multi-member) or deflate body, in steps, linear in its size.

    Raises BodyTooLarge past `limit` output bytes, TooManyMembers past
    `max_members` gzip members, and zlib.error for a corrupt or truncated
    stream or data after the end of a deflate stream.
    """

    __slots__ = ("_body", "_decomp", "_encoding", "_limit", "_max_members", "_members", "_parts", "_pos",
                 "_slice", "_total", "_wbits")

    def __init__(self, body: bytes, encoding: str, limit: int, max_members: int = MAX_GZIP_MEMBERS) -> None:
        if encoding == "gzip":
            self._wbits = _GZIP_WBITS
        else:
            # HTTP "deflate" means the zlib format, but some clients send raw deflate.
            zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and ((body[0] << 8) | body[1]) % 31 == 0
            self._wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
        self._body = memoryview(body)
        self._encoding = encoding
        self._limit = limit
        self._max_members = max_members
        self._members = 0
        self._parts: list[bytes] = []
        self._pos = 0
        self._slice = _FIRST_MEMBER_SLICE
        self._total = 0
        self._decomp: zlib._Decompress | None = None

    def run(self, budget: int | None = None) -> bool:
        """Inflate until the body is done (True) or `budget` more bytes were produced (False)."""
        body, limit, parts = self._body, self._limit, self._parts
        end = len(body)
        # The state lives in locals while inflating (this runs per request) and is saved on the way out.
        d, pos, size, total = self._decomp, self._pos, self._slice, self._total
        produced = 0
        try:
            while True:
                if d is None:
                    if pos >= end and self._members:
                        return True
                    if self._members and self._encoding != "gzip":
                        raise zlib.error(f"unexpected data after the end of the {self._encoding} stream")
                    self._members += 1
                    if self._members > self._max_members:
                        raise TooManyMembers(f"more than {self._max_members} concatenated gzip members")
                    d = zlib.decompressobj(self._wbits)
                    if self._members > 1:
                        size = _NEXT_MEMBER_SLICE
                chunk = body[pos:pos + size]
                room = limit + 1 - total  # >= 1 here: 0 would mean "no limit" to zlib
                if budget is not None:
                    room = min(room, budget - produced)
                out = d.decompress(chunk, room)
                consumed = len(chunk) - len(d.unconsumed_tail) - len(d.unused_data)
                pos += consumed
                total += len(out)
                if total > limit:
                    raise BodyTooLarge(f"decompressed body is larger than {limit} bytes")
                if out:
                    parts.append(out)
                    produced += len(out)
                if d.eof:
                    d = None
                elif not chunk and not out:
                    raise zlib.error(f"truncated {self._encoding} stream")
                elif consumed == len(chunk):
                    size = min(size * 2, _MAX_SLICE)
                if budget is not None and produced >= budget and (d is not None or pos < end):
                    return False
        finally:
            self._decomp, self._pos, self._slice, self._total = d, pos, size, total

    def result(self) -> bytes:
        """The inflated bytes (call after run() returned True)."""
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)


def decompress(body: bytes, encoding: str, limit: int, max_members: int = MAX_GZIP_MEMBERS) -> bytes:
    """Inflate a whole gzip or deflate body at once (see Inflater for the bounds and errors)."""
    inflater = Inflater(body, encoding, limit, max_members)
    inflater.run()
    return inflater.result()


async def read_body(content: StreamReader, limit: int) -> bytes:
    """Read the whole body, but never more than `limit + 1` bytes (BodyTooLarge past `limit`)."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = await content.read(limit + 1 - total)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"body is larger than {limit} bytes")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)
