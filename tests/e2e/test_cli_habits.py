"""The Collector's command-line habits work unchanged (issue 16): `otelpipe --config F` runs, `--version`,
`--set key::path=value`, and `--config` sources `file:`, `env:` and `yaml:`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from pipeline.version import VERSION

from .daemon import ROOT, Daemon

CONFIG = """
receivers:
  otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
  telemetry:
    metrics: {address: "127.0.0.1:0"}
"""


def otelpipe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otelpipe", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, check=False)


def test_version() -> None:
    r = otelpipe("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"otelpipe version {VERSION}"


async def test_config_without_the_run_word_runs(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    d = Daemon("--config", str(cfg))
    try:
        ready = await d.start()
        async with aiohttp.ClientSession() as s, s.get(f"http://{ready['admin']}/healthz") as resp:
            assert resp.status == 200
        assert await d.stop(signal.SIGTERM) == 0
    finally:
        d.kill()


def test_set_overrides_a_key_after_every_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    ok = otelpipe("validate", "--config", str(cfg), "--set", "processors::batch::timeout=2s",
                  "--set", "service::pipelines::traces::processors=[batch]")
    assert ok.returncode == 0, ok.stderr
    bad = otelpipe("validate", "--config", str(cfg), "--set", "exporters::debug::verbosity=loud")
    assert bad.returncode == 1
    assert "exporters.debug.verbosity: invalid value 'loud'" in bad.stderr
    dotted = otelpipe("validate", "--config", str(cfg), "--set", "exporters.debug.verbosity=detailed")
    assert dotted.returncode == 0, dotted.stderr


def test_config_sources_file_env_and_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    assert otelpipe("validate", "--config", f"file:{cfg}").returncode == 0
    from_env = otelpipe("validate", "--config", "env:OTELPIPE_TEST_CONFIG", env={"OTELPIPE_TEST_CONFIG": CONFIG})
    assert from_env.returncode == 0, from_env.stderr
    inline = otelpipe("validate", "--config", "yaml:receivers::otlp::protocols::http: {}",
                      "--config", "yaml:exporters::debug: {}",
                      "--config", "yaml:service::pipelines::logs: {receivers: [otlp], exporters: [debug]}")
    assert inline.returncode == 0 and "1 pipeline(s): logs" in inline.stdout, inline.stderr
    missing = otelpipe("validate", "--config", "env:OTELPIPE_NOT_SET_ANYWHERE")
    assert missing.returncode == 1 and "environment variable OTELPIPE_NOT_SET_ANYWHERE is not set" in missing.stderr
