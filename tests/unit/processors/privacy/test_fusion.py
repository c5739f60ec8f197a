"""secret_mask and uuid_normalize adjacent in a pipeline: one scan and one walk, the config still two processors.

Through the real Service and graph (a fake receiver, a recording exporter): the output and each
processor's counters equal the two processors one after the other (the oracle), /status says which
runs whose walk, and live reloads that add, remove or reorder one of them never leave a processor
doing work the new config no longer asks for, nor skip work it does.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pipeline.component import make_factory_map
from pipeline.config.loader import load_text
from pipeline.model import Payload, Signal
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from pipeline.testing import kv, make_logs, make_traces, nop_settings
from processors.privacy import secret_mask, uuid_normalize
from processors.privacy.secret_mask import SecretMaskConfig
from processors.privacy.stage import PrivacyProcessor
from processors.privacy.uuid_normalize import UUIDNormalizeConfig
from tests.testdata.fakes import SinkExporter, factories

from .oracle import secret_reference, uuid_reference

U = "f50ae695-14da-8c65-9ce2-b10cccdaebf9"
KEY = "sk-proj-abcdefghij0123456789ABCD"

CONFIG = """
receivers:
  fake: {{}}
processors:
  secret_mask: {{}}
  uuid_normalize: {{log_attributes: [http.route]}}
exporters:
  sink: {{}}
