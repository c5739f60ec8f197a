"""File exporter: one OTLP/JSON request per line, appended."""
from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from exporters import file as file_exporter
from exporters.file import FileExporter, FileExporterConfig
from pipeline import otlpjson
from pipeline.component import Kind
from pipeline.config.types import decode_dataclass
from pipeline.errors import ConfigIssue, RetryableError
from pipeline.model import Payload, Signal
from pipeline.testing import (
    make_logs,
    make_metrics,
    make_traces,
    nop_host,
    nop_settings,
)


def make(path: Path, signal: Signal = Signal.TRACES) -> FileExporter:
    return file_exporter.create(nop_settings("file", Kind.EXPORTER, signal), FileExporterConfig(path=str(path)))


def decode(data: object) -> tuple[FileExporterConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    return decode_dataclass(FileExporterConfig, data, "exporters.file", issues), issues


def test_config() -> None:
    cfg, issues = decode({"path": "/tmp/x.jsonl"})
    assert issues == [] and cfg.path == "/tmp/x.jsonl" and cfg.sending_queue.enabled
    _, issues = decode({})
    assert [i.path for i in issues] == ["exporters.file.path"] and "is required" in issues[0].message
    _, issues = decode({"path": "/tmp/x", "pth": 1})
    assert [(i.path, i.message) for i in issues] == [("exporters.file.pth", "unknown key 'pth'; did you mean 'path'?")]


@pytest.mark.parametrize("signal", list(Signal))
async def test_one_request_per_line(tmp_path: Path, signal: Signal) -> None:
    path = tmp_path / "out.jsonl"
    exp = make(path, signal)
    await exp.start(nop_host())
    build = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}[signal]
    msgs = [build(3), build(1, service="other")]
    try:
        for m in msgs:
            await exp.push(Payload(signal, message=m))
            # flushed after each write: visible before shutdown
            assert path.read_bytes().count(b"\n") == msgs.index(m) + 1
    finally:
        await exp.shutdown()
    lines = path.read_bytes().splitlines()
    assert [otlpjson.decode(signal, line) for line in lines] == msgs
    assert lines[0] == otlpjson.encode(msgs[0])


async def test_appends_to_existing_file_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    for n in (2, 5):
        exp = make(path)
        await exp.start(nop_host())
        await exp.push(Payload(Signal.TRACES, message=make_traces(n)))
        await exp.shutdown()
    lines = path.read_bytes().splitlines()
    assert [Payload(Signal.TRACES, message=otlpjson.decode(Signal.TRACES, ln)).items for ln in lines] == [2, 5]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_concurrent_pushes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    exp = make(path)
    await exp.start(nop_host())
    await asyncio.gather(*(exp.push(Payload(Signal.TRACES, message=make_traces(50, name=f"r{i}")))
                           for i in range(20)))
    await exp.shutdown()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 20
    assert sorted(otlpjson.decode(Signal.TRACES, ln).resource_spans[0].scope_spans[0].spans[0].name  # type: ignore[union-attr]
                  for ln in lines) == sorted(f"r{i}-0" for i in range(20))


async def test_start_creates_missing_directories_private(tmp_path: Path) -> None:
    exp = make(tmp_path / "a" / "b" / "out.jsonl")
    await exp.start(nop_host())
    await exp.shutdown()
    assert [stat.S_IMODE((tmp_path / d).stat().st_mode) for d in ("a", "a/b")] == [0o700, 0o700]


async def test_lifecycle(tmp_path: Path) -> None:
    exp = make(tmp_path / "out.jsonl")
    await exp.shutdown()
    with pytest.raises(RetryableError, match="not started"):
        await exp.push(Payload(Signal.TRACES, message=make_traces(1)))
    await exp.start(nop_host())
    await exp.shutdown()
    await exp.shutdown()
    with pytest.raises(RetryableError):
        await exp.push(Payload(Signal.TRACES, message=make_traces(1)))
