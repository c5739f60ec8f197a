"""Live reload: unchanged components are kept running, replaced exporters hand their data over, failures roll back."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pipeline.component import ComponentID
from pipeline.config.loader import load_text
from pipeline.errors import RetryableError
from pipeline.exporterhelper import ExporterHelper
from pipeline.model import Signal
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from pipeline.testing import payload
from tests.testdata.fakes import FakeReceiver, SinkExporter, connector_factories

BASE = """
extensions:
  recorder: {{label: one}}
receivers:
  fake: {{}}
  fake/other: {{}}
processors:
  tag: {{value: t}}
exporters:
  sink:
    api_key: {key}
    sending_queue: {{num_consumers: {consumers}}}
    retry_on_failure: {{initial_interval: 5ms, max_interval: 5ms, max_elapsed_time: 0s}}
  sink/b:
    retry_on_failure: {{initial_interval: 5ms, max_interval: 5ms}}
service:
  extensions: [recorder]
  pipelines:
    traces: {{receivers: [fake], processors: [tag], exporters: [{exporters}]}}
    metrics: {{receivers: [fake/other], exporters: [sink/b]}}
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}}}
  shutdown_timeout: 5s
"""


def text(key: str = "k1", exporters: str = "sink", consumers: int = 10) -> str:
    return BASE.format(key=key, exporters=exporters, consumers=consumers)


class Harness:
    def __init__(self) -> None:
        self.registry: dict[str, SinkExporter] = {}
        self.events: list[str] = []
        self.fmap = connector_factories(self.registry, self.events)
        self.next_text = text()
        self.svc = Service(load_text(self.next_text, self.fmap, env={}), self.fmap,
                           telemetry=Telemetry(process_metrics=False),
                           reload_config=lambda: load_text(self.next_text, self.fmap, env={}))

    def component(self, kind: str, cid: str) -> object:
        return self.svc.component(kind, cid)

    def helper(self, cid: str) -> ExporterHelper:
        assert self.svc.graph is not None
        return next(n.component for n in self.svc.graph.exporters if str(n.id) == cid)

    def receiver(self, cid: str = "fake") -> FakeReceiver:
        rec = self.component("receiver", cid)
        assert isinstance(rec, FakeReceiver)
        return rec

    async def send(self, n: int = 1, cid: str = "fake", signal: Signal = Signal.TRACES) -> None:
        for _ in range(n):
            await self.receiver(cid).consumers[signal].consume(payload(signal, n=1))

    def sent(self, exporter: str) -> float:
        return self.svc.telemetry.value("otelpipe_exporter_sent_spans_total", exporter=exporter)

    def failed(self, exporter: str) -> float:
        return sum(self.svc.telemetry.value("otelpipe_exporter_send_failed_spans_total", exporter=exporter,
                                            reason=r)
                   for r in ("shutdown", "retryable_error", "retries_exhausted", "timeout", "permanent_error"))


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.svc.start()
    try:
        yield harness
    finally:
        await harness.svc.shutdown()


async def test_unchanged_components_are_kept_running_and_repointed(h: Harness) -> None:
    receiver, tag, sink = h.receiver(), h.component("processor", "tag"), h.component("exporter", "sink")
    other = h.receiver("fake/other")
    h.next_text = text(exporters="sink, sink/b")  # traces now also go to sink/b
    outcome = await h.svc.reload()
    assert outcome.result == "ok" and outcome.config_hash == h.svc.config_hash
    # the same instances, still running: nothing of theirs was closed or lost
    assert h.receiver() is receiver and receiver.started
    assert h.component("processor", "tag") is tag and h.component("exporter", "sink") is sink
    assert h.receiver("fake/other") is other
    # ... and they feed the new graph: the old receiver's spans reach the exporter only the new config has
    await h.send(3)
    await h.registry["sink/b/traces"].wait_for_items(3)
    await h.registry["sink/traces"].wait_for_items(3)
    assert all(s.name.endswith(":t") for p in h.registry["sink/b/traces"].payloads
               for s in p.message.resource_spans[0].scope_spans[0].spans)
    assert h.events.count("start extension recorder") == 1  # the unchanged extension was kept too
    nodes = h.svc.status()["components"]
    assert {n["id"] for n in nodes if n["state"] != "running"} == set()


async def test_a_changed_processor_is_replaced_and_its_old_instance_stopped(h: Harness) -> None:
    tag = h.component("processor", "tag")
    h.next_text = text().replace("tag: {value: t}", "tag: {value: u}")
    assert (await h.svc.reload()).result == "ok"
    assert h.component("processor", "tag") is not tag
    await h.send(1)
    await h.registry["sink/traces"].wait_for_items(1)
    span = h.registry["sink/traces"].payloads[-1].message.resource_spans[0].scope_spans[0].spans[0]
    assert span.name.endswith(":u")


async def test_a_replaced_exporter_hands_queued_and_retrying_data_to_its_successor() -> None:
    h = Harness()
    h.next_text = text(consumers=2)
    h.svc = Service(load_text(h.next_text, h.fmap, env={}), h.fmap, telemetry=Telemetry(process_metrics=False),
                    reload_config=lambda: load_text(h.next_text, h.fmap, env={}))
    await h.svc.start()
    try:
        old = h.registry["sink/traces"]
        old.fail_with, old.fail_times = RetryableError("backend down"), 10**9
        await h.send(6)  # 2 in retry waits, 4 queued
        old_helper = h.helper("sink")
        while old.fail_times > 10**9 - 4:  # both consumers have failed at least twice: retrying
            await asyncio.sleep(0.005)
        h.next_text = text(key="k2", consumers=2)  # the exporter's settings change: a new instance
        assert (await h.svc.reload()).result == "ok"
        new = h.registry["sink/traces"]
        assert new is not old
        await new.wait_for_items(6)
        await h.send(1)  # and new data goes to the new one too
        await new.wait_for_items(7)
        assert new.items == 7
        assert h.failed("sink") == 0  # nothing was counted lost...
        assert h.sent("sink") == 7  # ...or twice
        assert old_helper is not h.helper("sink")
    finally:
        await h.svc.shutdown()


async def test_stragglers_sent_to_a_replaced_exporter_reach_its_successor(h: Harness) -> None:
    old_helper = h.helper("sink")
    h.next_text = text(key="k2")
    assert (await h.svc.reload()).result == "ok"
    await old_helper.consume(payload(Signal.TRACES, n=2))  # e.g. an old batch flushing late
    await h.registry["sink/traces"].wait_for_items(2)


async def test_an_invalid_config_keeps_everything_running(h: Harness) -> None:
    receiver = h.receiver()
    before = h.svc.config_hash
    h.next_text = "receivers: {nope: {}}"
    outcome = await h.svc.reload()
    assert outcome.result == "invalid" and outcome.config_hash == before
    assert any("unknown receiver type 'nope'" in p for p in outcome.problems)
    assert h.receiver() is receiver and receiver.started
    await h.send(1)
    await h.registry["sink/traces"].wait_for_items(1)
    assert h.svc.telemetry.value("otelpipe_config_reloads_total", result="invalid") == 1


async def test_a_config_that_fails_to_start_is_rolled_back_and_the_old_one_serves(h: Harness) -> None:
    receiver, sink, recorded = h.receiver(), h.component("exporter", "sink"), h.registry["sink/traces"]
    before = h.svc.config_hash
    h.next_text = text(key="k2").replace("  fake: {}\n", "  fake: {fail_start: true}\n")
    outcome = await h.svc.reload()
    assert outcome.result == "failed" and "address already in use" in outcome.problems[0]
    assert h.svc.config_hash == before
    assert h.receiver() is receiver and h.component("exporter", "sink") is sink
    await h.send(2)
    await recorded.wait_for_items(2)
    assert h.svc.telemetry.value("otelpipe_config_reloads_total", result="failed") == 1
    assert {n["state"] for n in h.svc.status()["components"]} == {"running"}


async def test_the_same_config_again_is_unchanged(h: Harness) -> None:
    receiver = h.receiver()
    assert (await h.svc.reload()).result == "unchanged"
    assert h.receiver() is receiver
    assert h.svc.telemetry.value("otelpipe_config_reloads_total", result="unchanged") == 1


async def test_a_changed_extension_replaces_the_components_that_name_it(h: Harness) -> None:
    sink_b = h.component("exporter", "sink/b")
    h.next_text = text().replace("recorder: {label: one}", "recorder: {label: two}")
    assert (await h.svc.reload()).result == "ok"
    await h.svc.settled()
    assert h.events == ["start extension recorder", "start extension recorder", "stop extension recorder"]
    assert h.component("exporter", "sink/b") is sink_b  # it does not name the extension: kept


async def test_components_a_reload_starts_see_the_new_config_s_extensions(h: Harness) -> None:
    """A successor that names a changed extension (a storage, an authenticator) must get the new one at start."""
    old = h.svc.extensions()[ComponentID.parse("recorder")]
    h.next_text = text(key="recorder").replace("recorder: {label: one}", "recorder: {label: two}")
    assert (await h.svc.reload()).result == "ok"
    new = h.svc.extensions()[ComponentID.parse("recorder")]
    assert new is not old
    sink = h.registry["sink/traces"]
    assert sink.seen_extensions[ComponentID.parse("recorder")] is new


async def test_a_removed_exporter_drains_in_the_background_and_shutdown_waits_for_it(h: Harness) -> None:
    h.next_text = text(exporters="sink, sink/b")
    assert (await h.svc.reload()).result == "ok"
    leaving = h.registry["sink/b/traces"]
    leaving.fail_with, leaving.fail_times = RetryableError("slow"), 3
    await h.send(2)
    h.next_text = text()
    assert (await h.svc.reload()).result == "ok"
    await leaving.wait_for_items(2)  # delivered after three retries, by the old graph's teardown
