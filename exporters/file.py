"""File exporter: appends each request as one line of OTLP/JSON (the Collector's `file` exporter).

The format is the one the Collector's file exporter and receiver use, so a
file written here can be replayed or inspected with `jq`. The file is opened
in start() and closed in shutdown(); every line is flushed as soon as it is
written. Writes happen in a worker thread, one at a time, so a slow disk never
stalls the event loop and lines never interleave.

Telemetry may hold private data, so the file is created with mode 0600 (missing
parent directories 0700), an existing file readable or writable by others is
tightened to 0600 (logged), and the path is opened with O_NOFOLLOW: a symlink
in its place (planted to make otelpipe write elsewhere) is refused at start,
as is anything that is not a regular file.
"""
from __future__ import annotations

import asyncio
import errno
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from pipeline import otlpjson
from pipeline.component import ExporterFactory, Host, Settings, Stability
from pipeline.config.types import Issue
from pipeline.errors import RetryableError, StartError
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


def _make_private_dirs(directory: str) -> None:
    """Create `directory` and every missing parent with mode 0700 (os.makedirs gives parents the default)."""
    missing: list[str] = []
    while not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for d in reversed(missing):
        os.mkdir(d, 0o700)


class FileExporter:
    def __init__(self, settings: Settings, cfg: FileExporterConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._fh: BinaryIO | None = None
        self._lock = asyncio.Lock()

    async def start(self, host: Host) -> None:
        if self._fh is not None:
            return
        self._fh = os.fdopen(await asyncio.to_thread(self._open), "ab")
        self.settings.logger.info("file exporter started", extra={"path": self.cfg.path})

    def _open(self) -> int:
        """The file descriptor of the file, opened safely (see the module docstring); StartError says why not."""
        path = self.cfg.path
        parent = os.path.dirname(os.path.abspath(path))
        try:
            _make_private_dirs(parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StartError(f"file exporter: {path!r} is a symbolic link; refusing to follow it "
                                 "(point path at the real file)") from None
            if e.errno == errno.ENXIO:  # a FIFO with no reader (opened non-blocking) or a device
                raise StartError(f"file exporter: {path!r} is not a regular file") from None
            raise StartError(f"file exporter: cannot open {path!r}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StartError(f"file exporter: {path!r} is not a regular file")
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
                self.settings.logger.warning("file exporter: tightened the file's permissions to 0600 "
                                             "(it was readable or writable by others)",
                                             extra={"path": path, "mode": oct(stat.S_IMODE(st.st_mode))})
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

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
