"""What `otelpipe validate`, the start-up error and a failed reload may print of a config's values.

Two leaks the decoder's own care (Secret fields, redacted URLs) does not cover:

- a value that came from the environment (`${env:OTLP_TOKEN}`) written under the wrong key, where
  the message quotes what it got ("expected an integer, got string '<the token>'");
- a literal value under a credential's name (`headers.Authorization`, `api_key`, `token`,
  `password`: `pipeline.redact.is_sensitive_key`) quoted by a message about it.

`mask_issues` rewrites the messages: every expanded environment value (of 4 characters or more,
digits-only values such as ports excepted) and every quoted value in an issue under a sensitive
key become `[REDACTED]`; and every message goes through `redact_text` (URLs, `name: value` pairs).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.errors import ConfigIssue
from pipeline.redact import REDACTED, is_sensitive_key, redact_text

_ENV_NAME_RE = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)")
_QUOTED_RE = re.compile(r"'[^']*'|\"[^\"]*\"")
MIN_MASKED_LENGTH = 4


def env_values(data: Any, env: Mapping[str, str]) -> list[str]:
    """The values of the environment variables the raw config refers to (longest first), worth masking."""
    names: set[str] = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(k for k in item if isinstance(k, str))
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "${" in item:
            names.update(_ENV_NAME_RE.findall(item))
    values = {env[n] for n in names if n in env}
    return sorted((v for v in values if len(v) >= MIN_MASKED_LENGTH and not v.isdigit()), key=len, reverse=True)


def mask_issue(issue: ConfigIssue, secrets: Iterable[str]) -> ConfigIssue:
    message = issue.message
    for value in secrets:
        message = message.replace(value, REDACTED)
    last = issue.path.rpartition(".")[2]
    if last and is_sensitive_key(last):
        message = _QUOTED_RE.sub(f"'{REDACTED}'", message)
    message = redact_text(message)
    if message == issue.message:
        return issue
    return ConfigIssue(issue.path, message, issue.warning, issue.file)
