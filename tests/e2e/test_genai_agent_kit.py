"""The agent observability kit end to end, with real clients and a real Prometheus server.

The shipped example (config/examples/agent-observability.yaml) runs as shipped, with an override
that binds loopback ports, points Tempo, Loki and PagerDuty at local fakes, flushes the connector
every 200 ms and lowers the step ceiling to 4. The OpenTelemetry Python SDK emits realistic agent
traces over OTLP/HTTP (agent → LLM → tool → LLM, an MCP call, a failing tool, a looping agent, a run
behind an HTTP server span, old attribute names); Debian's Prometheus scrapes the example's
`prometheus` exporter every second and evaluates config/prometheus/agent-rules.yaml. Then:

- the counts and sums Prometheus holds are exactly those of the spans sent;
- every PromQL expression of the shipped dashboards (`$agent` = all) and rules returns data, with a
  number in it (alerting rules are queried with their comparisons as `bool`, so that they return
  their series whether they fire or not);
- `promtool check rules` passes on the rules file.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from otelpipe.testing import running_service
from pipeline.testing import make_logs
from tests.e2e.backends import GrpcBackend
from tests.e2e.loki_intake import LokiIntake
from tests.e2e.pagerduty_intake import ROUTING_KEY, PagerDutyIntake
from tests.e2e.test_prometheus_scrape import api, poll, prometheus_server
from tests.testdata.promtools import tool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "examples" / "agent-observability.yaml"
RULES = ROOT / "config" / "prometheus" / "agent-rules.yaml"
DASHBOARDS = sorted((ROOT / "config" / "dashboards").glob("*.json"))

PROMETHEUS_CONFIG = """
global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
rule_files: ["{rules}"]
scrape_configs:
  - job_name: otelpipe
    honor_labels: true
    static_configs: [{{targets: ["{target}"]}}]
"""


def merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
    return over


def config(tempo: str, loki: str, pagerduty: str) -> str:
    example = yaml.safe_load(EXAMPLE.read_text())
    return yaml.safe_dump(merge(example, {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}},
                      "statsd": {"endpoint": "127.0.0.1:0"}},
        "processors": {"batch": {"timeout": "20ms"}},
        "connectors": {"genai_metrics": {"metrics_flush_interval": "200ms", "step_ceiling": 4}},
        "exporters": {"otlp/tempo": {"endpoint": tempo}, "loki": {"endpoint": loki},
                      "prometheus": {"endpoint": "127.0.0.1:0"},
                      "pagerduty": {"endpoint": pagerduty, "evaluation_interval": "1s"}},
    }))


# -- the agents ---------------------------------------------------------------------------------------

def llm(tracer: Tracer, model: str, tin: int, tout: int, *, provider: str = "openai", response: str | None = None,
        error: str | None = None, **extra: Any) -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
             "gen_ai.response.model": response or model, "gen_ai.usage.input_tokens": tin,
             "gen_ai.usage.output_tokens": tout, **extra}
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs) as s:
        if error:
            s.set_attribute("error.type", error)
            s.set_status(Status(StatusCode.ERROR))


def tool_call(tracer: Tracer, name: str, *, error: str | None = None) -> None:
    with tracer.start_as_current_span(f"execute_tool {name}", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.type": "function"}) as s:
        if error:
            s.set_attribute("error.type", error)
            s.set_status(Status(StatusCode.ERROR))


def mcp_call(tracer: Tracer, tool_name: str, *, rpc_error: str | None = None) -> None:
    attrs = {"mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool_name,
             "server.address": "weather-mcp", "server.port": 8931, "network.transport": "tcp",
             "mcp.protocol.version": "2025-06-18", "jsonrpc.request.id": "7"}
    with tracer.start_as_current_span(f"tools/call {tool_name}", kind=SpanKind.CLIENT, attributes=attrs) as s:
        if rpc_error:
            s.set_attribute("rpc.response.status_code", rpc_error)
            s.set_attribute("error.type", rpc_error)
            s.set_status(Status(StatusCode.ERROR))


def run(tracer: Tracer, agent: str, body: Any, *, error: bool = False) -> None:
    with tracer.start_as_current_span(f"invoke_agent {agent}", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent, "gen_ai.agent.id": f"asst_{agent}",
            "gen_ai.conversation.id": "conv-1", "gen_ai.provider.name": "openai",
            # the aggregate many frameworks put on the agent span: must never be counted again
            "gen_ai.usage.input_tokens": 999_999, "gen_ai.usage.output_tokens": 999_999}) as s:
        body()
        if error:
            s.set_attribute("error.type", "ToolError")
            s.set_status(Status(StatusCode.ERROR))


def send_agent_traffic(endpoint: str) -> None:
    """One wave: three support runs, a looping triage run, a run behind an HTTP server span, a legacy call."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent",
                                                        "deployment.environment": "prod"}))
    exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent.runtime", "1.0")

    def answer() -> None:  # agent → LLM → tool → LLM
        llm(tracer, "gpt-4o", 1000, 100, response="gpt-4o-2024-08-06",
            **{"gen_ai.usage.cache_read.input_tokens": 400})
        tool_call(tracer, "search_kb")
        llm(tracer, "gpt-4o", 2000, 300, response="gpt-4o-2024-08-06")

    def weather() -> None:  # an MCP call, then a failing one
        llm(tracer, "gpt-4o-mini", 500, 50)
        mcp_call(tracer, "get_weather")
        mcp_call(tracer, "get_forecast", rpc_error="-32603")
        llm(tracer, "gpt-4o-mini", 800, 80)

    def failing() -> None:  # a failing tool ends the run in error
        llm(tracer, "gpt-4o", 1000, 100)
        tool_call(tracer, "fetch_url", error="TimeoutError")

    def looping() -> None:  # five model calls and no tool: hits the step ceiling (4), and no tool call
        for i in range(5):
            llm(tracer, "claude-sonnet-4", 300, 30, provider="anthropic", response="claude-sonnet-4-20250514",
                error="overloaded_error" if i == 2 else None)

    run(tracer, "support", answer)
    run(tracer, "support", weather)
    run(tracer, "support", failing, error=True)
    run(tracer, "triage", looping)
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER, attributes={"http.route": "/chat"}):
        run(tracer, "support", answer)
    with tracer.start_as_current_span("embed", attributes={  # an older instrumentation: gen_ai.system, prompt_tokens
            "gen_ai.operation.name": "embeddings", "gen_ai.system": "openai",
            "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.prompt_tokens": 50}):
        pass
    provider.shutdown()


