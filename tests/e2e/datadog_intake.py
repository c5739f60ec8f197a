"""A fake Datadog intake (aiohttp on 127.0.0.1:0) that checks every request against Datadog's API reference.

`POST /api/v2/series` (Submit metrics, v2) and `POST /api/v2/logs` (Send logs, v2):

- the `DD-API-KEY` header holds the expected key (else 403, as Datadog answers);
- `Content-Type: application/json`; `Content-Encoding` is absent or one the endpoint documents
  (series: `deflate`, `zstd1`, `gzip`; logs: `gzip`, `deflate`) and the body really is encoded so;
- size limits: series bodies at most 512,000 bytes as sent and less than 5,242,880 inflated; logs
  at most 5,000,000 bytes inflated and 1,000 entries (else 413);
- series: `{"series": [...]}`, each with `metric` (non-empty string), `type` 0–3, `points` (a
  non-empty list of `{"timestamp": <int, POSIX seconds>, "value": <number>}`), optional `tags`
  (strings), `resources` (`{"name", "type"}` strings), and no key the API does not define;
- logs: a JSON array of objects whose values are all strings (`HTTPLogItem`: `ddsource`, `ddtags`,
  `hostname`, `message`, `service`, and string additional properties).

A request that breaks a rule is answered 400 and its problem kept in `violations` (tests assert
it stays empty). `script` holds canned answers for the next requests (status, body, headers).
"""
from __future__ import annotations

import asyncio
import gzip
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

SERIES_KEYS = frozenset({"interval", "metadata", "metric", "points", "resources", "source_type_name", "tags",
                         "type", "unit"})
SERIES_ENCODINGS = frozenset({"", "deflate", "zstd1", "gzip"})
LOGS_ENCODINGS = frozenset({"", "gzip", "deflate"})
SERIES_MAX_SENT = 512_000
SERIES_MAX_INFLATED = 5_242_880
LOGS_MAX_INFLATED = 5_000_000
LOGS_MAX_ENTRIES = 1_000


@dataclass
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class Invalid(Exception):
    pass


class DatadogIntake:
    def __init__(self, api_key: str = "0123456789abcdef0123456789abcdef") -> None:
        self.api_key = api_key
        self.series: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # path, headers, sent / inflated sizes, docs, status
        self.violations: list[str] = []
        self.script: list[Reply] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._cond = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> DatadogIntake:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/v2/series", self._series)
        app.router.add_post("/api/v2/logs", self._logs)
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests read ------------------------------------------------------------------------

    def points(self, metric: str, **tags: str) -> list[tuple[int, float]]:
        """(timestamp, value) of every point of `metric` whose tags include `key:value` for each of `tags`."""
        want = {f"{k}:{v}" for k, v in tags.items()}
        return [(p["timestamp"], p["value"]) for s in self.series if s["metric"] == metric
                and want <= set(s.get("tags", ())) for p in s["points"]]

    def total(self, metric: str, **tags: str) -> float:
        return sum(v for _, v in self.points(metric, **tags))

    def find(self, metric: str) -> list[dict[str, Any]]:
        return [s for s in self.series if s["metric"] == metric]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(predicate)

    # -- handlers -------------------------------------------------------------------------------

    async def _series(self, request: web.Request) -> web.Response:
        return await self._handle(request, "series")

    async def _logs(self, request: web.Request) -> web.Response:
        return await self._handle(request, "logs")

    async def _handle(self, request: web.Request, kind: str) -> web.Response:
        sent = await request.read()
        record: dict[str, Any] = {"path": request.path, "headers": dict(request.headers), "sent": len(sent)}
        self.requests.append(record)
        try:
            if request.headers.get("DD-API-KEY") != self.api_key:
                record["status"] = 403
                return web.json_response({"errors": ["Forbidden"]}, status=403)
            if self.script:
                reply = self.script.pop(0)
                record["status"] = reply.status
                if reply.status >= 300:
                    try:  # what the refused request held, for tests that count it
                        record["docs"] = len(self._check(request, kind, sent, record))
                    except (Invalid, _TooLarge):
                        pass
                    return web.json_response(reply.body, status=reply.status, headers=reply.headers)
            docs = self._check(request, kind, sent, record)
            record["docs"] = len(docs)
        except Invalid as e:
            self.violations.append(f"{kind}: {e}")
            record["status"] = 400
            return web.json_response({"errors": [str(e)]}, status=400)
        except _TooLarge as e:
            record["status"] = 413
            return web.json_response({"errors": [str(e)]}, status=413)
        async with self._cond:
            (self.series if kind == "series" else self.logs).extend(docs)
            record.setdefault("status", 202)
            self._cond.notify_all()
        return web.json_response({"errors": []} if kind == "series" else {}, status=202)

    def _check(self, request: web.Request, kind: str, sent: bytes, record: dict[str, Any]) -> list[dict[str, Any]]:
        if request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise Invalid(f"Content-Type is {request.headers.get('Content-Type')!r}, not application/json")
        encoding = request.headers.get("Content-Encoding", "")
        if encoding not in (SERIES_ENCODINGS if kind == "series" else LOGS_ENCODINGS):
            raise Invalid(f"Content-Encoding {encoding!r} is not one the {kind} endpoint documents")
        if kind == "series" and len(sent) > SERIES_MAX_SENT:
            raise _TooLarge(f"payload of {len(sent)} bytes is over 512000")
        try:
            raw = gzip.decompress(sent) if encoding == "gzip" else zlib.decompress(sent) if encoding == "deflate" \
                else sent
        except (OSError, zlib.error) as e:
            raise Invalid(f"body is not {encoding}: {e}") from None
        record["inflated"] = len(raw)
        if len(raw) >= SERIES_MAX_INFLATED if kind == "series" else len(raw) > LOGS_MAX_INFLATED:
            raise _TooLarge(f"inflated payload of {len(raw)} bytes is over the limit")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise Invalid(f"body is not JSON: {e}") from None
        return check_series(doc) if kind == "series" else check_logs(doc)


