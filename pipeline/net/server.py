"""aiohttp's low-level HTTP server with the limits Go's net/http gives the Collector's listeners.

aiohttp alone keeps a connection that never sends a complete request header
for an hour, and accepts connections until the process runs out of file
descriptors, at which point every listener of the process (the admin server's
`/healthz` included) stops accepting. `GuardedServer` adds:

- a cap on concurrent connections: past it, a new connection is closed as
  soon as it is accepted, so its descriptor is released at once;
- `read_header_timeout`: a connection whose first request header is not
  complete in time is closed (aiohttp's keep-alive timer, set to
  `idle_timeout`, bounds the wait for every later request on the connection);
- `write_timeout`: a response that cannot be written in time (a client that
  stopped reading) closes the connection.

The timeouts keep the Collector's confighttp names, defaults and zero
fallbacks (`ServerTimeouts`); the body-read deadline (`read_timeout`) belongs to
the request handler, which knows how to answer it.
"""
from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from pipeline.config.types import Duration, Issue

# The Collector's confighttp.NewDefaultServerConfig().
DEFAULT_READ_TIMEOUT = Duration(0.0)
DEFAULT_READ_HEADER_TIMEOUT = Duration(60.0)
DEFAULT_WRITE_TIMEOUT = Duration(30.0)
DEFAULT_IDLE_TIMEOUT = Duration(60.0)
# An automatic connection cap takes this share of the process's open-file limit, at most
# AUTO_MAX_CONNECTIONS_CEILING: the rest stays for the other listeners, exporters and files.
AUTO_MAX_CONNECTIONS_SHARE = 4
AUTO_MAX_CONNECTIONS_CEILING = 4096
# aiohttp reads a keep-alive timeout of 0 as "close idle connections at once"; "no timeout" is this.
_NO_TIMEOUT = 365 * 86400.0
# After answering a request whose body was not read to the end (413, 408), how long to keep
# reading and dropping the rest before closing, so the client sees the answer rather than a
# reset. aiohttp's default is 10 s, long enough for a slow client to hold the connection;
# Go's net/http waits 500 ms (rstAvoidanceDelay).
LINGERING_TIME = 0.5

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def auto_max_connections() -> int:
    """The connection cap used when none is configured: a share of RLIMIT_NOFILE (soft)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return AUTO_MAX_CONNECTIONS_CEILING
    return max(1, min(soft // AUTO_MAX_CONNECTIONS_SHARE, AUTO_MAX_CONNECTIONS_CEILING))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTimeouts:
    """The four confighttp timeouts, in seconds; 0 means "none", with Go's fallbacks applied below."""

    read_timeout: float = DEFAULT_READ_TIMEOUT
    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT

    @property
    def header(self) -> float:
        """Go: if ReadHeaderTimeout is zero, ReadTimeout is used (0: none)."""
        return self.read_header_timeout or self.read_timeout

    @property
    def idle(self) -> float:
        """Go: if IdleTimeout is zero, ReadTimeout is used (0: none)."""
        return self.idle_timeout or self.read_timeout

    def validate(self) -> list[Issue]:
        return [Issue(name, "must not be negative; 0 means no timeout")
                for name in ("read_timeout", "read_header_timeout", "write_timeout", "idle_timeout")
                if getattr(self, name) < 0]


class GuardedServer(web.Server):
    """A `web.Server` (aiohttp's connection hooks) with a connection cap and header/write deadlines.

    `on_refused(reason)` is called once per connection closed by the guard:
    `too_many_connections` or `timeout` (no complete request header in time).
    A connection cut for a write timeout is not a refusal: its request was
    already counted by the handler.
    """

    def __init__(self, handler: Handler, *, max_connections: int, timeouts: ServerTimeouts,
                 on_refused: Callable[[str], None], **kwargs: Any) -> None:
        self.max_connections = max_connections
        self._timeouts = timeouts
        self._on_refused = on_refused
        self._open: set[RequestHandler] = set()
        self._awaiting_header: dict[RequestHandler, asyncio.TimerHandle] = {}
        kwargs.setdefault("lingering_time", LINGERING_TIME)
        super().__init__(self._guarded(handler), keepalive_timeout=timeouts.idle or _NO_TIMEOUT, **kwargs)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._open) >= self.max_connections:
            self._on_refused("too_many_connections")
            # Close on the next loop turn, not now: aiohttp starts the connection's task after this
            # hook returns, and that task must find the handler closing, not already torn down.
            self._loop.call_soon(handler.force_close)
            return
        super().connection_made(handler, transport)
        self._open.add(handler)
        if self._timeouts.header:
            self._awaiting_header[handler] = self._loop.call_later(
                self._timeouts.header, self._header_timed_out, handler)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        if handler not in self._open:
            return  # refused at accept: never registered
        self._open.discard(handler)
        timer = self._awaiting_header.pop(handler, None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(handler, exc)

    def _header_timed_out(self, handler: RequestHandler) -> None:
        if self._awaiting_header.pop(handler, None) is not None:
            self._on_refused("timeout")
            handler.force_close()

    def _guarded(self, handler: Handler) -> Handler:
        awaiting = self._awaiting_header
        write_timeout = self._timeouts.write_timeout
        call_later = asyncio.get_running_loop().call_later  # web.Server is built on the running loop too

        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            if awaiting:
                timer = awaiting.pop(request.protocol, None)
                if timer is not None:
                    timer.cancel()
            resp = await handler(request)
            if write_timeout:
                # Written here rather than by aiohttp after we return, so the deadline covers it:
                # a write only waits when the client is not reading (the transport is paused).
                deadline = call_later(write_timeout, _cut, request)
                try:
                    await resp.prepare(request)
                    await resp.write_eof()
                finally:
                    deadline.cancel()
            return resp

        return guarded


def _cut(request: web.BaseRequest) -> None:
    """Drop a connection whose response could not be written in time."""
    transport = request.transport
    if transport is not None:
        transport.abort()  # not close(): that would wait for the unread response to drain first
    request.protocol.force_close()
