"""health_check, pprof and zpages extensions, run in the daemon from YAML and asked over real HTTP."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from otelpipe.components import factories
from otelpipe.defaults import load_config
from otelpipe.testing import running_service
from pipeline.errors import ConfigError

CONFIG = """
extensions:
  health_check:
    endpoint: 127.0.0.1:0
  health_check/custom:
    endpoint: 127.0.0.1:0
    path: /health/status
    response_body: {healthy: "I'm OK", unhealthy: "I'm not well"}
  pprof:
    endpoint: 127.0.0.1:0
  zpages:
    endpoint: 127.0.0.1:0
receivers:
  otlp:
    protocols:
      http: {endpoint: 127.0.0.1:0}
exporters:
  debug: {verbosity: basic}
service:
  extensions: [health_check, health_check/custom, pprof, zpages]
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
"""


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, r.content_type, await r.text()


def url(svc: object, ext: str, path: str) -> str:
    return f"http://{svc.endpoint('extension', ext, 'http')}{path}"  # type: ignore[attr-defined]


async def test_health_check_answers_the_collector_shape_while_ready_and_503_while_draining() -> None:
    async with running_service(CONFIG) as svc:
        status, ctype, body = await get(url(svc, "health_check", "/"))
        assert status == 200 and ctype == "application/json"
        assert '"status":"Server available"' in body and '"upSince":"' in body and '"uptime":"' in body
        assert await get(url(svc, "health_check/custom", "/health/status")) == (200, "text/plain", "I'm OK")
        assert (await get(url(svc, "health_check/custom", "/")))[0] == 404

        svc.draining = True
        status, _, body = await get(url(svc, "health_check", "/"))
        assert status == 503 and "Server not available" in body
        assert (await get(url(svc, "health_check/custom", "/health/status")))[::2] == (503, "I'm not well")


def test_health_check_path_must_start_with_a_slash() -> None:
    bad = CONFIG.replace("path: /health/status", "path: health/status")
    with pytest.raises(ConfigError) as err:
        load_config([f"yaml:{bad}"], factories(), env={})
    assert "health_check/custom" in str(err.value) and "must start with '/'" in str(err.value)


async def test_pprof_shows_threads_and_tasks_and_a_folded_cpu_profile() -> None:
    async with running_service(CONFIG) as svc:
        status, _, index = await get(url(svc, "pprof", "/debug/pprof/"))
        assert status == 200 and "/debug/pprof/profile" in index and "py-spy" in index

        status, _, dump = await get(url(svc, "pprof", "/debug/pprof/goroutine"))
        assert status == 200
        assert "thread MainThread" in dump
        assert "task " in dump and "_goroutine" in dump  # the handler's own task is among the tasks

        status, _, folded = await get(url(svc, "pprof", "/debug/pprof/profile?seconds=0.3"))
        assert status == 200
        lines = folded.splitlines()
        assert lines, "a 0.3 s profile at 100 Hz has samples"
        for line in lines:
            stack, _, count = line.rpartition(" ")
            assert int(count) >= 1 and ";" in stack
        assert any(line.startswith("MainThread;") for line in lines)

        for bad in ("0", "61", "abc", "-1"):
            assert (await get(url(svc, "pprof", f"/debug/pprof/profile?seconds={bad}")))[0] == 400

        status, _, heap = await get(url(svc, "pprof", "/debug/pprof/heap"))
        assert status == 200 and heap.startswith("max_rss_bytes ") and " dict\n" in heap


async def test_pprof_refuses_a_second_profile_while_one_runs() -> None:
    async with running_service(CONFIG) as svc:
        first = asyncio.create_task(get(url(svc, "pprof", "/debug/pprof/profile?seconds=1")))
        component = svc.component("extension", "pprof")
        while not component._profiling.locked():
            await asyncio.sleep(0.01)
        assert (await get(url(svc, "pprof", "/debug/pprof/profile?seconds=1")))[0] == 409
        assert (await first)[0] == 200


async def test_pprof_save_to_file_writes_the_whole_run_at_shutdown(tmp_path: Path) -> None:
    out = tmp_path / "cpu.folded"
    cfg = CONFIG.replace("  pprof:\n    endpoint: 127.0.0.1:0\n",
                         f"  pprof:\n    endpoint: 127.0.0.1:0\n    save_to_file: {out}\n    sample_hz: 200\n")
    async with running_service(cfg) as svc:
        sampler = svc.component("extension", "pprof")._lifetime
        while not sampler._counts:
            await asyncio.sleep(0.01)
        assert not out.exists()
    text = out.read_text()
    assert text and all(line.rpartition(" ")[2].isdigit() for line in text.splitlines())


async def test_zpages_serves_the_status_page_and_its_json_and_says_why_tracez_is_missing() -> None:
    async with running_service(CONFIG) as svc:
        for page in ("/debug/servicez", "/debug/pipelinez", "/debug/extensionz"):
            status, ctype, body = await get(url(svc, "zpages", page))
            assert status == 200 and ctype == "text/html" and "otelpipe status" in body
        # The page fetches "status" relative to itself: /debug/status.
        async with aiohttp.ClientSession() as s, s.get(url(svc, "zpages", "/debug/status")) as r:
            doc = await r.json()
        assert doc["ready"] is True and "traces" in doc["pipelines"]
        assert {c["id"] for c in doc["components"]} >= {"otlp", "debug"}
        assert {e["id"] for e in doc["extensions"]} == {"health_check", "health_check/custom", "pprof", "zpages"}
        for page in ("/debug/tracez", "/debug/rpcz"):
            status, _, body = await get(url(svc, "zpages", page))
            assert status == 501 and "/debug/servicez" in body
        assert (await get(url(svc, "zpages", "/debug/featurez")))[0] == 200


async def test_extension_ports_only_answer_get() -> None:
    async with running_service(CONFIG) as svc:
        async with aiohttp.ClientSession() as s, s.post(url(svc, "zpages", "/debug/status"), data=b"x") as r:
            assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"