# -- the expressions ------------------------------------------------------------------------------------

def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']}", target["expr"].replace("$agent", ".*")))
    return out


def rule_queries() -> list[tuple[str, str]]:
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            expr = " ".join(rule["expr"].split())
            if "alert" in rule:  # `a > b` → `a > bool b`: the series whether the alert fires or not
                expr = re.sub(r" (>=|<=|>|<|==) ", r" \1 bool ", expr)
                out.append((f"alert {rule['alert']}", expr))
            else:
                out.append((f"record {rule['record']}", expr))
    return out


def test_the_panels_are_titled_and_the_rules_file_passes_promtool() -> None:
    titles = {title for title, _ in dashboard_queries()}
    for wanted in ("Runs per hour by agent", "Average run duration by agent", "Average steps (model calls) per run",
                   "Input and output tokens per minute by agent", "Model call latency p50 / p95 / p99 by agent",
                   "Tool calls per run by agent", "Run error rate by agent", "Budget saturation by agent",
                   "Model requests per minute by provider and model", "Tokens per minute by model",
                   "Model error rate by provider and model", "MCP server status", "MCP call rate by server and method",
                   "MCP error rate by server and tool", "MCP latency p95 by server and tool",
                   "Tool selection share by agent"):
        assert any(wanted in t for t in titles), wanted
    alerts = [name for name, _ in rule_queries() if name.startswith("alert")]
    assert len(alerts) >= 5
    done = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_agent_traces_become_the_dashboards_and_alerts_in_a_real_prometheus(tmp_path: Path) -> None:
    tempo, loki, pd = GrpcBackend(), LokiIntake(), PagerDutyIntake()
    tempo_addr = await tempo.start()
    await loki.start()
    await pd.start()
    try:
        text = config(tempo_addr, loki.url, pd.url)
        async with running_service(text, {"PAGERDUTY_ROUTING_KEY": ROUTING_KEY}) as svc:
            otlp_http = svc.endpoint("receiver", "otlp", "http")
            prom_config = PROMETHEUS_CONFIG.format(rules=RULES, target=svc.endpoint("exporter", "prometheus", "http"))
            await asyncio.to_thread(send_agent_traffic, otlp_http)
            async with aiohttp.ClientSession() as http:  # the logs pipeline: OTLP logs reach Loki
                async with http.post(f"http://{otlp_http}/v1/logs", data=make_logs(3).SerializeToString(),
                                     headers={"Content-Type": "application/x-protobuf"}) as resp:
                    assert resp.status == 200
            await loki.wait_for_entries(3)
            async with prometheus_server(tmp_path, prom_config) as prom, aiohttp.ClientSession() as http:

                async def query(q: str) -> list[dict[str, Any]]:
                    return (await api(http, prom, "query", query=q))["result"]  # type: ignore[no-any-return]

                async def scalar(q: str) -> float | None:
                    result = await query(q)
                    return float(result[0]["value"][1]) if result else None

                runs = "sum(gen_ai_agent_run_duration_seconds_count)"
                # Prometheus' discovery hands targets over in 5 s batches: the wait is mostly that.
                # Six runs a wave: five agent runs, and the embeddings call that is a trace of its own
                assert await poll(lambda: scalar(runs), 60, runs, tmp_path) == 6
                # a second wave once the first is scraped, so every rate has an increase to show
                await asyncio.to_thread(send_agent_traffic, otlp_http)

                async def second_wave() -> bool:
                    return await scalar(runs) == 12
                await poll(second_wave, 30, "the second wave scraped", tmp_path)

                # exact values: two waves of the spans above
                expect = {
                    "sum(gen_ai_client_token_usage_sum{gen_ai_token_type='input'})": 2 * (2 * 3000 + 1300 + 1000
                                                                                         + 5 * 300 + 50),
                    "sum(gen_ai_client_token_usage_sum{gen_ai_token_type='output'})": 2 * (2 * 400 + 130 + 100 + 150),
                    "sum(gen_ai_invoke_agent_inference_calls_sum)": 2 * (2 + 2 + 1 + 5 + 2),
                    "sum(gen_ai_invoke_agent_tool_calls_sum)": 2 * (1 + 2 + 1 + 0 + 1),
                    "sum(gen_ai_agent_run_duration_seconds_count{error_type='ToolError'})": 2,
                    "sum(gen_ai_execute_tool_duration_seconds_count{gen_ai_tool_name='fetch_url',"
                    "error_type='TimeoutError'})": 2,
                    "sum(mcp_client_operation_duration_seconds_count{server_address='weather-mcp',"
                    "mcp_method_name='tools/call'})": 4,
                    "sum(mcp_client_operation_duration_seconds_count{error_type='-32603'})": 2,
                    "sum(gen_ai_agent_runs_flagged_total{gen_ai_agent_name='triage'})": 4,
                    "sum(gen_ai_client_operation_duration_seconds_count{error_type='overloaded_error'})": 2,
                }
                for q, want in expect.items():
                    assert await scalar(q) == want, q
                # cost: gpt-4o (dated responses find the family): per wave 2 answers + 1 failing run
                gpt4o = 2 * ((600 * 2.5 + 400 * 1.25 + 100 * 10) + (2000 * 2.5 + 300 * 10)) + (1000 * 2.5 + 100 * 10)
                mini = 1300 * 0.15 + 130 * 0.6
                claude = 5 * (300 * 3.0 + 30 * 15.0)
                embed = 50 * 0.02
                total = 2 * (gpt4o + mini + claude + embed) / 1e6
                got = await scalar("sum(gen_ai_client_cost_usd_total)")
                assert got is not None and math.isclose(got, total, rel_tol=1e-9), (got, total)

                missing: dict[str, str] = {}

                async def answers(q: str) -> bool:
                    result = await query(q)
                    return any(math.isfinite(float(r["value"][1])) for r in result)

                async def all_answer() -> bool:
                    missing.clear()
                    for name, q in dashboard_queries() + rule_queries():
                        if not await answers(q):
                            missing[name] = q
                    return not missing

                try:
                    await poll(all_answer, 30, "every dashboard and rule expression to return data", tmp_path)
                except AssertionError:
                    raise AssertionError(f"no data for: {json.dumps(missing, indent=1)}") from None
                # the pagerduty rules read the connector's metrics (every point kept, none of an unsupported shape)
                assert svc.telemetry.value("otelpipe_exporter_pagerduty_series") > 0
                assert svc.telemetry.value("otelpipe_exporter_pagerduty_skipped_points_total") == 0
                # exemplars from spans: a model-latency exemplar points at a trace Tempo could show
                ex = await api(http, prom, "query_exemplars", query="gen_ai_client_operation_duration_seconds_bucket",
                               start="0", end="9999999999")
                assert any(len(e["labels"].get("trace_id", "")) == 32 for series in ex for e in series["exemplars"])
    finally:
        await pd.stop()
        await loki.stop()
        await tempo.stop()
