"""OTLP logs → the body of Loki's push API (`POST /loki/api/v1/push`, JSON).

    {"streams": [{"stream": {"service_name": "agent", "level": "info"},
                  "values": [["1700000000000000000", "the line", {"trace_id": "5b8e…", "http_route": "/v1"}]]}]}

- One stream per distinct label set in the request: records of every resource and scope with the same
  labels share one stream, so a request holds as few streams as its label sets.
- Labels: `service_name` (resource `service.name`, else `unknown_service`), `level` (the severity text
  lower-cased, else the severity number's range: trace, debug, info, warn, error, fatal; `unknown`
  without either), then `labels.resource` and `labels.attributes` (a record attribute wins over a
  resource attribute of the same label name, a configured label over a default one). An attribute
  that is absent or empty gives no label.
- Timestamp: the record's time, else its observed time, else the time of export (a time past what an
  int64 holds counts as absent: Loki would refuse the whole push for it); nanoseconds as a decimal string.
- Structured metadata (`structured_metadata: true`): `trace_id` and `span_id` in hex, and every record
  attribute that is not a label, names sanitized as label names (Loki's LogQL can only name those),
  values as strings; empty values are left out. Resource attributes are not repeated on every entry:
  the ones to query by become labels (`labels.resource`).

How it stays fast: the request is parsed with a skeleton (`pipeline.wire`) in C, keeping each
resource and each attribute as its serialized bytes. A resource's labels are worked out once per
distinct resource, an attribute's name and value once per distinct attribute, a level once per
severity (bounded caches keyed by those, looked up in C); per record, Python reads a few fields and
makes one tuple and one dict, which orjson encodes every `CHUNK` records, so they die young (the
garbage collector never walks them) and the working set stays small. The body is joined from
those encoded arrays and the orjson-encoded labels of each stream, without re-encoding anything.

Where the C extension `_lokiwire` is built (exporters/loki/_lokiwire.c), the usual config's requests
take it instead: it walks the request bytes and writes each stream's entries as JSON text itself,
asking Python only for what is per distinct resource, severity text, stream and attribute (the same
caches and functions as below). `_build_fast` stays the definition and the fallback: the renderer
hands back any request it does not cover exactly, and the tests compare the two byte for byte.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar, cast

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from exporters.loki.config import LEVEL_LABEL, SERVICE_LABEL, LokiExporterConfig, label_name
from exporters.loki.lines import body_pairs, json_line, logfmt_line
from exporters.prometheus.naming import sanitize_label_name
from pipeline import wire
from pipeline.anyvalue import as_string, plain

try:
    from exporters.loki import _lokiwire
except ImportError:  # not built (no C compiler): PushBuilder's Python walk does the same work, slower
    _lokiwire = None  # type: ignore[assignment]

UNKNOWN_SERVICE = "unknown_service"
UNKNOWN_LEVEL = "unknown"
TRACE_ID = "trace_id"
SPAN_ID = "span_id"
#: Severity number ranges (OTel logs data model): 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24 FATAL.
_NUMBER_LEVELS = {n: name for n, name in enumerate(
    ["unknown"] + ["trace"] * 4 + ["debug"] * 4 + ["info"] * 4 + ["warn"] * 4 + ["error"] * 4 + ["fatal"] * 4)}
#: Loki reads an entry's timestamp as an int64: a later time (a fixed64 can hold one) would fail the whole push.
MAX_TS = 2**63 - 1
#: The same ranges by number, for the C renderer.
NUMBER_LEVELS = tuple(_NUMBER_LEVELS[n] for n in range(len(_NUMBER_LEVELS)))
CACHE_SIZE = 65_536
RESOURCE_CACHE_SIZE = 1024
LEVEL_CACHE_SIZE = 1024

# The body is walked into as far as a string value (read in C); any other value is kept as an unknown
# field, which serializing the body gives back whole.
_BODY: wire.SkeletonSpec = {"string_value": wire.VALUE}
_RECORD: wire.SkeletonSpec = {
    "time_unix_nano": wire.VALUE, "observed_time_unix_nano": wire.VALUE, "severity_number": wire.VALUE,
    "severity_text": wire.VALUE, "body": _BODY, "attributes": wire.BYTES, "trace_id": wire.VALUE,
    "span_id": wire.VALUE}


class _Body(Protocol):
    string_value: str

    def SerializeToString(self) -> bytes: ...


class _Record(Protocol):
    time_unix_nano: int
    observed_time_unix_nano: int
    severity_number: int
    severity_text: str
    body: _Body
    attributes: list[bytes]
    trace_id: bytes
    span_id: bytes


class _ScopeLogs(Protocol):
    log_records: list[_Record]


class _ResourceLogs(Protocol):
    resource: bytes
    scope_logs: list[_ScopeLogs]


class _Logs(Protocol):
    resource_logs: list[_ResourceLogs]


LOGS = cast(wire.Skeleton[_Logs], wire.skeleton(ExportLogsServiceRequest.DESCRIPTOR, {
    "resource_logs": {"resource": wire.BYTES, "scope_logs": {"log_records": _RECORD}}}))

Entry = tuple[str, str] | tuple[str, str, dict[str, str]]
#: Entries encoded at a time: large enough that orjson's call overhead vanishes, small enough that the
#: entries are gone before the garbage collector's first generation fills.
CHUNK = 256


@dataclass(slots=True)
class Stream:
    """One stream of a push: its labels and its entries, encoded by chunks (a JSON array each, with its length)."""

    labels: dict[str, str]
    pending: list[Entry] = field(default_factory=list)
    chunks: list[tuple[bytes, int]] = field(default_factory=list)

    def flush(self) -> None:
        """Encode the pending entries into a chunk; `pending` stays the same list (callers keep its `append`)."""
        if self.pending:
            self.chunks.append((orjson.dumps(self.pending), len(self.pending)))
            self.pending.clear()


class Batch(NamedTuple):
    """The streams of one push body, and how many entries (log records) they hold."""

    streams: list[Stream]
    entries: int


class _ResourceInfo(NamedTuple):
    key: tuple[tuple[str, str], ...]   # the resource's labels, sorted
    labels: dict[str, str]
    fixed_level: bool                  # a configured resource label named `level` replaces the default one
    pairs: tuple[tuple[str, AnyValue], ...]  # its attributes (for json / logfmt lines without structured metadata)


class _Attr(NamedTuple):
    key: str            # the attribute's own name
    label: str          # the label it makes ("" when it is not configured as one)
    meta_name: str      # its structured metadata name
    value: str
    any: AnyValue


MetaPair = tuple[str, str] | None


def level_of(text: str, number: int) -> str:
    """The `level` label: the severity text lower-cased, else the severity number's range, else `unknown`."""
    if text:
        return text.strip().lower() or UNKNOWN_LEVEL
    return _NUMBER_LEVELS.get(number, UNKNOWN_LEVEL)


