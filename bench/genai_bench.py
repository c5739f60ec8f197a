#!/usr/bin/env python3
"""OTLP traces of agent runs → genai_metrics → prometheus, side by side with the pass-through pipeline.

Drives `../shared/bench/compare.py` (the project's A/B harness: load generator, counting sink,
interleaved repetitions, collector CPU from /proc) with two otelpipe configs in one invocation:

- `passthrough`: otlp → batch → otlp (bench/configs/genai_passthrough.yaml);
- `genai`: the same, plus the `genai_metrics` connector feeding a `prometheus` exporter
  (bench/configs/genai_metrics.yaml), scraped by nobody: the figure is what the connector costs.

The load: `--payload agent` (default) is OTLP as the OpenTelemetry SDK exports real agent runs
(see `agent_runs`): per run an HTTP server root span, an `invoke_agent` span, 2–4 `chat` calls
each with the HTTP client span of the provider call below it, tool calls between them (one of
them over MCP, with its HTTP transport span) with a database or HTTP span below, errors on a few
tools and calls, spans in the order a BatchSpanProcessor exports them (children before parents).
`--payload shared` is the shared harness's agent-like traces (`payloads.py`: 70 % GenAI spans,
a third of the model calls with prompt text). Every request has its own trace ids, and the
load generator's two processes cycle the same `--payloads` requests, the second one 7919
requests further on: with the default 2000, the second process sends most requests about 81
requests after the first, so about half of the traces arrive twice and their second copy is
accounted as late spans (cheaper than runs). `--payloads 6000` keeps the two copies more than
`max_traces` traces apart: every trace is a new run (each process sends fewer than 6000
requests in a 10 s repetition).

Usage (from the project root):
    .venv/bin/python bench/genai_bench.py [--reps 3] [--duration 10] [--payload agent|shared]
The script is also the load generator compare.py runs (`genai_bench.py loadgen ...`): the shared
loadgen.py with this module's payloads.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import uuid
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OTELPIPE_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
BASE_NS = 1_760_000_000_000_000_000
AGENTS = ("support", "billing", "research")
MODELS = (("openai", "gpt-4o", "gpt-4o-2024-08-06", "api.openai.com"),
          ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "api.openai.com"),
          ("anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514", "api.anthropic.com"))
TOOLS = ("search_kb", "get_order", "refund", "lookup_customer", "send_email")
SERVICES = ("support-agent", "billing-agent", "research-agent")


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        av = AnyValue()
        av.array_value.values.extend(AnyValue(string_value=v) for v in value)
        return KeyValue(key=key, value=av)
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


class _Run:
    """Spans of one agent run, appended as they end (what a BatchSpanProcessor exports, in order)."""

    def __init__(self, rng: random.Random, t0: int) -> None:
        self.rng = rng
        self.trace_id = rng.randbytes(16)
        self.t = t0
        self.spans: list[Span] = []

    def span(self, name: str, parent: bytes, kind: int, start: int, dur: int, attrs: dict[str, Any],
             error: str | None = None) -> bytes:
        sid = self.rng.randbytes(8)
        s = Span(trace_id=self.trace_id, span_id=sid, parent_span_id=parent, name=name, kind=kind,
                 start_time_unix_nano=start, end_time_unix_nano=start + dur, flags=0x301)
        s.attributes.extend(_kv(k, v) for k, v in attrs.items())
        if error is not None:
            s.attributes.append(_kv("error.type", error))
            s.status.code = Status.STATUS_CODE_ERROR
            s.status.message = f"{error} while calling upstream"
        self.spans.append(s)
        return sid


def agent_run(rng: random.Random, run: _Run) -> None:
    """One run: HTTP root → invoke_agent → (chat [→ HTTP POST] → tool [→ DB | HTTP | MCP → HTTP POST])… → chat."""
    agent = rng.choice(AGENTS)
    provider, model, dated, host = rng.choice(MODELS)
    conv = f"conv_{uuid.UUID(bytes=rng.randbytes(16)).hex[:24]}"
    root_id, agent_id = rng.randbytes(8), rng.randbytes(8)
    start = run.t
    t = start + 2_000_000
    steps = rng.randint(2, 4)
    total_in = total_out = 0
    for step in range(steps):
        dur = rng.randint(300_000_000, 4_000_000_000)
        tin, tout = rng.randint(400, 12_000), rng.randint(20, 900)
        total_in += tin
        total_out += tout
        err = "timeout" if rng.random() < 0.02 else None
        chat_attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
            "gen_ai.response.model": dated, "gen_ai.response.id": f"chatcmpl-{rng.randbytes(12).hex()}",
            "gen_ai.response.finish_reasons": ["tool_calls" if step < steps - 1 else "stop"],
            "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": tout,
            "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 1024,
            "server.address": host, "server.port": 443}
        if rng.random() < 0.3:
            chat_attrs["gen_ai.usage.cache_read.input_tokens"] = tin // 2
        chat_id = rng.randbytes(8)
        run.span("POST", chat_id, Span.SPAN_KIND_CLIENT, t + 1_000_000, dur - 2_000_000, {
            "http.request.method": "POST", "url.full": f"https://{host}/v1/chat/completions",
            "server.address": host, "server.port": 443, "http.response.status_code": 200 if err is None else 504,
            "network.protocol.version": "1.1"}, "504" if err else None)
        s = Span(trace_id=run.trace_id, span_id=chat_id, parent_span_id=agent_id, name=f"chat {model}",
                 kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=t, end_time_unix_nano=t + dur, flags=0x301)
        s.attributes.extend(_kv(k, v) for k, v in chat_attrs.items())
        if err:
            s.attributes.append(_kv("error.type", err))
            s.status.code = Status.STATUS_CODE_ERROR
        run.spans.append(s)
        t += dur + 1_000_000
        if step == steps - 1:
            break
        tool = rng.choice(TOOLS)
        tdur = rng.randint(5_000_000, 900_000_000)
        terr = "ToolError" if rng.random() < 0.05 else None
        tool_id = rng.randbytes(8)
        mcp = rng.random() < 0.25
        if mcp:
            run.span("POST", tool_id, Span.SPAN_KIND_CLIENT, t + 500_000, tdur - 1_000_000, {
                "http.request.method": "POST", "url.full": "http://tools-mcp:8000/mcp", "server.address": "tools-mcp",
                "server.port": 8000, "http.response.status_code": 200, "network.protocol.version": "1.1"})
        elif rng.random() < 0.5:
            run.span("SELECT orders", tool_id, Span.SPAN_KIND_CLIENT, t + 500_000, tdur // 2, {
                "db.system.name": "postgresql", "db.namespace": "shop", "db.operation.name": "SELECT",
                "db.query.summary": "SELECT orders", "server.address": "pg-primary", "server.port": 5432})
        else:
            run.span("GET", tool_id, Span.SPAN_KIND_CLIENT, t + 500_000, tdur // 2, {
                "http.request.method": "GET", "url.full": "https://internal-api/v1/orders/1234",
                "server.address": "internal-api", "server.port": 443, "http.response.status_code": 200,
                "network.protocol.version": "1.1"})
        tool_attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                                      "gen_ai.tool.call.id": f"call_{rng.randbytes(12).hex()}",
                                      "gen_ai.tool.type": "function"}
        if mcp:
            tool_attrs.update({"mcp.method.name": "tools/call", "mcp.protocol.version": "2025-06-18",
                               "server.address": "tools-mcp", "server.port": 8000, "network.transport": "tcp",
                               "jsonrpc.request.id": str(rng.randint(1, 10_000))})
        s = Span(trace_id=run.trace_id, span_id=tool_id, parent_span_id=agent_id,
                 name=f"tools/call {tool}" if mcp else f"execute_tool {tool}",
                 kind=Span.SPAN_KIND_CLIENT if mcp else Span.SPAN_KIND_INTERNAL,
                 start_time_unix_nano=t, end_time_unix_nano=t + tdur, flags=0x301)
        s.attributes.extend(_kv(k, v) for k, v in tool_attrs.items())
        if terr:
            s.attributes.append(_kv("error.type", terr))
            s.status.code = Status.STATUS_CODE_ERROR
        run.spans.append(s)
        t += tdur + 1_000_000
    s = Span(trace_id=run.trace_id, span_id=agent_id, parent_span_id=root_id, name=f"invoke_agent {agent}",
             kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=start + 1_000_000, end_time_unix_nano=t, flags=0x301)
    # the aggregate usage frameworks put on the agent span: never counted again
    s.attributes.extend(_kv(k, v) for k, v in {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
        "gen_ai.agent.id": f"asst_{agent}", "gen_ai.conversation.id": conv, "gen_ai.provider.name": provider,
        "gen_ai.request.model": model, "gen_ai.usage.input_tokens": total_in,
        "gen_ai.usage.output_tokens": total_out}.items())
    run.spans.append(s)
    run.span("POST /v1/agents/{agent}/runs", b"", Span.SPAN_KIND_SERVER, start, t - start + 1_000_000, {
        "http.request.method": "POST", "http.route": "/v1/agents/{agent}/runs", "url.path": f"/v1/agents/{agent}/runs",
        "url.scheme": "https", "http.response.status_code": 200, "server.address": "agents.example.com",
        "client.address": f"10.1.{rng.randrange(255)}.{rng.randrange(255)}", "network.protocol.version": "1.1",
        "user_agent.original": "python-httpx/0.27.0"})
    run.spans[-1].span_id = root_id


def agent_runs(rng: random.Random, spans_per_request: int) -> ExportTraceServiceRequest:
    """One request of one service with at least `spans_per_request` spans of whole agent runs."""
    req = ExportTraceServiceRequest()
    rs: ResourceSpans = req.resource_spans.add()
    svc = rng.choice(SERVICES)
    rs.resource.attributes.extend(_kv(k, v) for k, v in {
        "service.name": svc, "service.version": "1.4.2", "service.instance.id": f"{svc}-{rng.randrange(8)}",
        "deployment.environment.name": "prod", "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python", "telemetry.sdk.version": "1.38.0", "host.name": "node-7",
        "k8s.namespace.name": "agents", "k8s.pod.name": f"{svc}-7d9f8-x2k4p"}.items())
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "opentelemetry.instrumentation.openai_v2", "2.1b0"
    t0 = BASE_NS + rng.randrange(10**12)
    while len(ss.spans) < spans_per_request:
        run = _Run(rng, t0)
        agent_run(rng, run)
        ss.spans.extend(run.spans)
        t0 += 10**9
    return req


def loadgen(argv: list[str]) -> int:
    """The shared loadgen.py, its traces made by `--payload` (agent: agent_runs; shared: its own)."""
    sys.path.insert(0, str(SHARED))
    import loadgen as shared_loadgen
    import payloads

    which = "agent"
    if "--payload" in argv:
        i = argv.index("--payload")
        which = argv[i + 1]
        del argv[i:i + 2]
    if which == "agent":
        payloads.MAKERS["traces"] = agent_runs
    return int(shared_loadgen.main(argv) or 0)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        return loadgen(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--payload", choices=("agent", "shared"), default="agent")
    ap.add_argument("--payloads", type=int, default=2000, help="distinct requests the load generator cycles")
    ap.add_argument("--load", default="otlp --signal traces --protocol grpc --items-per-request 100 "
                                      "--procs 2 --channels 4 --concurrency 32")
    ap.add_argument("--json-out", default=str(ROOT / "bench" / "out" / "genai-vs-passthrough.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(SHARED))
    import compare

    me = str(Path(__file__).resolve())

    def run_loadgen(python: str, load_args: list[str], endpoint: str, duration: float, extra: list[str]) -> Any:
        # compare.py's loadgen run, with this module's payloads
        return _run_loadgen(python, [me, "loadgen"], load_args + ["--payload", args.payload,
                                                                    "--payloads", str(args.payloads)],
                            endpoint, duration, extra)

    compare.run_loadgen = run_loadgen
    otelpipe = ROOT / ".venv" / "bin" / "otelpipe"
    env = "OP_GRPC=127.0.0.1:{grpc_port} OP_HTTP=127.0.0.1:{http_port} OP_SINK={sink_grpc} OP_PROM=127.0.0.1:0"
    Path(args.json_out).parent.mkdir(exist_ok=True)
    configs = ROOT / "bench" / "configs"
    sys.argv = [str(SHARED / "compare.py"), "--reps", str(args.reps), "--duration", str(args.duration),
                "--load", args.load, "--json-out", args.json_out,
                "--collector", f"passthrough=env {env} {otelpipe} run --config {configs}/genai_passthrough.yaml",
                "--collector", f"genai=env {env} {otelpipe} run --config {configs}/genai_metrics.yaml"]
    print("+ compare.py", " ".join(sys.argv[1:]), flush=True)
    return int(compare.main() or 0)


def _run_loadgen(python: str, script: list[str], load_args: list[str], endpoint: str, duration: float,
                 extra: list[str]) -> Any:
    import json
    import subprocess

    cmd = [python, *script, *load_args, "--endpoint", endpoint, "--duration", str(duration), "--json", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 300)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen failed rc={p.returncode}: {p.stderr[-2000:]}")
    return json.loads(lines[-1])


if __name__ == "__main__":
    raise SystemExit(main())
