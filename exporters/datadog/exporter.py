"""The `datadog` exporter object: maps a payload, cuts it into requests, sends them, answers the exporter helper.

One instance per signal (metrics or logs), each with its own `HTTPClient` (connection pool) and
`DD-API-KEY` header. The exporter helper queues, retries and times out around `push`; what is
particular here:

- A payload may need several requests. The ones already accepted are not sent again when the
  helper retries the payload: the batches still to send wait in `PendingPayloads` under the
  payload's identity, so a retry resumes where the failure stopped (and a cumulative series is turned into
  deltas once, not once per attempt). The wait list is bounded; a payload pushed out of it (one
  the helper gave up on) is mapped afresh if it ever comes back.
- 413: the batch is halved and both halves are sent (`TooLargeError` from the HTTP client); an
  item too large on its own is given up and counted.
- 403 (and 401): the API key was refused. Permanent; logged at most once a minute, with what to check,
  instead of the helper's per-request line.
- Other 4xx: permanent for that batch; the other batches are still sent. 408, 429 and every 5xx
  are retried by the helper (`Retry-After` honoured).
- Items that cannot be sent (see `metrics.py`: NaN values, no temporality; or too large) are
  reported as a partial success, so the helper counts them `send_failed{reason="partial_success"}`;
  each reason is also counted in `otelpipe_exporter_datadog_skipped_{metric_points,log_records}_total`.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from exporters.datadog.config import DatadogExporterConfig
from exporters.datadog.intake import LOGS_LIMITS, SERIES_LIMITS, Batch, BodyBuilder
from exporters.datadog.logs import LogsMapper, logs_body
from exporters.datadog.metrics import REJECT_REASONS, MetricsMapper, system_hostname
from pipeline.component import Host, Settings
from pipeline.errors import PartialSuccessError, PermanentError, RetryableError, TooLargeError
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.net.http import HTTPClient
from pipeline.redact import redact_url

# Datadog's intakes ask for a retry on every 5xx; 408 and 429 are transient too.
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})
SKIPPED_METRIC = {Signal.METRICS: "exporter_datadog_skipped_metric_points",
                  Signal.LOGS: "exporter_datadog_skipped_log_records"}
SERIES_METRIC = "exporter_datadog_cumulative_series"
KEY_REFUSED_LOG_INTERVAL = 60.0
KEY_REFUSED_STATUSES = frozenset({401, 403})  # 401: no key (the logs intake); 403: a key Datadog does not know
# How `pipeline.net.http` words a refused request: "POST <url> returned HTTP 403: <detail>".
_STATUS_RE = re.compile(r" returned HTTP (\d{3})\b")
CONTENT_TYPE = "application/json"


def _status(e: Exception) -> int | None:
    m = _STATUS_RE.search(str(e))
    return int(m.group(1)) if m else None


def series_body(series: list[Any]) -> object:
    return {"series": series}


SERIES_HEAD = b'{"series":['  # series_body's JSON up to its first series


def series_docs(body: Any) -> list[Any]:
    return body["series"]  # type: ignore[no-any-return]


PayloadKey = tuple[int, float, int]


def payload_key(payload: Payload) -> PayloadKey:
    """A payload's identity without a reference to it: its address, arrival time and item count.

    The address alone could be reused by a new payload once the old one is freed; the arrival
    time (monotonic, taken when the payload was made) tells them apart.
    """
    return id(payload), payload.arrival, payload.items


@dataclass(slots=True)
class _Pending:
    """What is left to do for one payload: its batches not yet accepted, and the items given up so far."""

    key: PayloadKey
    batches: list[Batch]
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)


class PendingPayloads:
    """Payloads whose requests were not all accepted yet; the oldest is forgotten past `capacity`.

    Only the rest of their requests (compressed bodies) is kept, never the payloads: one the
    helper gave up on is freed with its queue slot.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[PayloadKey, _Pending] = OrderedDict()

    def get(self, payload: Payload) -> _Pending | None:
        return self._items.get(payload_key(payload))

    def add(self, state: _Pending) -> None:
        self._items[state.key] = state
        self._items.move_to_end(state.key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def discard(self, payload: Payload) -> None:
        self._items.pop(payload_key(payload), None)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class DatadogExporter:
    """Sends one signal to its Datadog intake."""

    def __init__(self, settings: Settings, cfg: DatadogExporterConfig, *, hostname: str | None = None) -> None:
        self.settings = settings
        self.cfg = cfg
        signal = settings.signal or Signal.METRICS
        self.signal = signal
        host = cfg.hostname or (system_hostname() if hostname is None else hostname)
        self.url = cfg.series_url() if signal is Signal.METRICS else cfg.logs_url()
        self._shown = redact_url(self.url)
        self._metrics = MetricsMapper(cfg, clock=settings.clock, hostname=host) if signal is Signal.METRICS else None
        self._logs = LogsMapper(cfg, host) if signal is Signal.LOGS else None
        metrics = signal is Signal.METRICS
        self._bodies = (BodyBuilder(series_body, series_docs, cfg.compression, SERIES_LIMITS) if metrics
                        else BodyBuilder(logs_body, logs_body, cfg.compression, LOGS_LIMITS))
        self._headers = {} if cfg.compression == "none" else {"Content-Encoding": cfg.compression}
        self._client = HTTPClient(headers={"DD-API-KEY": cfg.api_key()},
                                  tls=cfg.tls if self.url.scheme == "https" else None,
                                  retryable_statuses=RETRYABLE_STATUSES)
        self._pending = PendingPayloads(max(16, 2 * cfg.sending_queue.num_consumers))
        self._key_log = RateLimitedLog(settings.logger, interval=KEY_REFUSED_LOG_INTERVAL)
        self._skipped = settings.telemetry.counter(SKIPPED_METRIC[signal])
        self._series_gauge = settings.telemetry.gauge(SERIES_METRIC)
        self._exporter_id = str(settings.id)

    async def start(self, host: Host) -> None:
        if self._client.started:
            return
        await self._client.start()
        mapper = self._metrics
        if mapper is not None:
            self._series_gauge.labels(self._exporter_id).set_function(lambda: mapper.tracked_series)
        self.settings.logger.info("Datadog exporter started",
                                  extra={"url": self._shown, "site": self.cfg.api.site, "signal": self.signal.value,
                                         "compression": self.cfg.compression})

    async def shutdown(self) -> None:
        self._pending.clear()
        if self._metrics is not None:
            try:
                self._series_gauge.remove(self._exporter_id)
            except KeyError:
                pass
        if self._client.started:
            await self._client.close()
            self.settings.logger.info("Datadog exporter stopped", extra={"signal": self.signal.value})

    async def push(self, payload: Payload) -> None:
        if not self._client.started:
            raise RetryableError(f"exporter {self.settings.id} is not started")
        if payload.signal is not self.signal:
            raise PermanentError(f"exporter {self.settings.id} was built for {self.signal.value}, "
                                 f"not {payload.signal.value}")
        state = self._pending.get(payload)
        if state is None:
            state = self._prepare(payload)
            self._pending.add(state)
        # From here, whatever is raised but a final outcome leaves `state` for the helper's next attempt.
        batches = state.batches
        refused: PermanentError | None = None
        while batches:
            batch = batches[0]
            try:
                await self._client.post(self.url, batch.body, CONTENT_TYPE, self._headers)
            except TooLargeError:
                halves, too_large = self._bodies.split(batch)
                self._count(state, "too_large", too_large)
                batches[0:1] = halves
                continue
            except PermanentError as e:
                batches.pop(0)
                status = _status(e)
                if status in KEY_REFUSED_STATUSES:
                    refused = self._key_refused(e, status)
                    state.rejected += batch.items + sum(b.items for b in batches)
                    batches.clear()
                    break
                state.rejected += batch.items
                refused = e
                continue
            batches.pop(0)
        self._pending.discard(payload)
        self._finish(payload, state, refused)

    def _prepare(self, payload: Payload) -> _Pending:
        docs: list[Any]
        if self._metrics is not None:
            mapped = self._metrics.map(payload.serialize())
            docs, cuts, skipped = mapped.series, mapped.cuts, mapped.skipped
        else:
            assert self._logs is not None
            docs = self._logs.map(payload.message)  # type: ignore[arg-type]
            cuts, skipped = list(range(1, len(docs) + 1)), {}
            mapped = None
        if mapped is not None and mapped.text:  # the C renderer's series, as JSON text
            batches, too_large = self._bodies.text_batches(SERIES_HEAD, mapped.text, cuts, mapped.offsets)
        else:
            batches, too_large = self._bodies.batches(docs, cuts) if docs else ([], 0)
        state = _Pending(payload_key(payload), batches, 0)
        for reason, n in skipped.items():
            self._count(state, reason, n, rejected=reason in REJECT_REASONS)
        self._count(state, "too_large", too_large)
        return state

    def _count(self, state: _Pending, reason: str, n: int, *, rejected: bool = True) -> None:
        if not n:
            return
        self._skipped.labels(self._exporter_id, reason).inc(n)
        if rejected:
            state.rejected += n
            state.reasons[reason] = state.reasons.get(reason, 0) + n

    def _key_refused(self, e: PermanentError, status: int | None) -> PermanentError:
        self._key_log.error(f"Datadog refused the API key (HTTP {status}): check api.key, and that api.site is the "
                            "site of the Datadog account the key belongs to; dropping data until it is accepted",
                            key="api_key", extra={"url": self._shown, "site": self.cfg.api.site,
                                                  "signal": self.signal.value})
        e.logged = True
        return e

    def _finish(self, payload: Payload, state: _Pending, refused: PermanentError | None) -> None:
        rejected = min(state.rejected, payload.items)
        if not rejected:
            return
        if rejected >= payload.items and refused is not None:
            raise refused
        detail = f"{refused}" if refused is not None else f"not representable in Datadog: {state.reasons}"
        raise PartialSuccessError(rejected, f"datadog exporter could not deliver {rejected} of {payload.items} "
                                            f"{self.signal.item_name.replace('_', ' ')}: {detail}")
