"""`otelpipe top --admin HOST:PORT`: the status page's live numbers in a terminal.

Reads the admin server's `/status` (the same JSON the status page draws) and
prints one line per component: items per second over the last minute, totals,
refusals and drops with their reasons, queue fill. `--once` prints a single
table (for scripts); otherwise it redraws every `--interval` seconds until
interrupted.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, TextIO

_BAD = ("refused", "dropped", "send_failed", "enqueue_failed")


def fetch_status(admin: str, timeout: float = 5.0) -> dict[str, Any]:
    url = admin if admin.startswith(("http://", "https://")) else f"http://{admin}"
    with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=timeout) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def _num(v: float) -> str:
    return f"{v:,.1f}" if v % 1 else f"{int(v):,}"


def _reasons(counts: Mapping[str, float]) -> str:
    return ", ".join(f"{reason}={_num(n)}" for reason, n in counts.items())


def render(status: Mapping[str, Any]) -> str:
    """The table for one `/status`: a header line, then one line per component."""
    head = (f"otelpipe {status.get('version', '?')} · {'ready' if status.get('ready') else 'not ready'}"
            f"{' · draining' if status.get('draining') else ''} · up {status.get('uptime_s', 0):.0f}s")
    rows = [("COMPONENT", "PIPELINE", "ITEMS/S", "TOTAL", "PROBLEMS", "QUEUE")]
    for c in status.get("components", []):
        a = c.get("activity") or {}
        total = next((a[k] for k in ("accepted", "incoming", "sent") if k in a), 0.0)
        problems = ", ".join(f"{k} {_num(a[k])} ({_reasons(a.get(k + '_reasons', {}))})" for k in _BAD if a.get(k))
        queue = f"{_num(a['queue_size'])}/{_num(a['queue_capacity'])}" if a.get("queue_capacity") else ""
        rows.append((f"{c['kind']}/{c['id']}", c.get("pipeline") or "", _num(a.get("rate", 0.0)), _num(total),
                     problems, queue))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, ""] + ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def top(admin: str, *, once: bool, interval: float, out: TextIO = sys.stdout) -> int:
    try:
        while True:
            try:
                table = render(fetch_status(admin))
            except (urllib.error.URLError, OSError, ValueError) as e:
                print(f"otelpipe top: cannot read {admin}/status: {e}", file=sys.stderr)
                return 1
            if not once and out.isatty():
                out.write("\x1b[H\x1b[2J")  # clear the screen between frames
            out.write(table)
            out.flush()
            if once:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
