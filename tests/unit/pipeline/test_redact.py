"""pipeline.redact: user info, query values and fragments never survive; scheme, host, port and path do."""
from __future__ import annotations

import pytest
from yarl import URL

from pipeline.redact import REDACTED, has_secrets, redact_text, redact_url

R = REDACTED


@pytest.mark.parametrize(("url", "shown"), [
    ("https://otlp.example.com:4318/otlp", "https://otlp.example.com:4318/otlp"),
    ("http://gw:4318/otlp/v1/traces?api_key=K123", f"http://gw:4318/otlp/v1/traces?api_key={R}"),
    ("http://user:s3cr3tpw@127.0.0.1:4318/otlp?api_key=K123", f"http://{R}@127.0.0.1:4318/otlp?api_key={R}"),
    ("https://t0k3n@h/", f"https://{R}@h/"),
    ("https://:s3cr3tpw@h", f"https://{R}@h"),
    ("http://us er:s3:cr3t@pw@h", f"http://{R}@h"),
    ("http://u:p%40ss@[::1]:4318/x", f"http://{R}@[::1]:4318/x"),
    ("http://h/x?a=1&b=&K123&&c=d%26e", f"http://h/x?a={R}&b={R}&{R}&&c={R}"),
    ("http://h/x#access_token=K123", f"http://h/x#{R}"),
    ("http://h/x?", "http://h/x?"),
    ("user:s3cr3tpw@collector:4317", f"{R}@collector:4317"),
    ("collector:4317?api_key=K123", f"collector:4317?api_key={R}"),
    ("/v1/traces?token=K123", f"/v1/traces?token={R}"),
    ("collector:4317", "collector:4317"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert has_secrets(url) == (url != shown)


@pytest.mark.parametrize("url", [
    "http://user:s3cr/3tpw@h/otlp",      # unencoded '/' in the password: host part is 'user:s3cr'
    "http://user:12?s3cr3tpw@h/otlp",    # unencoded '?': would look like host 'user', port 12
    "http://user:12#s3cr3tpw@h/otlp",
    "http://user:s3cr3tpw@[::1/otlp",    # unbalanced IPv6 bracket
    "http://h/otlp?contact=ops@example.com&api_key=K123",  # '@' outside the host: ambiguous, so all goes
])
def test_ambiguous_urls_keep_only_the_scheme(url: str) -> None:
    assert redact_url(url) == f"http://{R}"


def test_yarl_urls_are_redacted_in_their_encoded_form() -> None:
    url = URL("http://user:s3cr3tpw@127.0.0.1:4318/otlp/v1/traces?api_key=K 1")
    assert redact_url(url) == f"http://{R}@127.0.0.1:4318/otlp/v1/traces?api_key={R}"


def test_redact_text_finds_every_url() -> None:
    text = ("POST http://user:s3cr3tpw@h:1/otlp/v1/traces?api_key=K123 failed; "
            "InvalidURL('https://h:2/x?token=K123'), see <http://h:3/ok>.")
    out = redact_text(text)
    assert out == (f"POST http://{R}@h:1/otlp/v1/traces?api_key={R} failed; "
                   f"InvalidURL('https://h:2/x?token={R} see <http://h:3/ok>.")  # the value ran to the space
    assert "s3cr3tpw" not in out and "K123" not in out


def test_redact_text_keeps_punctuation_after_a_url_without_query() -> None:
    assert redact_text("endpoint 'http://u:p@h:1/x', then http://h:2.") == f"endpoint 'http://{R}@h:1/x', then http://h:2."


def test_redact_text_without_urls_is_unchanged() -> None:
    text = "Cannot connect to host 127.0.0.1:9 ssl:default [Connect call failed ('127.0.0.1', 9)]"
    assert redact_text(text) is text
    assert redact_text('{"msg": "user@example.com"}') == '{"msg": "user@example.com"}'