class _TooLarge(Exception):
    pass


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_series(doc: object) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or set(doc) != {"series"} or not isinstance(doc["series"], list):
        raise Invalid("body must be {\"series\": [...]}")
    for s in doc["series"]:
        if not isinstance(s, dict):
            raise Invalid("a series must be an object")
        unknown = set(s) - SERIES_KEYS
        if unknown:
            raise Invalid(f"unknown series keys {sorted(unknown)}")
        if not isinstance(s.get("metric"), str) or not s["metric"]:
            raise Invalid("metric must be a non-empty string")
        if s.get("type", 0) not in (0, 1, 2, 3) or isinstance(s.get("type"), bool):
            raise Invalid(f"type {s.get('type')!r} is not 0, 1, 2 or 3")
        points = s.get("points")
        if not isinstance(points, list) or not points:
            raise Invalid("points must be a non-empty list")
        for p in points:
            if not isinstance(p, dict) or set(p) - {"timestamp", "value"}:
                raise Invalid(f"a point must be {{timestamp, value}}, got {p!r}")
            ts = p.get("timestamp")
            if not isinstance(ts, int) or isinstance(ts, bool) or not 1_000_000_000 <= ts < 10_000_000_000:
                raise Invalid(f"timestamp {ts!r} is not POSIX seconds")
            if not _number(p.get("value")):
                raise Invalid(f"value {p.get('value')!r} is not a finite number")
        tags = s.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise Invalid(f"tags must be a list of strings, got {tags!r}")
        resources = s.get("resources", [])
        if not isinstance(resources, list) or not all(
                isinstance(r, dict) and set(r) <= {"name", "type"} and all(isinstance(v, str) for v in r.values())
                for r in resources):
            raise Invalid(f"resources must be [{{name, type}}], got {resources!r}")
        if "interval" in s and (not isinstance(s["interval"], int) or isinstance(s["interval"], bool)):
            raise Invalid("interval must be an integer")
    return list(doc["series"])


def check_logs(doc: object) -> list[dict[str, Any]]:
    if not isinstance(doc, list):
        raise Invalid("body must be a JSON array of log entries")
    if len(doc) > LOGS_MAX_ENTRIES:
        raise _TooLarge(f"{len(doc)} entries is over 1000")
    for entry in doc:
        if not isinstance(entry, dict):
            raise Invalid("a log entry must be an object")
        bad = [k for k, v in entry.items() if not isinstance(v, str)]
        if bad:
            raise Invalid(f"log attributes must be strings, got {bad}")
    return list(doc)
