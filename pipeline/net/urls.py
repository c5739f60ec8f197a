"""Checks of the URLs and headers an HTTP exporter is configured with, said without their secrets.

Endpoint URLs may carry credentials (`https://user:token@host/otlp?api_key=...`): user info is sent
as HTTP Basic auth (by aiohttp), and every message here shows only the redacted URL.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from yarl import URL

from pipeline.config.types import Issue, Secret
from pipeline.redact import redact_url


def parse_http_url(value: str) -> tuple[URL | None, str | None]:
    """`(url, None)` for a usable http(s) URL, else `(None, problem)` said without user info or query values."""
    shown = redact_url(value)
    try:
        url = URL(value)
    except ValueError as e:
        # yarl's reason may quote part of the URL: give it only when the URL holds nothing secret.
        reason = str(e) if shown == value else ("it does not parse; percent-encode '@', ':', '/', '?' and '#' "
                                                "inside the user name, password and query values")
        return None, f"invalid URL {shown!r}: {reason}"
    if url.scheme not in ("http", "https") or not url.host:
        return None, f"invalid URL {shown!r}: write http://host:port or https://host:port"
    return url, None


def has_userinfo(url: URL) -> bool:
    """Whether aiohttp will send Basic auth for this URL (it does for a user name or a password)."""
    return url.user is not None or url.password is not None


def url_problem(value: str, headers: Mapping[str, Secret]) -> str | None:
    """What is wrong with an endpoint URL given the configured headers, or None."""
    url, problem = parse_http_url(value)
    if problem:
        return problem
    if url is not None and has_userinfo(url) and any(name.lower() == "authorization" for name in headers):
        # aiohttp refuses to send both (a ValueError on every attempt).
        return ("holds a user name or password, which is sent as HTTP Basic auth, and "
                "headers.Authorization is set too: keep only one of them")
    return None


def header_issues(headers: Mapping[str, Secret], reserved: Iterable[str], why: str) -> list[Issue]:
    """An issue at `headers.<name>` for a header the exporter sets itself (`why` says from what) or a line break."""
    own = {name.lower() for name in reserved}
    out: list[Issue] = []
    for name, value in headers.items():
        if name.lower() in own:
            out.append(Issue(f"headers.{name}", f"'{name}' is set by the exporter {why}"))
        elif any(c in value.reveal() for c in "\r\n"):
            out.append(Issue(f"headers.{name}", "the value must not contain line breaks"))
    return out
