"""The timeout wrapper: the one place the per-attempt `timeout` is enforced.

As in the Collector (`timeout_sender.go`), it bounds each attempt, not the
whole retry sequence, which is why it sits below the retry wrapper. Exporters
set no deadline of their own. An attempt cut short raises `ExportTimeoutError`
(retryable, counted with reason `timeout`); a `TimeoutError` the push raises
by itself (a connect timeout, say) passes through untouched.

The deadline is the event loop's timer (`asyncio.timeout`), not the injected
clock: cancelling a push needs a loop timer, and racing it against
`clock.wait` would cost a task per request.
"""
from __future__ import annotations

import asyncio

from pipeline.exporterhelper.errors import ExportTimeoutError
from pipeline.exporterhelper.sender import Send
from pipeline.model import Payload


class TimeoutSender:
    """Gives each call of `next` at most `timeout` seconds."""

    __slots__ = ("_next", "_timeout")

    def __init__(self, timeout: float, next_send: Send) -> None:
        self._timeout = float(timeout)
        self._next = next_send

    async def send(self, payload: Payload) -> None:
        deadline = asyncio.timeout(self._timeout)
        try:
            async with deadline:
                await self._next(payload)
        except TimeoutError as e:
            if not deadline.expired():
                raise
            raise ExportTimeoutError(f"export attempt timed out after {self._timeout:g}s") from e
