"""The `pprof` extension: the Collector's profiling endpoint (default localhost:1777), for a Python process.

Go's `/debug/pprof/` cannot exist here, so this serves what an operator asks
pprof for, in Python terms:

- `/debug/pprof/goroutine` (also `/debug/pprof/threads`): the stack of every
  thread and of every asyncio task, so a stuck await or a busy loop is visible
  in a running daemon without attaching a debugger;
- `/debug/pprof/profile?seconds=N`: a sampling CPU profile of N seconds (1–60,
  default 30) in the folded-stack format flamegraph.pl, speedscope and
  inferno read. The sampler runs in its own thread at `sample_hz`, so the event
  loop is never paused to take it;
- `/debug/pprof/heap`: resident memory, garbage-collector counts and the 30
  most numerous object types.

`save_to_file` samples for the whole run and writes the folded stacks at
shutdown (the Collector writes its CPU profile then too). For native frames and
allocation profiles use py-spy or memray on the process; the start-up log line
says so. `block_profile_fraction` and `mutex_profile_fraction` are accepted so
Collector configs load, and warned about when set: Python has no equivalent.
"""
from __future__ import annotations

import asyncio
import collections
import gc
import os
import resource
import sys
import threading
import traceback
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType

from aiohttp import web

from extensions.httpserve import RouteServer
from pipeline.component import ExtensionFactory, Host, Listener, Settings, Stability
from pipeline.config.types import Issue
from pipeline.net.endpoint import Endpoint

MAX_PROFILE_SECONDS = 60
DEFAULT_PROFILE_SECONDS = 30
MAX_STACK_DEPTH = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class PprofConfig:
    endpoint: Endpoint = field(default_factory=lambda: Endpoint.listen("localhost:1777"))
    block_profile_fraction: int = 0
    mutex_profile_fraction: int = 0
    save_to_file: str = ""
    sample_hz: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.endpoint, str):  # built in code with text; the decoder passes an Endpoint
            object.__setattr__(self, "endpoint", Endpoint.listen(self.endpoint))

    def validate(self) -> list[Issue]:
        issues = []
        if not 1 <= self.sample_hz <= 1000:
            issues.append(Issue("sample_hz", f"must be between 1 and 1000, got {self.sample_hz}"))
        for key in ("block_profile_fraction", "mutex_profile_fraction"):
            if getattr(self, key) < 0:
                issues.append(Issue(key, "must not be negative"))
        return issues

    def listeners(self) -> list[Listener]:
        return [Listener("tcp", self.endpoint, "endpoint")]


def _fold(frame: FrameType | None) -> str:
    """One stack as `outermost;...;innermost` of `function (file:line)` frames (the folded format)."""
    names: list[str] = []
    while frame is not None and len(names) < MAX_STACK_DEPTH:
        code = frame.f_code
        names.append(f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})")
        frame = frame.f_back
    return ";".join(reversed(names))


class Sampler:
    """Samples every thread's stack at `hz` from a daemon thread; `folded()` is the count per stack."""

    def __init__(self, hz: int) -> None:
        self._interval = 1.0 / hz
        self._counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otelpipe-pprof-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        while not self._stop.wait(self._interval):
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                if ident not in names:
                    names = {t.ident: t.name for t in threading.enumerate()}
                self._counts[f"{names.get(ident, ident)};{_fold(frame)}"] += 1

    def folded(self) -> str:
        return "".join(f"{stack} {n}\n" for stack, n in sorted(self._counts.items()))


def thread_dump() -> str:
    """Every thread's stack, then every asyncio task's (what Go's goroutine?debug=2 shows)."""
    out: list[str] = []
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.append(f"thread {names.get(ident, '?')} ({ident}):\n")
        out.extend(traceback.format_stack(frame))
        out.append("\n")
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        tasks = set()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        coro = task.get_coro()
        out.append(f"task {task.get_name()} [{getattr(coro, '__qualname__', coro)}]:\n")
        for frame in task.get_stack():
            out.extend(traceback.format_stack(frame, limit=1))
        out.append("\n")
    return "".join(out)


