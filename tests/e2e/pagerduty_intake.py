"""A fake PagerDuty Events API v2 (aiohttp on 127.0.0.1:0) that checks every event against the API reference.

`POST /v2/enqueue` ("Send an Alert Event", Events API v2):

- `Content-Type: application/json`, a JSON object of at most 512 KB;
- `routing_key`: a 32-character string, the expected integration key (else 400, as PagerDuty);
- `event_action`: `trigger`, `acknowledge` or `resolve`;
- `dedup_key`: a string of at most 255 characters; required for `acknowledge` and `resolve`;
- `payload` (required for `trigger`): `summary` (string, 1–1024 characters), `source` (non-empty
  string), `severity` (`critical`, `error`, `warning`, `info`), optional `timestamp` (ISO 8601),
  `component`, `group`, `class` (strings) and `custom_details` (an object), nothing else;
- optional `images` (`{src, href, alt}`, `src` required), `links` (`{href, text}`, `href`
  required), `client`, `client_url` (strings); no other top-level key.

A valid event is answered 202 `{"status": "success", "message": "Event processed", "dedup_key": ...}`;
an invalid one 400 `{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`,
its problems kept in `violations` (tests assert it stays empty unless they sent bad events on
purpose). `script` holds canned answers for the next requests (e.g. a 429 throttle); `refuse`
answers 400 to events it matches (a rule PagerDuty would reject).
"""
from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
TOP_KEYS = frozenset({"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client",
                      "client_url"})
PAYLOAD_KEYS = frozenset({"summary", "source", "severity", "timestamp", "component", "group", "class",
                          "custom_details"})
SEVERITIES = frozenset({"critical", "error", "warning", "info"})
ACTIONS = frozenset({"trigger", "acknowledge", "resolve"})
MAX_BYTES = 512_000


@dataclass
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


THROTTLE = Reply(429, {"status": "throttle event",
                       "message": "Requests for this service are arriving too quickly. Please retry later."})


def problems(event: Any, routing_key: str) -> list[str]:
    """Everything about `event` that the Events API v2 reference does not allow."""
    if not isinstance(event, dict):
        return ["the body is not a JSON object"]
    out = [f"unknown key {k!r}" for k in event if k not in TOP_KEYS]
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        out.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    elif key != routing_key:
        out.append("unknown routing_key")
    action = event.get("event_action")
    if action not in ACTIONS:
        out.append(f"'event_action' is invalid (must be one of {sorted(ACTIONS)})")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        out.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        out.append("'dedup_key' is required for acknowledge and resolve")
    payload = event.get("payload")
    if action == "trigger" and payload is None:
        out.append("'payload' is required for trigger")
    if payload is not None:
        out.extend(_payload_problems(payload))
    for name, required in (("images", "src"), ("links", "href")):
        items = event.get(name)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get(required), str)
                                                   and all(isinstance(v, str) for v in i.values()) for i in items):
            out.append(f"'{name}' must be a list of objects with a string '{required}'")
    for name in ("client", "client_url"):
        if name in event and not isinstance(event[name], str):
            out.append(f"'{name}' must be a string")
    return out


def _payload_problems(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' must be an object"]
    out = [f"unknown payload key {k!r}" for k in payload if k not in PAYLOAD_KEYS]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not 1 <= len(summary) <= 1024:
        out.append("'payload.summary' is required, at most 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        out.append("'payload.source' is required")
    if payload.get("severity") not in SEVERITIES:
        out.append(f"'payload.severity' must be one of {sorted(SEVERITIES)}")
    ts = payload.get("timestamp")
    if ts is not None:
        try:
            datetime.datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
        except ValueError:
            out.append("'payload.timestamp' must be ISO 8601")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            out.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        out.append("'payload.custom_details' must be an object")
    return out


class PagerDutyIntake:
    def __init__(self, routing_key: str = ROUTING_KEY) -> None:
        self.routing_key = routing_key
        self.events: list[dict[str, Any]] = []       # accepted, in order
        self.answers: list[int] = []                 # the status of every request
        self.violations: list[str] = []
        self.script: list[Reply] = []
        self.refuse: Callable[[dict[str, Any]], bool] = lambda event: False
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._cond = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/enqueue"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        async with self._cond:
            self.answers.append(status)
            self._cond.notify_all()
        return web.json_response(body, status=status, headers=headers)

    async def _enqueue(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.script:
            reply = self.script.pop(0)
            return await self._answer(reply.status, reply.body, reply.headers)
        errors = []
        if request.content_type != "application/json":
            errors.append(f"Content-Type {request.content_type!r} is not application/json")
        if len(raw) > MAX_BYTES:
            errors.append(f"event of {len(raw)} bytes is larger than {MAX_BYTES}")
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            event = None
            errors.append("the body is not JSON")
        if event is not None:
            errors.extend(problems(event, self.routing_key))
        if errors:
            self.violations.extend(errors)
            return await self._answer(400, {"status": "invalid event", "message": "Event object is invalid",
                                            "errors": errors})
        if self.refuse(event):
            return await self._answer(400, {"status": "invalid event", "message": "Event object is invalid",
                                            "errors": ["refused by the test"]})
        async with self._cond:
            self.events.append(event)
            self._cond.notify_all()
        return await self._answer(202, {"status": "success", "message": "Event processed",
                                        "dedup_key": event.get("dedup_key", "")})

    async def wait_for(self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0,
                       what: str = "events") -> list[dict[str, Any]]:
        """Wait (on a condition, no polling) until `check(events)` holds; returns the events."""
        try:
            async with asyncio.timeout(timeout):
                async with self._cond:
                    await self._cond.wait_for(lambda: check(self.events))
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {self.events!r}; "
                                 f"answers {self.answers}; violations {self.violations}") from None
        return list(self.events)

    async def wait_for_answers(self, n: int, timeout: float = 10.0) -> list[int]:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.answers) >= n)
        return list(self.answers)

    def of(self, dedup: str) -> list[str]:
        """The actions received for one dedup_key, in order."""
        return [e["event_action"] for e in self.events if e.get("dedup_key") == dedup]
