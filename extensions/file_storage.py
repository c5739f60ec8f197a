"""The `file_storage` extension: where persistent sending queues keep their files (the Collector's filestorage).

```yaml
extensions:
  file_storage: {directory: /var/lib/otelpipe/file_storage, create_directory: true}
exporters:
  otlp: {endpoint: tempo:4317, sending_queue: {storage: file_storage}}
service:
  extensions: [file_storage]
```

Each queue gets a directory of its own inside `directory`, named as the
Collector names its files (`exporter_otlp_tempo_traces`). The keys are the
Collector's: `directory` (it must exist unless `create_directory`, which
creates it with `directory_permissions`, default 0750), `timeout` (how long
to wait for another process to let go of a queue's directory) and `fsync`.
One difference: `fsync` is on by default here, because a persistent queue
that acknowledges data must still have it after a power loss; with `fsync:
false` the queue survives a killed process (the data is in the kernel's page
cache) but not a crash of the machine. The Collector's `compaction` block is
accepted, so Collector configs load, with a warning: it does not apply (the
queue deletes finished segment files as it goes, so there is nothing to compact).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.component import ComponentID, ExtensionFactory, Host, Kind, Settings, Stability
from pipeline.config.types import Duration, Issue
from pipeline.errors import StartError
from pipeline.exporterhelper.segmentlog import make_dirs
from pipeline.exporterhelper.storage import DEFAULT_LOCK_TIMEOUT, StorageLocation, client_name

DEFAULT_DIRECTORY = "/var/lib/otelpipe/file_storage"


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactionConfig:
    """The Collector's `compaction` keys (its bbolt database needs compacting; segment files do not)."""

    directory: str = ""
    on_start: bool = False
    on_rebound: bool = False
    max_transaction_size: int = 65536
    rebound_needed_threshold_mib: int = 100
    rebound_trigger_threshold_mib: int = 10
    check_interval: Duration = Duration(5)
    cleanup_on_start: bool = False

    def validate(self) -> list[Issue]:
        if self.on_start or self.on_rebound or self.cleanup_on_start:
            return [Issue("", "has no effect: the queue deletes finished segment files as it goes, so there is "
                              "nothing to compact", warning=True)]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStorageConfig:
    directory: str = DEFAULT_DIRECTORY
    timeout: Duration = Duration(DEFAULT_LOCK_TIMEOUT)
    fsync: bool = True
    create_directory: bool = False
    directory_permissions: str = "0750"
    compaction: CompactionConfig = field(default_factory=CompactionConfig)

    def storage_root(self) -> str:
        return self.directory

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if not self.directory:
            out.append(Issue("directory", "must not be empty"))
        if self.timeout < 0:
            out.append(Issue("timeout", "must not be negative"))
        try:
            mode = int(self.directory_permissions, 8)
        except ValueError:
            mode = -1
        if not 0 <= mode <= 0o777:
            out.append(Issue("directory_permissions", f"must be octal permissions such as '0750', got "
                                                      f"{self.directory_permissions!r}"))
        return out


class FileStorage:
    """Hands each persistent queue its directory under `directory`."""

    def __init__(self, settings: Settings, cfg: FileStorageConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._mode = int(cfg.directory_permissions, 8)

    async def start(self, host: Host) -> None:
        root = Path(self.cfg.storage_root())
        if self.cfg.create_directory:
            try:
                make_dirs(root, self._mode)
            except OSError as e:
                raise StartError(f"cannot create directory {root}: {e.strerror}") from e
        elif not root.is_dir():
            raise StartError(f"directory {root} does not exist (or is not a directory): create it, or set "
                             "create_directory: true")
        self.settings.logger.info("file storage ready", extra={"directory": str(root), "fsync": self.cfg.fsync})

    async def shutdown(self) -> None:
        return None  # each queue closes its own files

    def queue_location(self, kind: Kind, component: ComponentID, name: str) -> StorageLocation:
        return StorageLocation(Path(self.cfg.storage_root()) / client_name(kind, component, name), fsync=self.cfg.fsync,
                               lock_timeout=float(self.cfg.timeout), directory_mode=self._mode)


def create(settings: Settings, cfg: FileStorageConfig) -> FileStorage:
    return FileStorage(settings, cfg)


FACTORY = ExtensionFactory(
    type="file_storage",
    config_type=FileStorageConfig,
    stability=Stability.BETA,
    create=create,
    description="Directory for persistent sending queues (sending_queue.storage: file_storage).",
)