def encode(streams: list[Stream]) -> bytes:
    """The push body of `streams` (flushed): `{"streams": [{"stream": {...}, "values": [...]}, ...]}`.

    Each stream's `values` is its encoded chunks joined: every chunk is a JSON array, so its content
    between the brackets is a comma-separated run of entries.
    """
    pieces: list[bytes | memoryview] = [b'{"streams":[']
    for i, s in enumerate(streams):
        pieces += (b',{"stream":' if i else b'{"stream":', orjson.dumps(s.labels), b',"values":[')
        for j, (chunk, _) in enumerate(s.chunks):
            if j:
                pieces.append(b",")
            pieces.append(memoryview(chunk)[1:-1])
        pieces.append(b"]}")
    pieces.append(b"]}")
    return b"".join(pieces)


def halves(batch: Batch) -> tuple[Batch, Batch]:
    """`batch` cut into two with about half the entries each (a stream or a chunk may be cut); needs 2+ entries."""
    want = batch.entries // 2
    first: list[Stream] = []
    second: list[Stream] = []
    taken = 0
    for s in batch.streams:
        a: list[tuple[bytes, int]] = []
        b: list[tuple[bytes, int]] = []
        for chunk, n in s.chunks:
            room = want - taken
            if room <= 0:
                b.append((chunk, n))
            elif n <= room:
                a.append((chunk, n))
                taken += n
            else:
                entries = orjson.loads(chunk)
                a.append((orjson.dumps(entries[:room]), room))
                b.append((orjson.dumps(entries[room:]), n - room))
                taken = want
        if a:
            first.append(Stream(s.labels, chunks=a))
        if b:
            second.append(Stream(s.labels, chunks=b))
    return Batch(first, want), Batch(second, batch.entries - want)


