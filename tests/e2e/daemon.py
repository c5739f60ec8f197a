"""Run the real `python -m otelpipe` process and read its JSON log lines."""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


class Daemon:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.stdout: list[str] = []  # what the debug exporter printed
        self._stdout_task: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, Any]:
        """Start and wait for the 'otelpipe is ready' line; returns it (admin + endpoints)."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "otelpipe", *self.args, cwd=str(ROOT), env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        # Drain stdout (the debug exporter's output) all along, so a full pipe never blocks the daemon.
        self._stdout_task = asyncio.create_task(self._drain_stdout())
        async with asyncio.timeout(20):
            while True:
                line = await self._readline()
                if line is None:
                    raise RuntimeError("otelpipe exited before ready:\n" + "\n".join(self.raw))
                if line.get("msg") == "otelpipe is ready":
                    return line

    async def _drain_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        while line := await self.proc.stdout.readline():
            self.stdout.append(line.decode().rstrip("\n"))

    async def _readline(self) -> dict[str, Any] | None:
        assert self.proc and self.proc.stderr
        raw = await self.proc.stderr.readline()
        if not raw:
            return None
        text = raw.decode().rstrip()
        self.raw.append(text)
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = {"text": text}
        self.lines.append(obj)
        return obj  # type: ignore[no-any-return]

    async def wait_for_log(self, msg: str, count: int = 1, timeout: float = 20) -> dict[str, Any]:
        """Read log lines until `count` of them (already read ones included) have `msg`; returns the last."""
        async with asyncio.timeout(timeout):
            while True:
                found = [line for line in self.lines if line.get("msg") == msg]
                if len(found) >= count:
                    return found[count - 1]
                if await self._readline() is None:
                    raise RuntimeError(f"otelpipe exited before logging {msg!r}:\n" + "\n".join(self.raw))

    async def stop(self, sig: int, timeout: float = 30) -> int:
        assert self.proc
        self.proc.send_signal(sig)
        async with asyncio.timeout(timeout):
            while await self._readline() is not None:
                pass
            return await self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.kill()

    async def close(self) -> None:
        """Kill if still running and reap the process (its transport must not outlive the event loop)."""
        self.kill()
        if self.proc is not None:
            await self.proc.wait()
        if self._stdout_task is not None:
            await self._stdout_task
