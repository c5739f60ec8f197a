"""Logging helpers: JSON-lines formatting (orjson) and rate-limited repeated warnings.

Both formatters pass their output through `pipeline.redact.redact_text`, so a URL
that reaches a log line by way of a library's exception text still loses its
user info and query values.

Only `cli.py` installs handlers; library code uses `component_logger()` so each
line carries the component id, kind and pipeline.
"""
from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Any

import orjson

from pipeline.redact import redact_text

_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


def component_logger(kind: str, component_id: str, pipeline: str = "",
                     signal: str = "") -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose lines name the component (`kind/id`), like the Collector's zap fields."""
    fields: dict[str, Any] = {"kind": kind, "component": component_id}
    if pipeline:
        fields["pipeline"] = pipeline
    if signal:
        fields["signal"] = signal
    return _MergingAdapter(logging.getLogger(f"otelpipe.{kind}"), fields)


class _MergingAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """LoggerAdapter that merges its fields with a call's `extra` instead of replacing them."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then every `extra` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        # Last line of defence: a URL that reached a log line through a library's exception text
        # still loses its user info and query values (one substring scan when there is no URL).
        return redact_text(orjson.dumps(out, default=_json_default).decode())


def _json_default(obj: Any) -> Any:
    """Numbers that orjson does not know (float/int subclasses such as Duration) stay numbers."""
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, int):
        return int(obj)
    return str(obj)


class ConsoleFormatter(logging.Formatter):
    """Human-readable lines for `encoding: console`: ISO 8601 UTC time to the millisecond, level, logger,
    message, then the fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                          if k not in _STD_ATTRS and not k.startswith("_"))
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"{ts} {record.levelname:<7} {record.name} {record.getMessage()}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return redact_text(line)


def configure_logging(level: str = "info", encoding: str = "json") -> None:
    """Install the single stderr handler (called by the CLI only)."""
    root = logging.getLogger("otelpipe")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if encoding == "json" else ConsoleFormatter())
    root.addHandler(handler)
    root.setLevel({"warn": "WARNING"}.get(level.lower(), level.upper()))
    root.propagate = False


class RateLimitedLog:
    """Logs a repeated event at most once per `interval` per key, with the number suppressed since."""

    def __init__(self, logger: logging.LoggerAdapter[logging.Logger], interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def _log(self, level: int, msg: str, key: str, extra: dict[str, Any] | None) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        extra = dict(extra or {})
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            extra["suppressed"] = suppressed
        self._logger.log(level, msg, extra=extra)

    def warning(self, msg: str, *, key: str, extra: dict[str, Any] | None = None) -> None:
        self._log(logging.WARNING, msg, key, extra)

    def error(self, msg: str, *, key: str, extra: dict[str, Any] | None = None) -> None:
        self._log(logging.ERROR, msg, key, extra)
