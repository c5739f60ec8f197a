"""Hand-built GenAI span trees for the `genai_metrics` tests, and a reader of the metrics it writes."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from connectors.genai_metrics.config import GenAIMetricsConfig
from connectors.genai_metrics.connector import FACTORY, GenAIMetricsConnector
from pipeline.component import Kind
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry
from pipeline.testing import FakeClock, MetricsSink, kv, nop_settings

T0 = 1_700_000_000_000_000_000  # span times: ns since the epoch
WALL = 1_700_000_000.0  # the connector's wall clock: 2023-11-14T22:13:20Z


def span(trace: int, sid: int, parent: int | None, start: float, end: float, attrs: dict[str, object] | None = None,
         *, kind: int = Span.SPAN_KIND_INTERNAL, error: bool = False, name: str = "") -> Span:
    """A span of trace `trace`, ids and times (seconds after T0) given as small numbers."""
    s = Span(trace_id=trace.to_bytes(16, "big"), span_id=sid.to_bytes(8, "big"), kind=kind,  # type: ignore[arg-type]
             name=name or f"span-{sid}", start_time_unix_nano=T0 + round(start * 1e9),
             end_time_unix_nano=T0 + round(end * 1e9))
    if parent is not None:
        s.parent_span_id = parent.to_bytes(8, "big")
    s.attributes.extend(kv(k, v) for k, v in (attrs or {}).items())
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    return s


def request(spans: Iterable[Span], service: str = "support-agent", **resource: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    rs.resource.attributes.extend(kv(k, v) for k, v in resource.items())
    rs.scope_spans.add().spans.extend(spans)
    return req


def chat(trace: int, sid: int, parent: int | None, start: float, end: float, model: str = "gpt-4o",
         tin: int | None = 100, tout: int | None = 20, **extra: object) -> Span:
    attrs: dict[str, object] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                "gen_ai.request.model": model}
    if tin is not None:
        attrs["gen_ai.usage.input_tokens"] = tin
    if tout is not None:
        attrs["gen_ai.usage.output_tokens"] = tout
    error = bool(extra.pop("error", False))
    attrs.update(extra)
    return span(trace, sid, parent, start, end, attrs, kind=Span.SPAN_KIND_CLIENT, error=error, name=f"chat {model}")


def tool(trace: int, sid: int, parent: int | None, start: float, end: float, name: str = "search",
         **extra: object) -> Span:
    error = bool(extra.pop("error", False))
    return span(trace, sid, parent, start, end, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                                                  **extra}, error=error, name=f"execute_tool {name}")


def agent(trace: int, sid: int, parent: int | None, start: float, end: float, name: str | None = "support",
          **extra: object) -> Span:
    """An invoke_agent span (`name` None: no gen_ai.agent.name attribute)."""
    error = bool(extra.pop("error", False))
    attrs: dict[str, object] = {"gen_ai.operation.name": "invoke_agent"}
    if name is not None:
        attrs["gen_ai.agent.name"] = name
    return span(trace, sid, parent, start, end, {**attrs, **extra}, error=error, name=f"invoke_agent {name}")


class RefusingSink(MetricsSink):
    """A metrics sink that raises the errors in `refusals`, one per call, before it accepts again."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals: list[BaseException] = []

    async def consume(self, payload: Payload) -> None:
        if self.refusals:
            raise self.refusals.pop(0)
        await super().consume(payload)


class Harness:
    """One connector on a fake clock and a fixed wall clock, writing into a MetricsSink."""

    def __init__(self, cfg: GenAIMetricsConfig | None = None, *, wall: float = WALL) -> None:
        self.clock = FakeClock()
        self.wall = wall
        self.telemetry = Telemetry(process_metrics=False)
        settings = dataclasses.replace(
            nop_settings("genai_metrics", Kind.CONNECTOR, Signal.TRACES, telemetry=self.telemetry),
            clock=self.clock, to_signal=Signal.METRICS)
        self.sink = RefusingSink()
        self.conn = GenAIMetricsConnector(settings, cfg or GenAIMetricsConfig(), self.sink, wall=lambda: self.wall)
        assert FACTORY.type == "genai_metrics"

    async def send(self, *reqs: ExportTraceServiceRequest) -> None:
        for r in reqs:
            await self.conn.consume(Payload(Signal.TRACES, message=r))

    async def flush(self) -> Metrics:
        n = len(self.sink.payloads)
        await self.conn.force_flush()
        return Metrics(self.sink.payloads[n:])

    def self_metric(self, name: str, **labels: str) -> float:
        return self.telemetry.value(name, **labels)


def _attrs(dp: Any) -> dict[str, str]:
    return {a.key: a.value.string_value for a in dp.attributes}


class Metrics:
    """The points of the flushes read: `points(name)` → [(attributes, value)], value by metric kind:
    a histogram (count, sum, bucket counts), a sum its value, a gauge its value."""

    def __init__(self, payloads: list[Payload]) -> None:
        self.by_name: dict[str, list[tuple[dict[str, str], Any, Any, dict[str, str]]]] = {}
        self.units: dict[str, str] = {}
        for p in payloads:
            for rm in p.message.resource_metrics:
                res = _attrs(rm.resource)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        self.units[m.name] = m.unit
                        kind = m.WhichOneof("data")
                        for dp in getattr(m, kind).data_points:
                            if kind == "histogram":
                                value: Any = (dp.count, round(dp.sum, 9), tuple(dp.bucket_counts))
                            elif kind == "sum":
                                value = dp.as_double if dp.HasField("as_double") else dp.as_int
                            else:
                                value = dp.as_double
                            self.by_name.setdefault(m.name, []).append((_attrs(dp), value, dp, res))

    def points(self, name: str) -> list[tuple[dict[str, str], Any]]:
        return [(a, v) for a, v, _, _ in self.by_name.get(name, [])]

    def value(self, name: str, **attrs: str) -> Any:
        """The value of the one point of `name` whose attributes are exactly `attrs`."""
        found = [v for a, v in self.points(name) if a == attrs]
        assert len(found) == 1, (name, attrs, self.points(name))
        return found[0]

    def count_sum(self, name: str, **attrs: str) -> tuple[int, float]:
        c, s, _ = self.value(name, **attrs)
        return c, s

    def raw(self, name: str, **attrs: str) -> Any:
        found = [dp for a, _, dp, _ in self.by_name.get(name, []) if a == attrs]
        assert len(found) == 1, (name, attrs, self.points(name))
        return found[0]
