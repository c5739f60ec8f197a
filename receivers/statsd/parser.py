"""StatsD / DogStatsD lines → parsed samples: pure bytes in, plain tuples out, no I/O.

The grammar (one metric per line, several lines per datagram separated by `\\n`):

    name:value[:value...]|type[|@rate][|#tag1:v1,tag2][|T<unix seconds>][|c:<container id>]

with types `c` (counter), `g` (gauge; `+N`/`-N` is a relative update), `ms`
(timer), `h` (histogram), `d` (distribution) and `s` (set). DogStatsD events
(`_e{...}`) and service checks (`_sc|...`) are recognised and skipped; unknown
`|` fields from newer DogStatsD versions are ignored (and counted) rather than
failing the line; every malformed line is reported with a reason and skipped
without disturbing the other lines of its datagram. A name with no visible
character (`" :1|c"`: only whitespace, control or format characters, see
`pipeline/metricnames.py`) can never name a metric and is refused as
`invalid_name`; the check costs nothing for a name that starts with a visible
ASCII character.

Why it looks the way it does: this is the per-line hot path of the StatsD
receiver (hundreds of thousands of lines a second on one core), so the work is
as bulk as Python allows. A whole batch of datagrams is decoded with one
`bytes.decode` and cut with one `str.split`; a line costs a few
`str.partition` calls, one dict lookup for its type and one `float`/`int`;
tag sets are canonicalised once per distinct tag string (memoised), not once
per line; and samples are appended to one list per type as small tuples, so the
aggregator can run a tight loop per type. Slow paths (sample rates, packed
values, timestamps, container ids, errors) only run for the lines that need them.

The series key of a sample is a string: the metric name alone when it has no
attributes, else `name + "\\n" + canonical attributes` where the canonical
attributes are the `key:value` pairs sorted by key (the last value wins for a
repeated key; a tag without a value gets the empty value; the container id is
the `container.id` attribute). A newline never occurs inside a line, so keys
are unambiguous; `split_key` turns one back into (name, attributes).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pipeline.metricnames import INVALID_NAME, INVISIBLE_ABOVE_SPACE, is_unusable

# Type codes: index into ParseResult.by_type and the aggregator's tables.
COUNTER, GAUGE, TIMER, HISTOGRAM, DISTRIBUTION, SET = range(6)
TYPE_CODES = {"c": COUNTER, "g": GAUGE, "ms": TIMER, "h": HISTOGRAM, "d": DISTRIBUTION, "s": SET}
# The names used by `enable_metric_type` and `timer_histogram_mapping` (the Collector's statsd receiver words).
TYPE_NAMES = ("counter", "gauge", "timing", "histogram", "distribution", "set")

# Longer names are refused as `name_too_long`: no real metric is that long, and a
# runaway name (a payload pasted into the name) must not become a series.
DEFAULT_MAX_NAME_LENGTH = 1000
# Distinct tag strings / line tails remembered before a memo is reset (bounds memory under churn).
_MEMO_MAX = 100_000
CONTAINER_ID_ATTRIBUTE = "container.id"

# Refusal reasons (the `reason` label of otelpipe_receiver_refused_metric_points_total).
MALFORMED_LINE = "malformed_line"
INVALID_UTF8 = "invalid_utf8"
EMPTY_NAME = "empty_name"
NAME_TOO_LONG = "name_too_long"
UNKNOWN_TYPE = "unknown_type"
BAD_VALUE = "bad_value"
BAD_SAMPLE_RATE = "bad_sample_rate"
BAD_TIMESTAMP = "bad_timestamp"
NEGATIVE_COUNTER = "negative_counter"
# Things ignored by design (the `reason` label of otelpipe_receiver_statsd_ignored_total).
EVENT = "event"
SERVICE_CHECK = "service_check"
UNKNOWN_FIELD = "unknown_field"

_INF = math.inf
_ABOVE_EVERY_NAME = "\U0010ffff"  # a name compared against it always goes to _head_problem
_MAX_TS_SECONDS = 2**64 // 1_000_000_000


class ParseResult:
    """What one `parse` call found, grouped by type so the aggregator can run one loop per type.

    by_type[COUNTER]      (key, value / rate)                 value int when exact, else float
    by_type[GAUGE]        (key, value, is_relative)           in arrival order
    by_type[TIMER|HISTOGRAM|DISTRIBUTION]  (key, value)       unsampled values (rate 1)
    by_type[SET]          (key, member)
    weighted              (type, key, value, 1 / rate)        sampled timer/histogram/distribution values
    timed                 (type, key, unix nanoseconds)       lines that carried `|T`
    lines                 good metric lines (a packed line counts once)
    refused               reason → number of lines refused
    ignored               reason → number of lines (events, service checks) or fields (unknown_field) ignored
    examples              reason → the first offending line of this batch (for a rate-limited log)
    """

    __slots__ = ("by_type", "examples", "ignored", "lines", "refused", "timed", "weighted")

    def __init__(self) -> None:
        self.by_type: tuple[list[tuple[Any, ...]], ...] = ([], [], [], [], [], [])
        self.weighted: list[tuple[int, str, float, float]] = []
        self.timed: list[tuple[int, str, int]] = []
        self.lines = 0
        self.refused: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def _refuse(self, reason: str, line: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if reason not in self.examples:
            self.examples[reason] = line[:200]

    def _ignore(self, reason: str, n: int = 1) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + n


def canonical_tags(tags: str, container_id: str = "") -> str:
    """`b:2,a:1,a:3,flag` → `a:3,b:2,flag:`: sorted by key, last value wins, valueless tags get ''."""
    attrs: dict[str, str] = {}
    for tag in tags.split(","):
        if not tag:
            continue
        k, _, v = tag.partition(":")
        if k:
            attrs[k] = v
    if container_id:
        attrs[CONTAINER_ID_ATTRIBUTE] = container_id
    return ",".join(f"{k}:{attrs[k]}" for k in sorted(attrs))


def split_key(key: str) -> tuple[str, list[tuple[str, str]]]:
    """A series key back into (name, [(attribute, value), ...])."""
    name, sep, tags = key.partition("\n")
    if not sep or not tags:
        return name, []
    out = []
    for tag in tags.split(","):
        k, _, v = tag.partition(":")
        out.append((k, v))
    return name, out


class StatsDParser:
    """Parses batches of datagrams. Its only state is two bounded memos (line tails, canonical tags);
    no I/O, no clock."""

    def __init__(self, *, max_name_length: int = DEFAULT_MAX_NAME_LENGTH) -> None:
        self.max_name_length = max_name_length
        self._canon: dict[str, str] = {}
        self._tails: dict[str, tuple[int, str, float, tuple[int, int] | None]] = {}

    # -- entry points ---------------------------------------------------------------------------
    def parse(self, datagrams: Iterable[bytes], result: ParseResult | None = None) -> ParseResult:
        """Parse many datagrams at once; invalid UTF-8 spoils only the lines that hold it."""
        res = ParseResult() if result is None else result
        if not isinstance(datagrams, list):
            datagrams = list(datagrams)
        if not datagrams:
            return res
        blob = datagrams[0] if len(datagrams) == 1 else b"\n".join(datagrams)
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError:
            self._parse_bad_utf8(datagrams, res)
            return res
        self.parse_text(text, res)
        return res

    def parse_text(self, text: str, res: ParseResult) -> None:
        """Parse decoded text (lines separated by `\\n`; a `\\r` before it is tolerated)."""
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        by_type = res.by_type
        counters, gauges, timers, histograms, distributions, sets = by_type
        tails = self._tails
        maxlen = self.max_name_length
        # One substring search per batch spares the per-line event/service-check test in the usual case.
        special = "_e{" in text or "_sc|" in text
        # An unusable name starts with an invisible character: one below "!" unless the batch holds
        # invisible characters above the space (DEL, non-ASCII ones; rare), then any name may.
        # (isascii() is O(1); the DEL search runs at memchr speed.)
        if text.isascii():
            rare = "\x7f" in text
        else:
            rare = INVISIBLE_ABOVE_SPACE.search(text) is not None
        lowest = _ABOVE_EVERY_NAME if rare else "!"
        good = 0
        for line in text.split("\n"):
            if not line:
                continue
            if special and line[0] == "_" and line.startswith(("_e{", "_sc|")):
                res._ignore(EVENT if line[1] == "e" else SERVICE_CHECK)
                continue
            head, sep, tail = line.partition("|")
            name, colon, vs = head.partition(":")
            # `lowest <= name`: the name is not empty and starts with a visible character (see `lowest`);
            # any other (rare) name is looked at closely by _head_problem.
            if not (colon and sep and lowest <= name and len(name) <= maxlen):
                problem = _head_problem(name, colon, sep, maxlen)
                if problem is not None:
                    res._refuse(problem, line)
                    continue
            # Everything after the value (type, rate, tags, container) is shared by many lines:
            # it is parsed once and then found in `tails` with one lookup.
            info = tails.get(tail)
            if info is None:
                info = self._tail(tail, res, line)
                if info is None:
                    continue
            code, suffix, rate, extra = info
            key = name + suffix if suffix else name
            # -- the value(s); every refusal `continue`s, success falls through to the bottom ----------
            if not vs:
                res._refuse(BAD_VALUE, line)
                continue
            if code == COUNTER:
                if rate == 1.0 and len(vs) < 19 and vs.isdecimal():
                    counters.append((key, int(vs)))
                elif ":" in vs:
                    if not self._packed(code, key, vs, rate, res, line):
                        continue
                else:
                    x = self._number(vs)
                    if x is None:
                        res._refuse(BAD_VALUE, line)
                        continue
                    if x < 0:
                        res._refuse(NEGATIVE_COUNTER, line)
                        continue
                    counters.append((key, x if rate == 1.0 else _scaled(x, rate)))
            elif code == TIMER or code == HISTOGRAM or code == DISTRIBUTION:
                if ":" in vs:
                    if not self._packed(code, key, vs, rate, res, line):
                        continue
                else:
                    try:
                        x = float(vs)
                    except ValueError:
                        res._refuse(BAD_VALUE, line)
                        continue
                    if not -_INF < x < _INF or (code == TIMER and x < 0):
                        res._refuse(BAD_VALUE, line)
                        continue
                    if rate == 1.0:
                        (timers if code == TIMER else histograms if code == HISTOGRAM else distributions).append(
                            (key, x))
                    else:
                        res.weighted.append((code, key, x, 1.0 / rate))
            elif code == GAUGE:
                if ":" in vs:
                    if not self._packed(code, key, vs, rate, res, line):
                        continue
                else:
                    g = self._gauge(vs)
                    if g is None:
                        res._refuse(BAD_VALUE, line)
                        continue
                    gauges.append((key, g[0], g[1]))
            else:  # SET: the member is any non-empty string, kept whole (a ':' in it is not packing)
                sets.append((key, vs))
            good += 1
            if extra is not None:
                ts, unknown = extra
                if ts:
                    res.timed.append((code, key, ts))
                if unknown:
                    res._ignore(UNKNOWN_FIELD, unknown)
        res.lines += good

    # -- slow paths ---------------------------------------------------------------------------------
    def _parse_bad_utf8(self, datagrams: list[bytes], res: ParseResult) -> None:
        """Fall back to datagram-by-datagram, then line-by-line decoding, so only bad lines are lost."""
        for dgram in datagrams:
            try:
                self.parse_text(dgram.decode("utf-8"), res)
                continue
            except UnicodeDecodeError:
                pass
            for raw in dgram.split(b"\n"):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    res._refuse(INVALID_UTF8, raw.decode("utf-8", "backslashreplace"))
                    continue
                self.parse_text(text, res)

    def _remember(self, memo_key: str, tags: str, container_id: str) -> str:
        memo = self._canon
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        canon = memo[memo_key] = canonical_tags(tags, container_id)
        return canon

    def _tail(self, tail: str, res: ParseResult, line: str) -> tuple[int, str, float, tuple[int, int] | None] | None:
        """`type[|field...]` → (type code, key suffix, sample rate, (timestamp ns, unknown fields) or None).

        None when the line is refused. The result is remembered unless it holds
        a timestamp (those differ on every line and would only fill the memo).
        """
        t, _, fields = tail.partition("|")
        code = TYPE_CODES.get(t)
        if code is None:
            code = TYPE_CODES.get(t.strip())
            if code is None:
                res._refuse(UNKNOWN_TYPE if t.strip() else MALFORMED_LINE, line)
                return None
        rate = 1.0
        ts = unknown = 0
        tags = container = ""
        if fields:
            for f in fields.split("|"):
                first = f[:1]
                if first == "#":
                    tags = f[1:] if not tags else tags + "," + f[1:]
                elif first == "@":
                    try:
                        rate = float(f[1:])
                    except ValueError:
                        rate = -1.0
                    if not 0.0 < rate <= 1.0:
                        res._refuse(BAD_SAMPLE_RATE, line)
                        return None
                elif first == "T":
                    digits = f[1:]
                    # Whole unix seconds that fit a uint64 of nanoseconds (the OTLP time type).
                    if not (0 < len(digits) <= 11 and digits.isdecimal()) or int(digits) >= _MAX_TS_SECONDS:
                        res._refuse(BAD_TIMESTAMP, line)
                        return None
                    ts = int(digits) * 1_000_000_000
                elif f.startswith("c:"):
                    container = f[2:]
                else:
                    unknown += 1
        canon: str | None = ""
        if tags or container:
            # Memo keys are '#' + tags; a '|' never occurs inside tags, so it separates the container id.
            memo_key = "#" + tags + "|" + container if container else "#" + tags
            canon = self._canon.get(memo_key)
            if canon is None:
                canon = self._remember(memo_key, tags, container)
        info = (code, "\n" + canon if canon else "", rate, (ts, unknown) if ts or unknown else None)
        if not ts:
            if len(self._tails) >= _MEMO_MAX:
                self._tails.clear()
            self._tails[tail] = info
        return info

    @staticmethod
    def _number(vs: str) -> int | float | None:
        """An exact int for integer text, else a finite float; None when it is not a number."""
        try:
            if vs.isdecimal():
                return int(vs)  # may raise ValueError past Python's int digit limit
            x = float(vs)
        except ValueError:
            return None
        if not -_INF < x < _INF:
            return None
        return x

    def _gauge(self, vs: str) -> tuple[int | float, bool] | None:
        """(value, relative): a leading sign makes a gauge value a relative update."""
        first = vs[0]
        if first == "+" or first == "-":
            x = self._number(vs[1:])
            if x is None:
                return None
            return (-x if first == "-" else x), True
        x = self._number(vs)
        return None if x is None else (x, False)

    def _packed(self, code: int, key: str, vs: str, rate: float, res: ParseResult, line: str) -> bool:
        """DogStatsD value packing `name:1:2:3|h`: every value is a sample; any bad value refuses the line."""
        parts = vs.split(":")
        out: list[tuple[Any, ...]] = []
        for p in parts:
            if code == GAUGE:
                g = self._gauge(p) if p else None
                if g is None:
                    res._refuse(BAD_VALUE, line)
                    return False
                out.append((key, g[0], g[1]))
                continue
            x = self._number(p) if p else None
            if x is None or (code == TIMER and x < 0):
                res._refuse(BAD_VALUE, line)
                return False
            if code == COUNTER:
                if x < 0:
                    res._refuse(NEGATIVE_COUNTER, line)
                    return False
                out.append((key, x if rate == 1.0 else _scaled(x, rate)))
            elif rate == 1.0:
                out.append((key, float(x)))
            else:
                out.append((code, key, float(x), 1.0 / rate))
        if code in (TIMER, HISTOGRAM, DISTRIBUTION) and rate != 1.0:
            res.weighted.extend(out)
        else:
            res.by_type[code].extend(out)
        return True


def _head_problem(name: str, colon: str, sep: str, maxlen: int) -> str | None:
    """Why `name:value|` (the part up to the first '|') is unusable; None when it is fine after all."""
    if not colon:
        return MALFORMED_LINE
    if not name:
        return EMPTY_NAME
    if len(name) > maxlen:
        return NAME_TOO_LONG
    if is_unusable(name):
        return INVALID_NAME
    if not sep:
        return MALFORMED_LINE  # no '|type'
    return None  # a name starting with a space or a non-ASCII character, with a visible one in it


def _scaled(x: float, rate: float) -> int | float:
    """value / rate, kept an int when the client's value and the result are both whole numbers."""
    y = x / rate
    if type(x) is int and y.is_integer() and abs(y) < 2**63:
        return int(y)
    return y
