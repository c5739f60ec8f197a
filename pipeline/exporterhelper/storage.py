"""Where a persistent sending queue keeps its files: `sending_queue.storage`.

The value is either a directory (an absolute path, or one that starts with
`./`, `../` or `~`) or the id of a storage extension, as the Collector spells
it (`sending_queue.storage: file_storage` with `extensions: {file_storage:
{directory: ...}}` listed in `service.extensions`). Either way each queue gets
a directory of its own inside it, named as the Collector's file storage names
its files: `exporter_<type>_<name>_<signal>`, with every character other than
letters, digits, `.`, `-` and `_` written as `~XXXX` (its code point in hex).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipeline.component import ComponentID, Host, Kind
from pipeline.errors import StartError

DEFAULT_DIRECTORY_MODE = 0o750  # the Collector's file storage default
DEFAULT_LOCK_TIMEOUT = 1.0      # the Collector's file storage `timeout`


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """One queue's directory and how to write it."""

    directory: Path
    fsync: bool = True
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    directory_mode: int = DEFAULT_DIRECTORY_MODE


@runtime_checkable
class QueueStorage(Protocol):
    """A storage extension (file_storage): the directory a component's persistent queue `name` uses."""

    def queue_location(self, kind: Kind, component: ComponentID, name: str) -> StorageLocation: ...


@runtime_checkable
class StorageConfig(Protocol):
    """The config of a storage extension: `storage_root()` is the directory its queues live under."""

    def storage_root(self) -> str: ...


def is_directory(value: str) -> bool:
    """Whether `sending_queue.storage` names a directory rather than a storage extension."""
    return value.startswith(("/", "./", "../", "~")) or value in (".", "..")


def client_name(kind: Kind, component: ComponentID, name: str) -> str:
    """`exporter_otlp_tempo_traces`: the Collector's file storage name for one client, made safe for a path."""
    return sanitize(f"{kind.value}_{component.type}_{component.name}_{name}")


def sanitize(name: str) -> str:
    return "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else f"~{ord(c):04X}" for c in name)


def resolve(storage: str, host: Host | None, kind: Kind, component: ComponentID, name: str) -> StorageLocation:
    """The location `storage` gives this queue; StartError when it names no running storage extension."""
    if is_directory(storage):
        return StorageLocation(Path(storage).expanduser() / client_name(kind, component, name))
    ext_id = ComponentID.parse(storage)  # validated when the config was loaded
    ext = host.extensions().get(ext_id) if host is not None else None
    if ext is None:
        raise StartError(f"sending_queue.storage: extension '{storage}' is not running; configure it under "
                         f"'extensions' and list it in service.extensions")
    if not isinstance(ext, QueueStorage):
        raise StartError(f"sending_queue.storage: extension '{storage}' is not a storage extension "
                         f"(use file_storage, or a directory)")
    return ext.queue_location(kind, component, name)
