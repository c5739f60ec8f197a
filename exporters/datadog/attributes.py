"""OTLP attributes as Datadog sees them: values as strings, `key:value` tags, host and unified service tags.

- A value becomes a string as the Collector's `AsString` does: strings as they are, booleans
  `true`/`false`, integers in decimal, doubles in the shortest plain notation (`3`, `0.25`), bytes
  in base64, arrays and maps as JSON.
- A tag is `key:value`; an empty value becomes `key:n/a` (a tag cannot end with `:`).
- The host of a resource is its `datadog.host.name`, else its `host.name`, else the exporter's
  `hostname` (the machine's name when that is empty).
- `service.name`, `deployment.environment.name` (or the older `deployment.environment`) and
  `service.version` become the `service:`, `env:` and `version:` tags (Datadog's unified service
  tagging); with `resource_attributes_as_tags` every other resource attribute becomes a tag too.

`TagCache` keeps the tag of each serialized attribute (`KeyValue` bytes) seen recently, so the
attributes that repeat across data points (model, route, status) cost one dict lookup each.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from pipeline.anyvalue import as_string

HOST_KEYS = ("datadog.host.name", "host.name")
SERVICE_KEY = "service.name"
# resource attribute → unified service tag (the first present of each tag's keys wins)
UNIFIED_TAGS = (("service", ("service.name",)), ("env", ("deployment.environment.name", "deployment.environment")),
                ("version", ("service.version",)))
_UNIFIED_KEYS = frozenset(k for _, keys in UNIFIED_TAGS for k in keys)
EMPTY_TAG_VALUE = "n/a"
TAG_CACHE_SIZE = 65_536
# Attributes larger than this (serialized) are turned into tags every time, never cached: the cache's
# memory stays under about TAG_CACHE_SIZE * 2 * CACHED_ATTRIBUTE_MAX bytes whatever clients send.
CACHED_ATTRIBUTE_MAX = 512


def tag(key: str, value: str) -> str:
    return f"{key}:{value or EMPTY_TAG_VALUE}"


class TagCache:
    """`KeyValue` bytes → `key:value` tag, bounded (emptied when full: attributes that repeat refill it at once;
    large attributes are not kept)."""

    __slots__ = ("_tags",)

    def __init__(self) -> None:
        self._tags: dict[bytes, str] = {}

    def tags(self, attributes: Iterable[bytes]) -> tuple[str, ...]:
        get = self._tags.get
        return tuple([get(b) or self._miss(b) for b in attributes])

    def _miss(self, raw: bytes) -> str:
        kv = KeyValue.FromString(raw)
        text = tag(kv.key, as_string(kv.value))
        if len(raw) > CACHED_ATTRIBUTE_MAX:
            return text
        if len(self._tags) >= TAG_CACHE_SIZE:
            self._tags.clear()
        self._tags[raw] = text
        return text


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """What a resource contributes to every series or log of it: host, service and tags."""

    host: str
    service: str
    tags: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]  # every attribute as strings (log attributes)


def resource_info(raw: bytes, fallback_host: str, all_as_tags: bool) -> ResourceInfo:
    attrs = [(kv.key, as_string(kv.value)) for kv in Resource.FromString(raw).attributes] if raw else []
    values = dict(attrs)
    host = next((values[k] for k in HOST_KEYS if values.get(k)), fallback_host)
    tags = []
    for name, keys in UNIFIED_TAGS:
        value = next((values[k] for k in keys if values.get(k)), "")
        if value:
            tags.append(tag(name, value))
    if all_as_tags:
        tags.extend(tag(k, v) for k, v in attrs if k not in _UNIFIED_KEYS)
    return ResourceInfo(host, values.get(SERVICE_KEY, ""), tuple(tags), tuple(attrs))


def scope_tags(name: str, version: str) -> list[str]:
    """The Collector's `instrumentation_scope_metadata_as_tags`."""
    return [tag("instrumentation_scope", name), tag("instrumentation_scope_version", version)]
