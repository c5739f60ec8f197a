"""The `loki` exporter object: builds the push body of a payload and POSTs it to Loki.

The exporter helper queues, retries and times out around `push`; the HTTP client (pipeline/net/http)
owns the connection pool, headers, TLS, gzip and the status classification. What is Loki's own:

- `X-Scope-OrgID: <tenant_id>` on every request when `tenant_id` is set (Loki's multi-tenancy).
- 429 (Loki's rate limits) and every 5xx (408 too) are retried by the helper, honouring `Retry-After`.
- 400 is permanent: Loki refused some entries (too old, out of order, a line or a label too long, too
  many labels) and took the others. Its message is kept in the error, so the helper's log line says
  what Loki said; the payload is counted as `send_failed{reason="permanent_error"}` and the queue
  goes on with the next one. Other 4xx (401, 403, 404) are permanent too.
- 413 (a proxy's body limit): the body is halved and both halves are sent, down to single entries;
  an entry too large on its own is given up and counted as a partial success. Halves already
  accepted are sent again only if the helper retries the payload after a later half failed
  transiently; Loki keeps one copy of an entry with the same stream, timestamp and line.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from exporters.loki.config import LokiExporterConfig
from exporters.loki.push import Batch, PushBuilder, encode, halves
from pipeline.component import Host, Settings
from pipeline.errors import PartialSuccessError, PermanentError, RetryableError, TooLargeError
from pipeline.model import Payload, Signal
from pipeline.net.http import HTTPClient
from pipeline.redact import redact_url

CONTENT_TYPE = "application/json"
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})
#: Payloads with more records are mapped in the exporter's worker thread, so the event loop keeps serving
#: meanwhile. One thread: the mapping holds the GIL, so more threads would not map faster, only hold more
#: requests' worth of memory at once (every sending-queue consumer retrying during an outage rebuilds its body).
INLINE_MAX_RECORDS = 256
#: How much of Loki's answer to a refused push goes into the error (its messages name the stream and limit).
MESSAGE_CHARS = 1000


def loki_message(body: bytes, content_type: str) -> str:
    """Loki's answer to a refused push (plain text), on one line and cut to MESSAGE_CHARS."""
    text = body[:MESSAGE_CHARS * 4].decode("utf-8", "replace")
    return " ".join(text.split())[:MESSAGE_CHARS]


class LokiExporter:
    """Sends the logs of one pipeline to one Loki push URL."""

    def __init__(self, settings: Settings, cfg: LokiExporterConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._url = cfg.endpoint
        self._shown = redact_url(cfg.endpoint)
        self._builder = PushBuilder(cfg)
        self._headers = cfg.tenant_headers()
        https = cfg.endpoint.lower().startswith("https:")
        self._client = HTTPClient(headers=cfg.headers, tls=cfg.tls if https else None, compression=cfg.compression,
                                  retryable_statuses=RETRYABLE_STATUSES, error_detail=loki_message, auth=cfg.auth)
        self._worker: ThreadPoolExecutor | None = None

    async def start(self, host: Host) -> None:
        if self._client.started:
            return
        await self._client.start(host)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"loki-{self.settings.id}")
        self.settings.logger.info("Loki exporter started",
                                  extra={"url": self._shown, "tenant": self.cfg.tenant_id or None,
                                         "format": self.cfg.format, "compression": self.cfg.compression})

    async def shutdown(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False)
        if self._client.started:
            await self._client.close()
            self.settings.logger.info("Loki exporter stopped", extra={"url": self._shown})

    async def push(self, payload: Payload) -> None:
        if not self._client.started:
            raise RetryableError(f"exporter {self.settings.id} is not started")
        if payload.signal is not Signal.LOGS:
            raise PermanentError(f"exporter {self.settings.id} takes logs, not {payload.signal.value}")
        try:
            if payload.items <= INLINE_MAX_RECORDS or self._worker is None:
                batch, body = self._prepare(payload)
            else:
                batch, body = await asyncio.get_running_loop().run_in_executor(self._worker, self._prepare, payload)
        except ValueError as e:
            raise PermanentError(f"exporter {self.settings.id}: {e}") from None
        if not batch.entries:
            return
        too_large = await self._send(batch, body)
        if too_large:
            raise PartialSuccessError(too_large, f"{too_large} log record(s) too large for {self._shown} on their "
                                                 "own (HTTP 413 for a single entry)")

    def _prepare(self, payload: Payload) -> tuple[Batch, bytes]:
        batch = self._builder.build(payload.serialize())
        return batch, encode(batch.streams)

    async def _send(self, batch: Batch, body: bytes) -> int:
        """POST `body` (of `batch`), halving it on 413; the number of entries given up as too large on their own."""
        pending = [batch]
        given_up = 0
        while pending:
            part = pending.pop()
            if part is not batch:
                body = encode(part.streams)
            try:
                await self._client.post(self._url, body, CONTENT_TYPE, self._headers)
            except TooLargeError:
                if part.entries < 2:
                    given_up += part.entries
                    continue
                first, second = halves(part)
                pending += (second, first)  # the first half is sent first
        return given_up
