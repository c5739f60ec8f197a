"""The file exporter keeps telemetry private and cannot be pointed elsewhere by a symlink (issue 14)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from exporters import file as file_exporter
from exporters.file import FileExporter, FileExporterConfig
from pipeline.component import Kind
from pipeline.errors import StartError
from pipeline.model import Payload, Signal
from pipeline.testing import make_traces, nop_host, nop_settings


def make(path: Path) -> FileExporter:
    return file_exporter.create(nop_settings("file", Kind.EXPORTER, Signal.TRACES), FileExporterConfig(path=str(path)))


async def write_one(path: Path) -> None:
    exp = make(path)
    await exp.start(nop_host())
    try:
        await exp.push(Payload(Signal.TRACES, message=make_traces(1)))
    finally:
        await exp.shutdown()


async def test_a_new_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        await write_one(tmp_path / "out.jsonl")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o600


async def test_an_existing_world_readable_file_is_tightened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"")
    path.chmod(0o644)
    await write_one(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "tightened" in caplog.text
    assert path.read_bytes().count(b"\n") == 1


async def test_a_symlink_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"precious\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    exp = make(link)
    with pytest.raises(StartError, match="symbolic link; refusing to follow it"):
        await exp.start(nop_host())
    await exp.shutdown()
    assert target.read_bytes() == b"precious\n"


async def test_a_dangling_symlink_creates_nothing(tmp_path: Path) -> None:
    link = tmp_path / "out.jsonl"
    link.symlink_to(tmp_path / "would-be-created")
    with pytest.raises(StartError, match="symbolic link"):
        await make(link).start(nop_host())
    assert not (tmp_path / "would-be-created").exists()


async def test_something_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(StartError, match="not a regular file"):
        await make(fifo).start(nop_host())
