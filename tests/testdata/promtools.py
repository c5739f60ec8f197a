"""Checks every Prometheus exposition a test produces with the real tools.

- Text format 0.0.4: `promtool check metrics` (Debian's `prometheus` package,
  which `make test` installs). It both parses and lints (HELP present, counter
  suffixes, base units, reserved suffixes); any finding fails the test.
- OpenMetrics: promtool 2.x only parses the 0.0.4 text format, so an
  OpenMetrics body is parsed by prometheus_client's strict OpenMetrics parser
  (which rejects malformed exemplars, missing `# EOF`, bad TYPE/UNIT, ...)
  and the parsed families are written back as 0.0.4 text for promtool's lint.

A missing promtool is a test failure, never a skip: these checks are what
the exposition tests are for.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

INSTALL_HINT = "install Debian's `prometheus` package (`make system-deps`, or `apt-get install -y prometheus`)"


def tool(name: str) -> str:
    """Absolute path of a Prometheus binary (PATH, then /usr/bin); AssertionError when absent."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found is None:
        raise AssertionError(f"`{name}` not found: {INSTALL_HINT}")
    return found


def assert_promtool_ok(text: bytes | str) -> None:
    """`promtool check metrics` accepts the 0.0.4 text exposition with no lint findings."""
    data = text.encode() if isinstance(text, str) else text
    assert not data.rstrip().endswith(b"# EOF"), "OpenMetrics body: use assert_openmetrics_ok"
    proc = subprocess.run([tool("promtool"), "check", "metrics"], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, (
        f"promtool check metrics failed (exit {proc.returncode}):\n{proc.stderr.decode()}{proc.stdout.decode()}\n"
        f"--- exposition ---\n{data.decode()[:4000]}")


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def assert_openmetrics_ok(text: bytes | str) -> list[Metric]:
    """Strict OpenMetrics parse, then promtool on the same families as text; returns the families."""
    body = text.decode() if isinstance(text, bytes) else text
    assert body.endswith("# EOF\n"), "an OpenMetrics exposition ends with '# EOF'"
    families = list(parse_openmetrics(body))
    assert_promtool_ok(generate_latest(_Families(families)))  # type: ignore[arg-type]
    return families


def samples(text: bytes | str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a 0.0.4 text exposition (checked with promtool first)."""
    assert_promtool_ok(text)
    body = text.decode() if isinstance(text, bytes) else text
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in parse_text(body):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def families(text: bytes | str) -> dict[str, Metric]:
    """Families of a 0.0.4 text exposition by name (checked with promtool first)."""
    assert_promtool_ok(text)
    body = text.decode() if isinstance(text, bytes) else text
    return {f.name: f for f in parse_text(body)}


__all__ = ["tool", "assert_promtool_ok", "assert_openmetrics_ok", "samples", "families", "INSTALL_HINT"]