service:
  pipelines:
    traces: {{receivers: [fake], processors: [{procs}], exporters: [sink]}}
    logs: {{receivers: [fake], processors: [{procs}], exporters: [sink]}}
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}}}
"""
SCFG = SecretMaskConfig()
UCFG = UUIDNormalizeConfig(log_attributes=("http.route",))


def traces_request() -> bytes:
    msg = make_traces(3, attrs={"http.route": f"/v1/agents/{U}/runs", "token": "abc", "tool.args": f"key={KEY}"},
                      name=f"GET /v1/agents/{U}")
    return msg.SerializeToString()


def logs_request() -> bytes:
    msg = make_logs(2, body=f"call with {KEY} for {U}")
    for lr in msg.resource_logs[0].scope_logs[0].log_records:
        lr.attributes.extend([kv("http.route", f"/runs/{U}"), kv("password", "hunter2")])
    return msg.SerializeToString()


REQUESTS = {Signal.TRACES: traces_request, Signal.LOGS: logs_request}


class Harness:
    def __init__(self, procs: str) -> None:
        self.registry: dict[str, SinkExporter] = {}
        fmap = factories(self.registry)
        self.fmap = make_factory_map([*(f for kinds in fmap.values() for f in kinds.values()),
                                      secret_mask.FACTORY, uuid_normalize.FACTORY])
        self.text = CONFIG.format(procs=procs)
        self.svc = Service(load_text(self.text, self.fmap, env={}), self.fmap,
                           telemetry=Telemetry(process_metrics=False),
                           reload_config=lambda: load_text(self.text, self.fmap, env={}))

    async def reload(self, procs: str) -> None:
        self.text = CONFIG.format(procs=procs)
        assert (await self.svc.reload()).result == "ok"
        await self.svc.settled()

    async def send(self, signal: Signal) -> bytes:
        """One request through the pipeline; the bytes the exporter got."""
        sink = self.registry[f"sink/{signal.value}"]
        before = sink.items
        p = Payload(signal, raw=REQUESTS[signal]())
        receiver = self.svc.component("receiver", "fake")
        await receiver.consumers[signal].consume(p)
        await sink.wait_for_items(before + p.items)
        return sink.payloads[-1].serialize()

    def counted(self, metric: str, processor: str, signal: Signal) -> dict[str, float]:
        tel = self.svc.telemetry
        out = {}
        for detector in ("key", "openai_key", "credential_pair", "bearer", "uuid", "hex", "num", "ulid"):
            v = tel.value(f"otelpipe_{metric}_total", processor=processor, detector=detector,
                          pipeline=signal.value)
            if v:
                out[detector] = v
        return out

    def processor(self, processor: str, signal: Signal) -> PrivacyProcessor:
        assert self.svc.graph is not None
        found = next(n.component for n in self.svc.graph.processors
                     if str(n.id) == processor and n.pipeline == signal.value)
        assert isinstance(found, PrivacyProcessor)
        return found

    def status(self, processor: str, signal: Signal) -> dict[str, str]:
        return next(c["status"] for c in self.svc.status()["components"]
                    if c["id"] == processor and c["pipeline"] == signal.value)


@pytest.fixture
async def harnesses() -> AsyncIterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for h in made:
        await h.svc.shutdown()


async def start(made: list[Harness], procs: str) -> Harness:
    h = Harness(procs)
    made.append(h)
    await h.svc.start()
    return h


def sequential(signal: Signal, order: str) -> tuple[bytes, dict[str, int], dict[str, int]]:
    """What the two processors one after the other make of the request (the oracle), with their counts."""
    raw = REQUESTS[signal]()
    if order == "secret_mask, uuid_normalize":
        mid, scounts = secret_reference(SCFG, signal, raw)
        out, ucounts = uuid_reference(UCFG, signal, mid.SerializeToString())
    else:
        mid, ucounts = uuid_reference(UCFG, signal, raw)
        out, scounts = secret_reference(SCFG, signal, mid.SerializeToString())
    return out.SerializeToString(), scounts, ucounts


@pytest.mark.parametrize("signal", [Signal.TRACES, Signal.LOGS], ids=["traces", "logs"])
@pytest.mark.parametrize("order", ["secret_mask, uuid_normalize", "uuid_normalize, secret_mask"])
async def test_adjacent_processors_share_one_walk_with_the_result_of_two(harnesses: list[Harness], order: str,
                                                                        signal: Signal) -> None:
    h = await start(harnesses, order)
    first, second = order.split(", ")
    assert h.status(first, signal)["fused"] == f"runs the walk of {second} too"
    assert h.status(second, signal)["fused"] == f"its walk runs in {first}'s"
    assert h.status("secret_mask", signal)["scanner"] in ("libhs", "binding", "re")
    got = await h.send(signal)
    expected, scounts, ucounts = sequential(signal, order)
    assert signal.request_type.FromString(got) == signal.request_type.FromString(expected)
    # each processor counts what it did, although one walk did both
    assert h.counted("processor_masked_values", "secret_mask", signal) == scounts and scounts
    assert h.counted("processor_normalized_values", "uuid_normalize", signal) == ucounts and ucounts


async def test_metrics_pipelines_are_not_fused(harnesses: list[Harness]) -> None:
    settings = nop_settings("secret_mask", signal=Signal.METRICS)
    first = secret_mask.FACTORY.create(settings, SCFG, object())
    second = uuid_normalize.FACTORY.create(nop_settings("uuid_normalize", signal=Signal.METRICS), UCFG, first)
    assert isinstance(first, PrivacyProcessor)
    assert first.fuse(second) is False and "fused" not in first.status()


async def test_reload_that_removes_the_second_stops_its_work(harnesses: list[Harness]) -> None:
    h = await start(harnesses, "secret_mask, uuid_normalize")
    old = h.processor("secret_mask", Signal.TRACES)
    await h.reload("secret_mask")
    assert not old.running  # the graph builds fusing processors anew on a reload
    got = await h.send(Signal.TRACES)
    assert U.encode() in got and KEY.encode() not in got  # masked, no longer normalized
    assert got == secret_reference(SCFG, Signal.TRACES, traces_request())[0].SerializeToString()
    assert "fused" not in h.status("secret_mask", Signal.TRACES)


@pytest.mark.parametrize("before,after", [("secret_mask", "secret_mask, uuid_normalize"),
                                          ("uuid_normalize", "secret_mask, uuid_normalize"),
                                          ("secret_mask, uuid_normalize", "uuid_normalize, secret_mask")])
async def test_reload_that_adds_or_reorders_one_gives_the_new_result(harnesses: list[Harness], before: str,
                                                                    after: str) -> None:
    h = await start(harnesses, before)
    await h.send(Signal.TRACES)
    await h.reload(after)
    for _ in range(2):
        got = await h.send(Signal.TRACES)
        expected, _, _ = sequential(Signal.TRACES, after)
        assert Signal.TRACES.request_type.FromString(got) == Signal.TRACES.request_type.FromString(expected)
    first, second = after.split(", ")
    assert h.status(first, Signal.TRACES)["fused"] == f"runs the walk of {second} too"


async def test_a_request_the_first_did_not_walk_is_processed_by_the_second(harnesses: list[Harness]) -> None:
    # e.g. from the previous graph's processor during a reload: the mark is the request object itself
    h = await start(harnesses, "secret_mask, uuid_normalize")
    second = h.processor("uuid_normalize", Signal.TRACES)
    sink = h.registry["sink/traces"]
    await second.consume(Payload(Signal.TRACES, raw=traces_request()))
    await sink.wait_for_items(3)
    got = sink.payloads[-1].serialize()
    assert b"{uuid}" in got and U.encode() not in got and KEY.encode() in got  # normalized only
