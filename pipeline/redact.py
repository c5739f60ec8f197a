"""The one place that turns a URL into something safe to print.

Exporter endpoints carry credentials (`https://user:token@host/otlp?api_key=...`), and a URL
gets printed in start-up lines, export errors, `otelpipe validate` and `/status`. Every such
place prints `redact_url(url)`: the user info becomes `[REDACTED]`, every query value and the
fragment become `[REDACTED]`, and scheme, host, port and path stay as written, so an operator
can still tell two endpoints apart.

It works on the text, not through a URL parser, because the URL printed in an error is often
the one that did not parse. When the text is ambiguous (an `@` after the host, which happens
when a password holds an unencoded `/`, `?` or `#`, or a host part that is not `host[:port]`),
everything after the scheme is redacted: printing too little beats printing a password.
`redact_text` applies the same to every `scheme://...` inside free text (exception messages
from libraries, backend error bodies), and is cheap enough for a logging last line of defence.
It also masks the value after a credential's name (`Authorization: Bearer abc`, `api_key=abc`,
`"token": "abc"`, `password=abc`): the name and an auth scheme stay, the value becomes
`[REDACTED]`. `is_sensitive_key` is the same list of names for config keys.
"""
from __future__ import annotations

import re

from yarl import URL

REDACTED = "[REDACTED]"

# `host`, `host:port`, `[v6]`, `[v6]:port`; no user info, spaces or delimiters.
_HOST_PORT_RE = re.compile(r"(?:\[[0-9A-Za-z:.%_\-]*\]|[^\s:/?#@\[\]]*)(?::[0-9]*)?")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# A URL inside free text ends at whitespace, a double quote or angle brackets.
_URL_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"<>]*")
_TRAILING_PUNCT = "'),.;:"


# Names whose value is a credential: header names, config keys, query-style parameters.
_SENSITIVE_NAMES = (r"(?:proxy-)?authorization|x-api-key|dd-api-key|api[_-]?key|apikey|app[_-]?key|"
                    r"(?:access|auth|refresh|bearer|id)[_-]?token|token|tokens|password|passwd|pwd|secret|"
                    r"client[_-]?secret|private[_-]?key|routing[_-]?key|cookie|set-cookie|credentials?")
_SENSITIVE_KEY_RE = re.compile(rf"(?:{_SENSITIVE_NAMES})(?:\[\d+\])?", re.IGNORECASE)
# `name: value`, `name=value`, `"name": "value"`, with an optional auth scheme kept in front of the value.
_CREDENTIAL_RE = re.compile(
    rf"""(?<!\w)((?:{_SENSITIVE_NAMES})(["'])?\s*[:=]\s*(["'])?)((?:bearer|basic|token|apikey|splunk|dsn)\s+)?"""
    rf"""(?!\[REDACTED\])([^\s"',;&}}\]\[{{]+)""",
    re.IGNORECASE)

_JSON_SCALAR_RE = re.compile(r"-?[0-9][0-9.eE+\-]*|true|false|null")


def is_sensitive_key(name: str) -> bool:
    """Whether a config key or header name holds a credential (`Authorization`, `api_key`, `token`, ...)."""
    return _SENSITIVE_KEY_RE.fullmatch(name.strip()) is not None


def redact_credentials(text: str) -> str:
    """`Authorization: Bearer abc` → `Authorization: Bearer [REDACTED]`; text without one is returned as is."""
    if _CREDENTIAL_RE.search(text) is None:
        return text
    out = _CREDENTIAL_RE.sub(_redact_credential, text)
    return text if out == text else out


def _redact_credential(m: re.Match[str]) -> str:
    if m.group(2) and not m.group(3) and _JSON_SCALAR_RE.fullmatch(m.group(5)):
        return m.group(0)  # a JSON number or boolean (`"tokens": 12`): no credential, and the line stays JSON
    return f"{m.group(1)}{m.group(4) or ''}{REDACTED}"


def redact_url(url: str | URL) -> str:
    """`http://u:p@h:1/x?k=v#f` → `http://[REDACTED]@h:1/x?k=[REDACTED]#[REDACTED]`; also for `host:port`."""
    text = str(url)
    head, hash_sep, fragment = text.partition("#")
    head, query_sep, query = head.partition("?")
    scheme, scheme_sep, rest = head.partition("://")
    if not scheme_sep:
        scheme, rest = "", head
    elif not _SCHEME_RE.fullmatch(scheme):
        return REDACTED
    prefix = f"{scheme}://" if scheme_sep else ""
    authority, slash, path = rest.partition("/")
    _userinfo, at, hostport = authority.rpartition("@")
    if "@" in path or "@" in query or "@" in fragment or not _HOST_PORT_RE.fullmatch(hostport):
        return prefix + REDACTED
    out = [prefix, f"{REDACTED}@" if at else "", hostport, slash, path]
    if query_sep:
        out.append("?" + _redact_query(query))
    if hash_sep:
        out.append("#" + (REDACTED if fragment else ""))
    return "".join(out)


def _redact_query(query: str) -> str:
    """Keep each parameter's name, never its value; a bare parameter (`?TOKEN`) may be the secret itself."""
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if eq else (REDACTED if part else ""))
    return "&".join(parts)


def has_secrets(url: str | URL) -> bool:
    """True when printing `url` as is would show user info, a query value or a fragment."""
    return redact_url(url) != str(url)


def redact_text(text: str) -> str:
    """Every `scheme://...` and every `credential-name: value` in free text, redacted; text with
    neither is returned unchanged (the same object)."""
    if "://" in text:
        text = _URL_IN_TEXT_RE.sub(_redact_match, text)
    return redact_credentials(text)


def _redact_match(m: re.Match[str]) -> str:
    found = m.group(0)
    if "?" in found or "#" in found:
        # Trailing punctuation is part of the (redacted) query value or fragment: nothing leaks.
        return redact_url(found)
    core = found.rstrip(_TRAILING_PUNCT)
    return redact_url(core) + found[len(core):]
