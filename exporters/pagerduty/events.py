"""PagerDuty Events API v2 events, and the sender that posts them.

Events have the shape Alertmanager's PagerDuty integration sends: `event_action` `trigger` or
`resolve`, a stable `dedup_key`, and a `payload` with `summary` (at most 1024 characters, cut
with "…"), `source`, `severity`, `timestamp`, optional `component`, `group`, `class` and
`custom_details`; `client`, `client_url` and `links` at the top. An event larger than the API's
512 KB loses its custom details (as Alertmanager does), then its links.

Events travel through the exporter helper's sending queue, retry and timeout as OTLP log
records (the Collector's alert connector also turns alerts into logs): one record per event,
its body the event's JSON without the routing key, which `EventSender` adds when it posts. So
events are queued, retried (429 and 5xx, with backoff and `Retry-After`), timed out and counted
(`otelpipe_exporter_sent_log_records_total{exporter="pagerduty"}`, `..._send_failed_...{reason}`)
by the same machinery as every export. A 400 is permanent: it is logged with PagerDuty's own
message and the next event goes on.
"""
from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pipeline.component import Host, Settings
from pipeline.config.types import Secret
from pipeline.errors import PermanentError
from pipeline.model import Payload, Signal
from pipeline.net.http import HTTPClient
from pipeline.net.tls import TLSClientConfig
from pipeline.redact import REDACTED

MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
MAX_EVENT_BYTES = 512_000
# PagerDuty: "retry on 429 and 5xx" (Events API v2, response codes); 408 is a timeout on the way.
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})
_TOO_LARGE = ("Custom details have been removed because the original event exceeds the maximum size of "
              f"{MAX_EVENT_BYTES // 1000}kB")


def dedup_key(rule: str, group_by: Sequence[str], values: Sequence[str]) -> str:
    """`rule` or `rule/attr=value&attr=value` (percent-escaped), at most 255 characters: longer ones keep
    a readable head and end with a SHA-256 of the whole key, so two groups never share a key."""
    key = rule if not group_by else rule + "/" + "&".join(
        f"{quote(a, safe='.-_')}={quote(v, safe='.-_ /:')}" for a, v in zip(group_by, values))
    if len(key) <= MAX_DEDUP_KEY:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key[:MAX_DEDUP_KEY - len(digest) - 8]}…sha256:{digest}"


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, the last one "…" when cut (Alertmanager's TruncateInRunes)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def iso_time(wall: float) -> str:
    """`2024-05-01T12:00:00.000Z`."""
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_event(action: str, key: str, *, summary: str, source: str, severity: str, timestamp: float,
                custom_details: Mapping[str, Any], component: str = "", group: str = "", class_: str = "",
                client: str = "", client_url: str = "", links: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """An Events API v2 event without its routing key; empty optional fields are left out."""
    payload: dict[str, Any] = {"summary": truncate(summary, MAX_SUMMARY), "source": source, "severity": severity,
                               "timestamp": iso_time(timestamp)}
    for name, value in (("component", component), ("group", group), ("class", class_)):
        if value:
            payload[name] = value
    payload["custom_details"] = dict(custom_details)
    event: dict[str, Any] = {"event_action": action, "dedup_key": key, "payload": payload}
    if client:
        event["client"] = client
    if client_url:
        event["client_url"] = client_url
    kept = [dict(link) for link in links if link.get("href")]
    if kept:
        event["links"] = kept
    if len(orjson.dumps(event)) > MAX_EVENT_BYTES:
        payload["custom_details"] = {"error": _TOO_LARGE}
        if len(orjson.dumps(event)) > MAX_EVENT_BYTES:
            event.pop("links", None)
    return event


def to_payload(event: Mapping[str, Any], wall: float) -> Payload:
    """The event as one OTLP log record, for the exporter helper's queue."""
    req = ExportLogsServiceRequest()
    record = req.resource_logs.add().scope_logs.add().log_records.add()
    record.time_unix_nano = int(wall * 1e9)
    record.body.string_value = orjson.dumps(event).decode()
    return Payload(Signal.LOGS, message=req, items=1)


def error_detail(routing_key: str) -> Any:
    """PagerDuty's own words for a refused event (`message: errors`), never quoting the routing key."""

    def detail(body: bytes, _content_type: str) -> str:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body[:200].decode("utf-8", "replace")
        else:
            if not isinstance(doc, dict):
                return ""
            errors = doc.get("errors")
            listed = ", ".join(str(e) for e in errors) if isinstance(errors, list) else ""
            text = f"{doc.get('message', '')}: {listed}" if listed else str(doc.get("message", ""))
        if routing_key:
            text = text.replace(routing_key, REDACTED)
        return text[:500]

    return detail


class EventSender:
    """The `push` behind the events' exporter helper: posts each event of a payload to the Events API."""

    def __init__(self, settings: Settings, endpoint: str, routing_key: Secret, tls: TLSClientConfig) -> None:
        self.settings = settings
        self._url = endpoint
        self._key = routing_key.reveal()
        self._client = HTTPClient(tls=tls if endpoint.startswith("https") else None,
                                  retryable_statuses=RETRYABLE_STATUSES, error_detail=error_detail(self._key))

    async def start(self, host: Host) -> None:
        await self._client.start()

    async def push(self, payload: Payload) -> None:
        msg = payload.message
        if not isinstance(msg, ExportLogsServiceRequest):
            raise PermanentError("the PagerDuty event sender only takes the events its exporter made")
        for rl in msg.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    body = orjson.loads(record.body.string_value)
                    body["routing_key"] = self._key
                    # Errors carry the redacted URL and PagerDuty's message (see error_detail), never the key.
                    await self._client.post(self._url, orjson.dumps(body), "application/json")

    async def shutdown(self) -> None:
        await self._client.close()
