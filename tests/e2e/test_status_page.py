"""The admin server's status page in a real headless browser (Debian's chromium): it renders every
configured component, drawn pipeline by pipeline, with a non-zero rate under load (issue 16)."""
from __future__ import annotations

import asyncio
import re
import shutil
from html.parser import HTMLParser

import aiohttp

from otelpipe.testing import running_service
from pipeline.service import Service
from pipeline.testing import make_logs, make_traces, wait_until

CONFIG = """
receivers:
  otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}
processors:
  batch: {timeout: 10ms}
  secret_mask: {}
exporters:
  debug: {}
  file: {path: "%s"}
connectors:
  forward: {}
service:
  pipelines:
    traces/in: {receivers: [otlp], processors: [batch], exporters: [forward]}
    traces/out: {receivers: [forward], processors: [secret_mask], exporters: [debug]}
    logs: {receivers: [otlp], exporters: [file]}
"""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps"]


class Boxes(HTMLParser):
    """Collects the rendered component boxes: data-component and the data-rate inside each."""

    def __init__(self) -> None:
        super().__init__()
        self.components: list[str] = []
        self.rates: dict[str, float] = {}
        self.pipelines: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-pipeline"):
            self.pipelines.append(str(a["data-pipeline"]))
        if a.get("data-component"):
            self.components.append(str(a["data-component"]))
        if a.get("data-rate") is not None and self.components:
            self.rates[self.components[-1]] = max(self.rates.get(self.components[-1], 0.0), float(a["data-rate"]))


async def rendered(url: str) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (make test installs it)"
    proc = await asyncio.create_subprocess_exec(
        chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=4000", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return out.decode()


async def load(svc: Service) -> None:
    base = f"http://{svc.endpoint('receiver', 'otlp', 'http')}"
    async with aiohttp.ClientSession() as s:
        for _ in range(25):
            for path, msg in (("/v1/traces", make_traces(4)), ("/v1/logs", make_logs(2))):
                async with s.post(base + path, data=msg.SerializeToString(),
                                  headers={"Content-Type": "application/x-protobuf"}) as r:
                    assert r.status == 200


async def test_status_page_shows_every_component_and_its_rate(tmp_path: object) -> None:
    async with running_service(CONFIG % f"{tmp_path}/logs.jsonl") as svc:
        await load(svc)
        html = await rendered(f"http://{svc.endpoint('admin', '', 'http')}/")
        boxes = Boxes()
        boxes.feed(html)
        assert sorted(set(boxes.pipelines)) == ["logs", "traces/in", "traces/out"]
        assert set(boxes.components) >= {"receiver/otlp", "processor/batch", "processor/secret_mask",
                                         "connector/forward", "exporter/debug", "exporter/file"}
        assert boxes.rates["receiver/otlp"] > 0 and boxes.rates["exporter/file"] > 0, boxes.rates
        assert re.search(r"version \S+ · ready", html), html[:500]


async def test_status_json_carries_activity_and_last_errors(tmp_path: object) -> None:
    async with running_service(CONFIG % f"{tmp_path}/logs.jsonl") as svc:
        await load(svc)
        tel = svc.telemetry
        await wait_until(lambda: tel.value("otelpipe_exporter_sent_spans_total", exporter="debug") == 100,
                         what="the batch to flush to debug")
        # The file exporter writes from its own queue after the 200: wait for it as well.
        await wait_until(lambda: tel.value("otelpipe_exporter_sent_log_records_total", exporter="file") == 50,
                         what="the file exporter to write every log record")
        status = svc.status()
    comps = {(c["kind"], c["id"], c["pipeline"]): c for c in status["components"]}
    otlp = comps[("receiver", "otlp", None)]["activity"]
    assert otlp["accepted"] == 25 * 4 + 25 * 2 and otlp["rate"] > 0
    batch = comps[("processor", "batch", "traces/in")]["activity"]
    assert batch["incoming"] == 100 and batch["outgoing"] == 100
    assert comps[("exporter", "file", None)]["activity"]["sent"] == 50
    assert comps[("exporter", "debug", None)]["last_errors"] == []


async def test_otelpipe_top_prints_the_same_live_numbers(tmp_path: object) -> None:
    import sys

    async with running_service(CONFIG % f"{tmp_path}/logs.jsonl") as svc:
        await load(svc)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "otelpipe", "top", "--once", "--admin", svc.endpoint("admin", "", "http"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith("otelpipe ") and "ready" in lines[0]
    otlp = next(line for line in lines if line.startswith("receiver/otlp"))
    rate = float(otlp.split()[1].replace(",", ""))
    assert rate > 0 and " 150" in otlp, otlp
    assert any(line.startswith("connector/forward") for line in lines)
