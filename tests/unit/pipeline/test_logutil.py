"""otelpipe's own log lines: JSON by default, human-readable with `encoding: console`."""
from __future__ import annotations

import logging
import re

import orjson

from pipeline.logutil import ConsoleFormatter, JSONFormatter


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "otelpipe.service", "levelname": "INFO", "levelno": logging.INFO,
                                 "msg": msg, "created": 1765100000.25, "msecs": 250.0, **extra})
    return rec


def test_console_lines_start_with_an_iso_utc_timestamp() -> None:
    line = ConsoleFormatter().format(record("otelpipe is ready", admin="127.0.0.1:8888"))
    assert re.fullmatch(r"2025-12-07T09:33:20\.250Z INFO    otelpipe\.service otelpipe is ready  "
                        r"admin=127\.0\.0\.1:8888", line), line


def test_json_lines_carry_the_fields_and_redact_urls() -> None:
    line = JSONFormatter().format(record("export failed", url="http://u:pw@h:1/x?api_key=K"))
    obj = orjson.loads(line)
    assert obj["msg"] == "export failed" and obj["level"] == "info"
    assert "pw" not in line and "api_key=[REDACTED]" in obj["url"]