K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A dict that computes a missing value with `make` and keeps at most `size` entries (emptied when full).

    Looking up through `cache[key]` (or `map(cache.__getitem__, keys)`) costs one C-level dict lookup
    on a hit; attributes, resources and severities repeat, so misses are rare.
    """

    def __init__(self, make: Callable[[K], V], size: int) -> None:
        super().__init__()
        self._make = make
        self._size = size

    def __missing__(self, key: K) -> V:
        value = self._make(key)
        if len(self) >= self._size:
            self.clear()
        self[key] = value
        return value


class PushBuilder:
    """Turns serialized OTLP logs requests into push bodies for one exporter's config (caches included)."""

    def __init__(self, cfg: LokiExporterConfig, *, now_ns: Callable[[], int] = time.time_ns,
                 native: bool = True) -> None:
        self._now_ns = now_ns
        self._metadata = cfg.structured_metadata
        self._format = cfg.format
        self._resource_labels = {a: label_name(a, n) for a, n in cfg.labels.resource.items()}
        self._record_labels = {a: label_name(a, n) for a, n in cfg.labels.attributes.items()}
        self._resources = BoundedCache(self._resource, RESOURCE_CACHE_SIZE)
        self._attrs = BoundedCache(self._attr, CACHE_SIZE)
        self._meta = BoundedCache(self._meta_pair, CACHE_SIZE)
        self._levels = BoundedCache(self._level, LEVEL_CACHE_SIZE)
        self._text_levels: BoundedCache[str, str] = BoundedCache(lambda text: level_of(text, 0), LEVEL_CACHE_SIZE)
        self._number_levels: BoundedCache[int, str] = BoundedCache(lambda n: level_of("", n), LEVEL_CACHE_SIZE)
        self._lines_carry_resources = self._format != "raw" and not self._metadata
        # The usual config takes the fast path: raw lines, structured metadata, labels only from resources.
        self.fast_path = self._metadata and self._format == "raw" and not self._record_labels
        self._native = _lokiwire.Renderer(
            self._meta_member, self._resources, self._text_levels, NUMBER_LEVELS, UNKNOWN_LEVEL, now_ns, CACHE_SIZE,
        ) if native and self.fast_path and _lokiwire is not None else None

    @property
    def native(self) -> bool:
        """Whether the C renderer takes this config's requests."""
        return self._native is not None

    def build(self, raw: bytes) -> Batch:
        """The streams of serialized `ExportLogsServiceRequest` `raw`; ValueError if it does not parse."""
        if self._native is not None:
            batch = self._build_native(raw)
            if batch is not None:
                return batch
        try:
            request = LOGS.FromString(raw)
        except DecodeError as e:
            raise ValueError(f"the logs request does not parse: {e}") from None
        if self.fast_path:
            return self._build_fast(request)
        return self._build(request)

    def _build_fast(self, request: _Logs) -> Batch:
        by_labels: dict[tuple[tuple[str, str], ...], dict[str, Callable[[Entry], None]]] = {}
        opened: dict[tuple[tuple[str, str], ...], Stream] = {}  # by the final label set
        entries = 0
        flush_at = CHUNK
        now = 0
        resources = self._resources
        text_levels = self._text_levels
        number_levels = self._number_levels
        meta_pair = self._meta.__getitem__
        for rl in request.resource_logs:
            res = resources[rl.resource]
            fixed_level = res.fixed_level
            appends = by_labels.get(res.key)  # level → the append of its stream's pending entries
            if appends is None:
                appends = by_labels[res.key] = {}
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    text = rec.severity_text
                    level = "" if fixed_level else text_levels[text] if text else number_levels[rec.severity_number]
                    append = appends.get(level)
                    if append is None:  # a new (resource labels, level): its stream, or one with the same labels
                        stream = self._stream(res, level, ())
                        stream = opened.setdefault(tuple(sorted(stream.labels.items())), stream)
                        append = appends[level] = stream.pending.append
                    ts = rec.time_unix_nano
                    if not 0 < ts <= MAX_TS:
                        ts = rec.observed_time_unix_nano
                        if not 0 < ts <= MAX_TS:
                            ts = now = now or self._now_ns()
                    line = rec.body.string_value or self._line(rec, res, ())
                    meta = dict(filter(None, map(meta_pair, rec.attributes)))
                    trace_id = rec.trace_id
                    if trace_id:
                        meta[TRACE_ID] = trace_id.hex()
                    span_id = rec.span_id
                    if span_id:
                        meta[SPAN_ID] = span_id.hex()
                    append((str(ts), line, meta) if meta else (str(ts), line))
                    entries += 1
                    if entries == flush_at:  # (every CHUNK records, or every len(opened): linear in any case)
                        flush_at += max(CHUNK, len(opened))
                        for s in opened.values():
                            s.flush()
        for s in opened.values():
            s.flush()
        return Batch(list(opened.values()), entries)

    def _build_native(self, raw: bytes) -> Batch | None:
        """`_build_fast`'s batch written by the C renderer; None where the renderer leaves `raw` to it."""
        assert self._native is not None
        streams: list[Stream] = []
        opened: dict[tuple[tuple[str, str], ...], int] = {}  # final label set → index in `streams`

        def stream_index(res: _ResourceInfo, level: str) -> int:  # asked once per (resource, level) of a request
            stream = self._stream(res, level, ())
            index = opened.setdefault(tuple(sorted(stream.labels.items())), len(streams))
            if index == len(streams):
                streams.append(stream)
            return index

        rendered = self._native.render(raw, stream_index)
        if rendered is None:
            return None
        values, entries = rendered
        for stream, chunk in zip(streams, values):
            stream.chunks.append(chunk)
        return Batch(streams, entries)

    def _build(self, request: _Logs) -> Batch:
        streams: dict[tuple[tuple[str, str], ...], Stream] = {}  # by label set
        by_key: dict[tuple[Any, ...], Stream] = {}  # by what makes the label set: resource, level, record labels
        entries = 0
        flush_at = CHUNK
        now = 0
        metadata = self._metadata
        raw_lines = self._format == "raw"
        record_labels = bool(self._record_labels)
        attrs = self._attrs
        for rl in request.resource_logs:
            res = self._resources[rl.resource]
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    level = "" if res.fixed_level else self._levels[rec.severity_text, rec.severity_number]
                    found = [attrs[a] for a in rec.attributes]
                    extra = tuple(sorted({a.label: a.value for a in found if a.label and a.value}.items())) \
                        if record_labels else ()
                    key = (res.key, level, extra)
                    stream = by_key.get(key)
                    if stream is None:
                        stream = self._stream(res, level, extra)
                        stream = by_key[key] = streams.setdefault(tuple(sorted(stream.labels.items())), stream)
                    ts = rec.time_unix_nano
                    if not 0 < ts <= MAX_TS:
                        ts = rec.observed_time_unix_nano
                        if not 0 < ts <= MAX_TS:
                            ts = now = now or self._now_ns()
                    line = (rec.body.string_value if raw_lines else "") or self._line(rec, res, found)
                    meta = {a.meta_name: a.value for a in found if a.value and not a.label} if metadata else {}
                    if metadata and rec.trace_id:
                        meta[TRACE_ID] = rec.trace_id.hex()
                    if metadata and rec.span_id:
                        meta[SPAN_ID] = rec.span_id.hex()
                    stream.pending.append((str(ts), line, meta) if meta else (str(ts), line))
                    entries += 1
                    if entries == flush_at:
                        flush_at += max(CHUNK, len(streams))
                        for s in streams.values():
                            s.flush()
        for s in streams.values():
            s.flush()
        return Batch(list(streams.values()), entries)

    # -- per distinct resource / attribute / severity (cached) -------------------------------------

    def _resource(self, raw: bytes) -> _ResourceInfo:
        attributes = Resource.FromString(raw).attributes if raw else []
        values = {kv.key: as_string(kv.value) for kv in attributes}
        labels = {SERVICE_LABEL: values.get("service.name") or UNKNOWN_SERVICE}
        for attribute, name in self._resource_labels.items():
            if values.get(attribute):
                labels[name] = values[attribute]
        # the attributes themselves only for json/logfmt lines without structured metadata (each holds
        # protobuf objects the garbage collector must walk: a request of many resources paid for them)
        pairs = tuple((kv.key, kv.value) for kv in attributes) if self._lines_carry_resources else ()
        return _ResourceInfo(tuple(sorted(labels.items())), labels, LEVEL_LABEL in labels, pairs)

    def _attr(self, raw: bytes) -> _Attr:
        kv = KeyValue.FromString(raw)
        return _Attr(kv.key, self._record_labels.get(kv.key, ""), self._meta_name(kv.key), as_string(kv.value),
                     kv.value)

    def _meta_member(self, raw: bytes) -> tuple[str, bytes] | None:
        """`_meta_pair` as the C renderer takes it: the name and its JSON object member `"name":"value"`."""
        pair = self._meta_pair(raw)
        if pair is None:
            return None
        return pair[0], orjson.dumps({pair[0]: pair[1]})[1:-1]

    def _meta_pair(self, raw: bytes) -> MetaPair:
        """(structured metadata name, value) of a serialized attribute; None for an empty value (not sent)."""
        kv = KeyValue.FromString(raw)
        value = as_string(kv.value)
        return (self._meta_name(kv.key), value) if value else None

    @staticmethod
    def _level(key: tuple[str, int]) -> str:
        return level_of(*key)

    @staticmethod
    def _meta_name(attribute: str) -> str:
        return sanitize_label_name(attribute) or "_"

    @staticmethod
    def _stream(res: _ResourceInfo, level: str, extra: tuple[tuple[str, str], ...]) -> Stream:
        labels = {LEVEL_LABEL: level}
        labels.update(res.labels)  # a configured `level` label wins over the default one
        labels.update(extra)       # and a record's label over its resource's
        return Stream(labels)

    # -- lines -----------------------------------------------------------------------------------

    def _line(self, rec: _Record, res: _ResourceInfo, found: Sequence[_Attr]) -> str:
        """The line of a record whose body is not a string (raw), or of any record (json, logfmt)."""
        body = AnyValue.FromString(rec.body.SerializeToString())
        if self._format == "raw":
            return as_string(body)
        with_fields = not self._metadata
        if self._format == "json":
            fields: dict[str, Any] = {}
            if body.WhichOneof("value") is not None:
                fields["body"] = plain(body)
            if with_fields:
                _json_fields(fields, rec, res, found)
            return json_line(fields)
        pairs = list(body_pairs(body))
        if with_fields:
            pairs.extend(_logfmt_fields(rec, res, found))
        return logfmt_line(pairs)


def _json_fields(fields: dict[str, Any], rec: _Record, res: _ResourceInfo, found: Sequence[_Attr]) -> None:
    if rec.trace_id:
        fields["traceid"] = rec.trace_id.hex()
    if rec.span_id:
        fields["spanid"] = rec.span_id.hex()
    if rec.severity_text:
        fields["severity"] = rec.severity_text
    attributes = {a.key: plain(a.any) for a in found if not a.label}
    if attributes:
        fields["attributes"] = attributes
    if res.pairs:
        fields["resources"] = {k: plain(v) for k, v in res.pairs}


def _logfmt_fields(rec: _Record, res: _ResourceInfo, found: Sequence[_Attr]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if rec.trace_id:
        out.append(("traceID", rec.trace_id.hex()))
    if rec.span_id:
        out.append(("spanID", rec.span_id.hex()))
    if rec.severity_text:
        out.append(("severity", rec.severity_text))
    out.extend((f"attribute_{a.key}", a.value) for a in found if not a.label)
    out.extend((f"resource_{k}", as_string(v)) for k, v in res.pairs)
    return out

