"""What a reload may keep: the comparison of the running config with the new one.

The Collector rebuilds every component on reload, so sockets close, queues
drain or drop, and aggregates, series and sampling buffers start over. otelpipe
keeps a running component when its own settings (as loaded, after `${env:...}`
expansion) are unchanged and no extension its settings name has changed; the
graph then also requires it to sit at the same place (same pipeline and
signals). Everything else is replaced, new before old where their ports allow.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from pipeline.component import ComponentID, HasListeners, Kind
from pipeline.config.schema import Config


def config_digest(config: Config) -> str:
    """A short hash of the effective config (after expansion), shown on `/status` to tell which one runs.

    A hash of the whole document reveals nothing of the secrets in it.
    """
    doc = orjson.dumps(config.raw, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(doc).hexdigest()[:16]


def _settings(config: Config, kind: Kind, cid: ComponentID) -> Any:
    section = config.raw.get(kind.section)
    return section.get(str(cid)) if isinstance(section, Mapping) else None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


class ReloadPlan:
    """Answers, for one reload from `old` to `new`, which components may be taken over running."""

    def __init__(self, old: Config, new: Config) -> None:
        self.old = old
        self.new = new
        kept = set(new.enabled_extensions())
        self.changed_extensions = {
            cid for cid in old.enabled_extensions()
            if cid not in kept or _settings(old, Kind.EXTENSION, cid) != _settings(new, Kind.EXTENSION, cid)}

    def same_settings(self, kind: Kind, cid: ComponentID) -> bool:
        """Unchanged settings, and no changed extension named in them (e.g. a storage or authenticator)."""
        if kind is Kind.EXTENSION:
            return cid not in self.changed_extensions
        before, after = _settings(self.old, kind, cid), _settings(self.new, kind, cid)
        if cid not in self.old.components(kind) or before != after:
            return False
        names = {str(e) for e in self.changed_extensions}
        return not names or names.isdisjoint(_strings(after))

    def unchanged(self) -> bool:
        """Nothing to do: the same document (a reload then only counts `unchanged`)."""
        return config_digest(self.old) == config_digest(self.new)


def ports(settings: object) -> set[tuple[str, int]]:
    """The fixed (protocol, port) pairs a component's settings listen on (port 0 never conflicts)."""
    if not isinstance(settings, HasListeners):
        return set()
    return {(lst.protocol, lst.endpoint.port) for lst in settings.listeners()
            if lst.endpoint is not None and lst.endpoint.port}


def conflict(old_settings: object, new_settings: object) -> bool:
    """Whether the new component needs a port the old one holds (then the old one stops first)."""
    return bool(ports(old_settings) & ports(new_settings))
