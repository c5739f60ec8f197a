"""A fake Loki (aiohttp on 127.0.0.1:0) that checks every push against Loki's documented push API.

`POST /loki/api/v1/push` with a JSON body (Loki's HTTP API reference, "Ingest logs"):

- `Content-Type: application/json` (anything else is read by Loki as snappy protobuf);
- `Content-Encoding` absent, `gzip` or `deflate`, and the body really encoded so;
- `X-Scope-OrgID` equal to `tenant` when the intake is multi-tenant (else 401, as Loki's auth says
  "no org id");
- `{"streams": [{"stream": {<label>: <value>}, "values": [[<ns>, <line>], [<ns>, <line>, {<name>: <value>}]]}]}`:
  at least one stream; each stream exactly `stream` and `values`; at least one label, names matching
  `[a-zA-Z_][a-zA-Z0-9_]*` without the reserved `__` prefix, values non-empty strings, at most 15
  labels (Loki's default `max_label_names_per_series`); at least one entry; an entry is 2 or 3 items:
  the Unix epoch in nanoseconds as a decimal string (an int64), the line as a string, and optional
  structured metadata, an object of string values whose names are label names.

A push that breaks a rule is answered 400 with Loki's kind of plain-text message and kept in
`violations` (tests assert it stays empty). Accepted pushes answer 204 No Content, as Loki does.
`script` holds canned answers for the next pushes (status, text, headers); the refused push's
entries are still recorded in `requests` so tests can see what was sent.
"""
from __future__ import annotations

import asyncio
import gzip
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

PUSH_PATH = "/loki/api/v1/push"
ENCODINGS = frozenset({"", "gzip", "deflate"})
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_LABELS = 15
INT64_MAX = 2**63 - 1


@dataclass
class Reply:
    status: int
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One accepted log entry, with the labels of its stream."""

    labels: tuple[tuple[str, str], ...]
    ts: int
    line: str
    metadata: dict[str, str]

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)


class Invalid(Exception):
    pass


class LokiIntake:
    def __init__(self, tenant: str | None = None) -> None:
        self.tenant = tenant
        self.entries: list[Entry] = []
        self.requests: list[dict[str, Any]] = []  # headers, sizes, stream count, status
        self.violations: list[str] = []
        self.script: list[Reply] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._cond = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PUSH_PATH}"

    async def start(self) -> LokiIntake:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PUSH_PATH, self._push)
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> LokiIntake:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- what tests read ------------------------------------------------------------------------

    def streams(self) -> dict[tuple[tuple[str, str], ...], list[Entry]]:
        out: dict[tuple[tuple[str, str], ...], list[Entry]] = {}
        for e in self.entries:
            out.setdefault(e.labels, []).append(e)
        return out

    async def wait_for_entries(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.entries) >= n)

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.requests) >= n)

    # -- the push endpoint ----------------------------------------------------------------------

    async def _push(self, request: web.Request) -> web.Response:
        sent = await request.read()
        record: dict[str, Any] = {"headers": dict(request.headers), "sent": len(sent)}
        async with self._cond:
            self.requests.append(record)
            self._cond.notify_all()
        if self.tenant is not None and request.headers.get("X-Scope-OrgID") != self.tenant:
            record["status"] = 401
            return web.Response(status=401, text="no org id\n")
        try:
            entries, streams = self._check(request, sent)
        except Invalid as e:
            self.violations.append(str(e))
            record["status"] = 400
            return web.Response(status=400, text=f"{e}\n")
        record["entries"] = len(entries)
        record["streams"] = streams
        record["sent_entries"] = entries
        if self.script:
            reply = self.script.pop(0)
            record["status"] = reply.status
            return web.Response(status=reply.status, text=reply.text, headers=reply.headers)
        async with self._cond:
            self.entries.extend(entries)
            record["status"] = 204
            self._cond.notify_all()
        return web.Response(status=204)

    def _check(self, request: web.Request, sent: bytes) -> tuple[list[Entry], int]:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            raise Invalid(f"Content-Type is {content_type!r}: a JSON push needs application/json")
        encoding = request.headers.get("Content-Encoding", "")
        if encoding not in ENCODINGS:
            raise Invalid(f"Content-Encoding {encoding!r} not supported")
        try:
            raw = gzip.decompress(sent) if encoding == "gzip" else zlib.decompress(sent, -15) \
                if encoding == "deflate" else sent
        except (OSError, EOFError, zlib.error) as e:
            raise Invalid(f"body is not {encoding}: {e}") from None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise Invalid(f"body is not JSON: {e}") from None
        return check_push(doc)


def _label_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise Invalid(f"{what}: invalid label name {name!r}")
    return name


def check_push(doc: object) -> tuple[list[Entry], int]:
    """The entries of a push body, or Invalid naming the first rule it breaks."""
    if not isinstance(doc, dict) or set(doc) != {"streams"}:
        raise Invalid("the body must be an object holding only 'streams'")
    streams = doc["streams"]
    if not isinstance(streams, list) or not streams:
        raise Invalid("'streams' must be a non-empty array")
    out: list[Entry] = []
    for i, s in enumerate(streams):
        where = f"streams[{i}]"
        if not isinstance(s, dict) or set(s) != {"stream", "values"}:
            raise Invalid(f"{where} must have exactly 'stream' and 'values'")
        labels = s["stream"]
        if not isinstance(labels, dict) or not labels:
            raise Invalid(f"{where}: error at least one label pair is required per stream")
        if len(labels) > MAX_LABELS:
            raise Invalid(f"{where}: stream has {len(labels)} label names, more than {MAX_LABELS}")
        for name, value in labels.items():
            _label_name(name, where)
            if not isinstance(value, str) or not value:
                raise Invalid(f"{where}: label {name} must have a non-empty string value, got {value!r}")
        key = tuple(sorted(labels.items()))
        values = s["values"]
        if not isinstance(values, list) or not values:
            raise Invalid(f"{where}: 'values' must be a non-empty array")
        for j, v in enumerate(values):
            at = f"{where}.values[{j}]"
            if not isinstance(v, list) or len(v) not in (2, 3):
                raise Invalid(f"{at}: an entry is [<ns>, <line>] or [<ns>, <line>, {{metadata}}]")
            ts, line = v[0], v[1]
            if not isinstance(ts, str) or not ts.isascii() or not ts.isdigit() or int(ts) > INT64_MAX:
                raise Invalid(f"{at}: the timestamp must be Unix nanoseconds as a decimal string, got {ts!r}")
            if not isinstance(line, str):
                raise Invalid(f"{at}: the line must be a string")
            meta: dict[str, str] = {}
            if len(v) == 3:
                if not isinstance(v[2], dict):
                    raise Invalid(f"{at}: structured metadata must be an object")
                for name, value in v[2].items():
                    _label_name(name, f"{at} structured metadata")
                    if not isinstance(value, str):
                        raise Invalid(f"{at}: structured metadata {name} must be a string, got {value!r}")
                    meta[name] = value
            out.append(Entry(key, int(ts), line, meta))
    return out, len(streams)
