"""`sending_queue.storage` in a config: a directory, or a storage extension that is configured and enabled."""
from __future__ import annotations

import pytest

from extensions.file_storage import FileStorageConfig
from otelpipe import components
from pipeline.config.loader import load_text
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigError, ConfigIssue

BASE = """
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}}}
exporters:
  otlp: {{endpoint: "127.0.0.1:9", tls: {{insecure: true}}, sending_queue: {{storage: {storage}}}}}
{extensions}
service:
  extensions: {enabled}
  pipelines: {{traces: {{receivers: [otlp], exporters: [otlp]}}}}
"""


def load(storage: str, extensions: str = "", enabled: str = "[]") -> list[str]:
    try:
        load_text(BASE.format(storage=storage, extensions=extensions, enabled=enabled), components.factories(),
                  env={})
    except ConfigError as e:
        return [str(i) for i in e.issues if not i.warning]
    return []


@pytest.mark.parametrize("storage", ["/var/lib/otelpipe/queue", "./queue", "../q", "~/q"])
def test_a_directory_is_written_as_a_path(storage: str) -> None:
    assert load(storage) == []


def test_the_collectors_spelling_with_a_file_storage_extension() -> None:
    ext = "extensions: {file_storage: {directory: /var/lib/otelpipe/fs}, file_storage/b: {directory: /tmp/b}}"
    assert load("file_storage", ext, "[file_storage, file_storage/b]") == []
    assert load("file_storage/b", ext, "[file_storage, file_storage/b]") == []


def test_an_extension_that_is_not_configured_is_named_with_the_fix() -> None:
    (issue,) = load("file_storag", "extensions: {file_storage: {}}", "[file_storage]")
    assert "exporters.otlp.sending_queue.storage: references extension 'file_storag' which is not configured" in issue
    assert "did you mean 'file_storage'" in issue and "./file_storag" in issue


def test_an_extension_that_is_not_enabled_or_not_a_storage_is_refused() -> None:
    (issue,) = load("file_storage", "extensions: {file_storage: {}}")
    assert "extension 'file_storage' is configured but not enabled: add it to service.extensions" in issue
    (issue,) = load("health_check", "extensions: {health_check: {}, file_storage: {}}",
                    "[health_check, file_storage]")
    assert "extension 'health_check' is not a storage extension (storage extensions: file_storage)" in issue


def test_a_value_that_is_neither_is_refused() -> None:
    (issue,) = load("'queue dir'")
    assert "exporters.otlp.sending_queue.storage: 'queue dir' is neither a directory" in issue


def test_the_collectors_compaction_block_loads_with_a_warning_that_it_does_nothing() -> None:
    issues: list[ConfigIssue] = []
    decode_dataclass(FileStorageConfig, {"directory": "/var/lib/otelpipe/fs", "compaction": {
        "on_start": True, "directory": "/tmp/", "max_transaction_size": 65536}}, "extensions.file_storage", issues)
    assert [(i.path, i.warning) for i in issues] == [("extensions.file_storage.compaction", True)]
    assert "nothing to compact" in issues[0].message
    ext = "extensions: {file_storage: {directory: /var/lib/otelpipe/fs, compaction: {on_rebound: true}}}"
    assert load("file_storage", ext, "[file_storage]") == []  # a warning, not an error
