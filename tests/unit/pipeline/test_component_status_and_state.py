"""Two small, general hooks: a component's own status on `/status` (`HasStatus`), and state handed from a
component to its successor across a config reload (`CarriesState`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from pipeline.component import ExporterFactory, Kind, Settings, Stability, make_factory_map
from pipeline.config.loader import load_text
from pipeline.exporterhelper import ExporterConfig
from pipeline.model import Payload, Signal
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from pipeline.testing import make_traces, payload
from tests.testdata.fakes import factories as fake_factories


@dataclass(frozen=True, slots=True, kw_only=True)
class CountingConfig(ExporterConfig):
    label: str = ""


class CountingExporter:
    """Counts what it is pushed; shows the count on /status and hands it to its successor on reload."""

    def __init__(self, settings: Settings, cfg: CountingConfig, made: list[CountingExporter]) -> None:
        self.label = cfg.label
        self.pushed = 0
        self.received: object = None
        made.append(self)

    async def start(self, host: object) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def push(self, p: Payload) -> None:
        self.pushed += p.items

    def status(self) -> Mapping[str, Any]:
        return {"label": self.label, "pushed": self.pushed}

    def handover_state(self) -> object:
        return {"pushed": self.pushed}

    def takeover_state(self, state: object) -> None:
        self.received = state
        if isinstance(state, dict):
            self.pushed = state["pushed"]


def factories(made: list[CountingExporter]) -> dict[Kind, dict[str, Any]]:
    base = fake_factories()
    return make_factory_map([*(f for kinds in base.values() for f in kinds.values()),
                             ExporterFactory(type="counting", config_type=CountingConfig,
                                             signals={Signal.TRACES: Stability.ALPHA},
                                             create=lambda s, c: CountingExporter(s, c, made))])


CONFIG = """
receivers: {fake: {}}
exporters:
  counting: {label: LABEL, sending_queue: {enabled: false}}
  sink: {}
service:
  pipelines:
    traces: {receivers: [fake], exporters: [counting, sink]}
  telemetry: {metrics: {address: "127.0.0.1:0"}}
"""


async def test_a_component_status_is_shown_under_its_entry_on_the_status_page() -> None:
    made: list[CountingExporter] = []
    fmap = factories(made)
    svc = Service(load_text(CONFIG.replace("LABEL", "one"), fmap, env={}), fmap,
                  telemetry=Telemetry(process_metrics=False))
    await svc.start()
    try:
        await svc.graph.exporters[0].component.consume(payload(Signal.TRACES, make_traces(3)))  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://{svc.endpoint('admin', '', 'http')}/status") as r:
            body = await r.json()
        by_id = {c["id"]: c for c in body["components"]}
        assert by_id["counting"]["status"] == {"label": "one", "pushed": 3}
        assert "status" not in by_id["sink"]  # a component that offers none shows none
    finally:
        await svc.shutdown()


async def test_reload_hands_state_to_the_component_with_the_same_id() -> None:
    made: list[CountingExporter] = []
    fmap = factories(made)
    texts = [CONFIG.replace("LABEL", "two")]
    svc = Service(load_text(CONFIG.replace("LABEL", "one"), fmap, env={}), fmap,
                  telemetry=Telemetry(process_metrics=False), reload_config=lambda: load_text(texts[0], fmap, env={}))
    await svc.start()
    try:
        await svc.graph.exporters[0].component.consume(payload(Signal.TRACES, make_traces(4)))  # type: ignore[union-attr]
        assert (await svc.reload()).result == "ok"
        assert len(made) == 2 and made[1].received == {"pushed": 4}
        (counting,) = [c for c in svc.status()["components"] if c["id"] == "counting"]
        assert counting["status"] == {"label": "two", "pushed": 4}
        # a new config that fails to start: the old one runs on with its state
        texts[0] = CONFIG.replace("LABEL", "three").replace("sink: {}", "sink: {}\n  counting/bad: {label: x}")
        texts[0] = texts[0].replace("exporters: [counting, sink]", "exporters: [counting, sink, counting/bad]")

        def boom(settings: Settings, cfg: CountingConfig) -> CountingExporter:
            exp = CountingExporter(settings, cfg, made)
            if cfg.label == "x":
                async def fail(host: object) -> None:
                    raise RuntimeError("cannot start")
                exp.start = fail  # type: ignore[method-assign]
            return exp

        fmap[Kind.EXPORTER]["counting"] = ExporterFactory(type="counting", config_type=CountingConfig,
                                                          signals={Signal.TRACES: Stability.ALPHA}, create=boom)
        assert (await svc.reload()).result == "failed"
        running = svc.component("exporter", "counting")  # the old one, kept running
        assert (running.label, running.pushed) == ("two", 4)
    finally:
        await svc.shutdown()
