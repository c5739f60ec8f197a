"""The one shape every link of the exporter helper's chain has: an awaitable `send(payload)`.

Each wrapper (queue, obs, retry, timeout) holds the next link's `send` and is
itself one; the exporter's own `push` ends the chain. Plain bound methods
keep a request's path through the chain to a few awaits.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from pipeline.model import Payload

Send = Callable[[Payload], Awaitable[None]]
