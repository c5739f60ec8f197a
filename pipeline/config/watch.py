"""`--watch-config`: reload when a config file's content changes (Kubernetes ConfigMap updates).

A ConfigMap volume updates by swapping a `..data` symlink, which inotify
watches on the file itself miss; so the watcher reads the files' content every
`interval` and compares hashes, which sees every kind of update (symlink swap,
rename, in-place write) at the cost of reading a few kilobytes a second. A
change is acted on once the content has stayed the same for one more interval,
so an editor's half-written file does not cause a failed reload first.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence


def file_sources(sources: Sequence[str]) -> list[str]:
    """The paths among `--config` sources (plain paths and `file:`; `env:`/`yaml:` cannot change)."""
    out = []
    for source in sources:
        scheme, sep, rest = source.partition(":")
        if sep and scheme in ("env", "yaml"):
            continue
        out.append(rest if sep and scheme == "file" else source)
    return out


def fingerprint(paths: Sequence[str]) -> str:
    """A hash of the files' contents (a missing or unreadable file counts as a distinct state)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except OSError as e:
            h.update(f"<{type(e).__name__}>".encode())
        h.update(b"\0")
    return h.hexdigest()


async def watch(paths: Sequence[str], on_change: Callable[[], None], interval: float = 1.0) -> None:
    """Call `on_change` whenever the content changes and then holds still for `interval`; runs until cancelled."""
    current = await asyncio.to_thread(fingerprint, paths)
    pending: str | None = None
    while True:
        await asyncio.sleep(interval)
        seen = await asyncio.to_thread(fingerprint, paths)
        if seen == current:
            pending = None
        elif seen == pending:
            current, pending = seen, None
            on_change()
        else:
            pending = seen
