"""Where a configuration comes from: the Collector's `--config` URIs and `--set` overrides.

`--config` takes what the Collector's takes: a path (or `file:PATH`), `env:VAR`
(the YAML held by an environment variable) and `yaml:INLINE` (YAML on the
command line, with `::` separating nested keys, e.g.
`yaml:exporters::debug::verbosity: detailed`). Sources merge in order, later
keys winning. `--set key::path=value` (or `key.path=value` when no `::` is
used) is applied after every source, with the value read as YAML, as the
Collector's `--set` is: maps merge, lists and scalars are replaced.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from pipeline.config.confmap import RawConfig, load_files, merge_into, parse_yaml
from pipeline.errors import ConfigIssue

KEY_DELIMITER = "::"


def nest(data: Mapping[Any, Any]) -> dict[str, Any]:
    """`{"a::b": 1}` → `{"a": {"b": 1}}`, recursively (the Collector's yaml: provider key delimiter)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        value = nest(value) if isinstance(value, Mapping) else value
        parts = str(key).split(KEY_DELIMITER)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            merge_into(node[last], value, "", "", {})
        else:
            node[last] = value
    return out


def load_sources(sources: Sequence[str], env: Mapping[str, str]) -> tuple[RawConfig, list[ConfigIssue]]:
    """Load and merge `--config` sources in order; problems name the source."""
    raw = RawConfig()
    issues: list[ConfigIssue] = []
    for source in sources:
        scheme, sep, rest = source.partition(":")
        if sep and scheme == "env":
            text = env.get(rest)
            if text is None:
                issues.append(ConfigIssue("", f"environment variable {rest} is not set", file=source))
                continue
            _merge_text(raw, issues, text, source)
        elif sep and scheme == "yaml":
            _merge_text(raw, issues, rest, "yaml:<inline>", nested=True)
        else:
            path = rest if sep and scheme == "file" else source
            files, errs = load_files([path])
            issues.extend(errs)
            if not errs:
                raw.files.append(path)
                merge_into(raw.data, files.data, "", path, raw.origins)
    return raw, issues


def apply_sets(raw: RawConfig, sets: Sequence[str], issues: list[ConfigIssue]) -> None:
    """Apply `--set key::path=value` overrides on top of the loaded sources."""
    for item in sets:
        key, eq, value_text = item.partition("=")
        if not eq or not key.strip():
            issues.append(ConfigIssue("", f"--set {item!r}: write key::path=value, e.g. "
                                          "processors::batch::timeout=2s", file="--set"))
            continue
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else None
        except yaml.YAMLError:
            value = value_text
        parts = key.strip().split(KEY_DELIMITER) if KEY_DELIMITER in key else key.strip().split(".")
        overlay: dict[str, Any] = {parts[-1]: value}
        for part in reversed(parts[:-1]):
            overlay = {part: overlay}
        raw.files.append(f"--set {key.strip()}")
        merge_into(raw.data, overlay, "", f"--set {key.strip()}", raw.origins)


def _merge_text(raw: RawConfig, issues: list[ConfigIssue], text: str, name: str, *, nested: bool = False) -> None:
    data, errs = parse_yaml(text, name)
    issues.extend(errs)
    if errs:
        return
    raw.files.append(name)
    merge_into(raw.data, nest(data) if nested else data, "", name, raw.origins)