def heap_summary() -> str:
    """Resident memory, gc state and the most numerous object types (walks the heap once: seconds on a huge one)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    types: Counter[str] = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    lines = [f"max_rss_bytes {usage.ru_maxrss * 1024}\n",
             f"gc_counts {' '.join(map(str, gc.get_count()))}\n",
             f"gc_tracked_objects {sum(types.values())}\n", "\n"]
    lines.extend(f"{n:>10} {name}\n" for name, n in types.most_common(30))
    return "".join(lines)


INDEX = """otelpipe pprof (a Python process: Go's pprof formats are not available)

/debug/pprof/goroutine        stacks of every thread and asyncio task (also /debug/pprof/threads)
/debug/pprof/profile?seconds=N  sampling CPU profile in folded-stack format (flamegraph.pl, speedscope)
/debug/pprof/heap             resident memory, gc counts, most numerous object types

For native frames or allocation profiles run py-spy or memray against the process.
"""


class Pprof:
    def __init__(self, settings: Settings, cfg: PprofConfig) -> None:
        self.settings = settings
        self.cfg = cfg
        self._lifetime: Sampler | None = None
        self._profiling = asyncio.Lock()
        self._server = RouteServer(cfg.endpoint, {
            "/debug/pprof": self._index, "/debug/pprof/": self._index,
            "/debug/pprof/goroutine": self._goroutine, "/debug/pprof/threads": self._goroutine,
            "/debug/pprof/profile": self._profile, "/debug/pprof/heap": self._heap})
        self.endpoints: dict[str, str] = {}

    async def start(self, host: Host) -> None:
        await self._server.start()
        self.endpoints = {"http": self._server.address}
        if self.cfg.save_to_file:
            self._lifetime = Sampler(self.cfg.sample_hz)
            self._lifetime.start()
        if self.cfg.block_profile_fraction or self.cfg.mutex_profile_fraction:
            self.settings.logger.warning("block_profile_fraction and mutex_profile_fraction have no Python "
                                         "equivalent and are ignored")
        self.settings.logger.info("pprof listening; for native frames or allocations use py-spy or memray",
                                  extra={"endpoint": self._server.address})

    async def shutdown(self) -> None:
        await self._server.stop()
        sampler, self._lifetime = self._lifetime, None
        if sampler is not None:
            await asyncio.to_thread(sampler.stop)
            await asyncio.to_thread(self._save, sampler.folded())

    def _save(self, folded: str) -> None:
        try:
            with open(self.cfg.save_to_file, "w", encoding="utf-8") as f:
                f.write(folded)
        except OSError as e:
            self.settings.logger.error("could not write the profile", extra={"path": self.cfg.save_to_file,
                                                                              "error": str(e)})

    async def _index(self, _request: web.BaseRequest) -> web.Response:
        return web.Response(text=INDEX)

    async def _goroutine(self, _request: web.BaseRequest) -> web.Response:
        return web.Response(text=thread_dump())

    async def _heap(self, _request: web.BaseRequest) -> web.Response:
        return web.Response(text=heap_summary())

    async def _profile(self, request: web.BaseRequest) -> web.Response:
        raw = request.query.get("seconds", str(DEFAULT_PROFILE_SECONDS))
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds <= MAX_PROFILE_SECONDS:
            return web.Response(status=400, text=f"seconds must be a number in (0, {MAX_PROFILE_SECONDS}]\n")
        if self._profiling.locked():
            return web.Response(status=409, text="a profile is already being taken\n")
        async with self._profiling:
            sampler = Sampler(self.cfg.sample_hz)
            sampler.start()
            try:
                await asyncio.sleep(seconds)
            finally:
                await asyncio.to_thread(sampler.stop)
        return web.Response(text=sampler.folded())


def create(settings: Settings, cfg: PprofConfig) -> Pprof:
    return Pprof(settings, cfg)


FACTORY = ExtensionFactory(
    type="pprof",
    config_type=PprofConfig,
    stability=Stability.BETA,
    create=create,
    description="Thread and task stacks, a sampling CPU profile in folded format and a heap summary over HTTP.",
)
