"""File exporter: appends each request as one line of OTLP/JSON (the Collector's `file` exporter).

The format is the one the Collector's file exporter and receiver use, so a
file written here can be replayed or inspected with `jq`. The file is opened
(created with mode 0600, since telemetry may hold private data) in start() and
closed in shutdown(); every line is flushed as soon as it is written. Writes
happen in a worker thread, one at a time, so a slow disk never stalls the
event loop and lines never interleave.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import BinaryIO

from pipeline import otlpjson
from pipeline.component import ExporterFactory, Host, Settings, Stability
from pipeline.config.types import Issue
from pipeline.errors import RetryableError
from pipeline.exporterhelper import ExporterConfig
from pipeline.model import Payload, Signal


@dataclass(frozen=True, slots=True, kw_only=True)
class FileExporterConfig(ExporterConfig):
    path: str = ""

    def validate(self) -> list[Issue]:
        out = ExporterConfig.validate(self)
        if not self.path:
            out.append(Issue("path", "is required: the file to append OTLP/JSON lines to, "
                                     "e.g. '/var/lib/otelpipe/traces.jsonl'"))
        return out


def _write_line(fh: BinaryIO, line: bytes) -> None:
    fh.write(line)
    fh.flush()


class FileExporter:
    def __init__(self, settings: Settings, cfg: FileExporterConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._fh: BinaryIO | None = None
        self._lock = asyncio.Lock()

    async def start(self, host: Host) -> None:
        if self._fh is not None:
            return
        fd = os.open(self.cfg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fh = os.fdopen(fd, "ab")
        self.settings.logger.info("file exporter started", extra={"path": self.cfg.path})

    async def push(self, payload: Payload) -> None:
        line = otlpjson.encode(payload.message) + b"\n"
        async with self._lock:
            fh = self._fh
            if fh is None:
                raise RetryableError(f"exporter {self.settings.id} is not started")
            await asyncio.to_thread(_write_line, fh, line)

    async def shutdown(self) -> None:
        async with self._lock:
            fh, self._fh = self._fh, None
            if fh is not None:
                await asyncio.to_thread(fh.close)
                self.settings.logger.info("file exporter stopped", extra={"path": self.cfg.path})


def create(settings: Settings, cfg: FileExporterConfig) -> FileExporter:
    return FileExporter(settings, cfg)


FACTORY = ExporterFactory(
    type="file",
    config_type=FileExporterConfig,
    signals={Signal.TRACES: Stability.ALPHA, Signal.METRICS: Stability.ALPHA, Signal.LOGS: Stability.ALPHA},
    create=create,
    description="Appends every request to a file as one line of OTLP/JSON.",
)
