"""`redact_text` (every log line, /status errors, config messages) masks `credential-name: value` pairs."""
from __future__ import annotations

import logging

import orjson
import pytest

from pipeline.logutil import ConsoleFormatter, JSONFormatter
from pipeline.redact import is_sensitive_key, redact_text

SECRET = "Zq9-secret-value"


@pytest.mark.parametrize("text", [
    f"Authorization: Bearer {SECRET}",
    f"authorization=Basic {SECRET}",
    f'{{"Authorization": "Bearer {SECRET}"}}',
    f"headers={{'X-Api-Key': '{SECRET}'}}",
    f"api_key={SECRET}&page=2",
    f"DD-API-KEY: {SECRET}",
    f"password: {SECRET}",
    f'"token":"{SECRET}"',
    f"routing_key={SECRET}",
    f"x-auth-token: {SECRET}",
])
def test_credentials_in_text_are_masked(text: str) -> None:
    out = redact_text(text)
    assert SECRET not in out and "[REDACTED]" in out


@pytest.mark.parametrize("text", [
    "gen_ai.usage.input_tokens: 1200", "max_tokens=5", "bearer token file changed", "secret_mask: on",
    '{"tokens": 12, "password_changed": true}', "tokens: [a, b]",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) is text


@pytest.mark.parametrize(("key", "sensitive"), [
    ("Authorization", True), ("api_key", True), ("X-Api-Key", True), ("token", True), ("tokens[1]", True),
    ("password", True), ("client_secret", True), ("endpoint", False), ("max_tokens", False), ("timeout", False),
])
def test_sensitive_keys(key: str, sensitive: bool) -> None:
    assert is_sensitive_key(key) is sensitive


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("otelpipe.test", logging.WARNING, __file__, 1, "export failed", None, None)
    record.__dict__.update(extra)
    return record


def test_log_lines_stay_valid_json_and_lose_the_credential() -> None:
    line = JSONFormatter().format(_record(headers={"Authorization": f"Bearer {SECRET}"}, tokens=42))
    doc = orjson.loads(line)
    assert doc["tokens"] == 42 and doc["headers"] == {"Authorization": "Bearer [REDACTED]"}
    assert SECRET not in ConsoleFormatter().format(_record(headers={"authorization": f"Bearer {SECRET}"}))
