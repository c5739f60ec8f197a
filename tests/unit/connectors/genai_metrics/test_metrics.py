"""`genai_metrics` from hand-built GenAI span trees: every metric with its exact value.

Trees are sent as an SDK exports them (children end, and are exported, before their parents),
split over several requests; times are seconds after T0, chosen so sums are exact.
"""
from __future__ import annotations

import pytest

from connectors.genai_metrics.config import (
    BudgetConfig,
    DimensionConfig,
    GenAIMetricsConfig,
    PriceConfig,
    PricesConfig,
)
from connectors.genai_metrics.spans import OPERATION_NEEDLE
from pipeline.errors import PermanentError, RetryableError
from pipeline.model import Payload, Signal
from tests.unit.connectors.genai_metrics.spantrees import (
    Harness,
    agent,
    chat,
    request,
    span,
    tool,
)

TOKENS = "gen_ai.client.token.usage"
OP_DURATION = "gen_ai.client.operation.duration"
TOOL_DURATION = "gen_ai.execute_tool.duration"
MCP_DURATION = "mcp.client.operation.duration"
RUN_DURATION = "gen_ai.agent.run.duration"
STEPS = "gen_ai.invoke_agent.inference_calls"
TOOLS = "gen_ai.invoke_agent.tool_calls"
FLAGGED = "gen_ai.agent.runs.flagged"
COST = "gen_ai.client.cost.usd"
BUDGET = "gen_ai.agent.budget.utilization"

CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.agent.name": "support"}


def tokens(kind: str, **over: str) -> dict[str, str]:
    out = {k: v for k, v in CHAT.items()}
    out["gen_ai.token.type"] = kind
    out.update(over)
    return out


def agent_run(t: int = 1) -> list:
    """agent → LLM → tool → LLM → failing tool, the agent span last (as exported)."""
    return [chat(t, 2, 1, 0.0, 1.0, tin=120, tout=30), tool(t, 3, 1, 1.0, 1.25),
            chat(t, 4, 1, 1.5, 3.5, tin=400, tout=60), tool(t, 5, 1, 3.5, 4.0, name="fetch", error=True),
            agent(t, 1, None, 0.0, 5.0)]


async def test_an_agent_run_gives_every_layer_exact_values() -> None:
    h = Harness()
    spans = agent_run()
    await h.send(request(spans[:2]), request(spans[2:4]))
    assert (await h.flush()).by_name == {}  # held until the run's root arrives: agent unknown before
    await h.send(request(spans[4:]))
    m = await h.flush()
    assert m.count_sum(TOKENS, **tokens("input")) == (2, 520.0)
    assert m.count_sum(TOKENS, **tokens("output")) == (2, 90.0)
    # 120 in (64, 256], 400 in (256, 1024]; 30 and 60 in (16, 64]
    assert m.value(TOKENS, **tokens("input"))[2][4:6] == (1, 1)
    assert m.value(TOKENS, **tokens("output"))[2][3] == 2
    assert m.count_sum(OP_DURATION, **CHAT) == (2, 3.0)
    assert m.count_sum(TOOL_DURATION, **{"gen_ai.tool.name": "search", "gen_ai.agent.name": "support"}) == (1, 0.25)
    assert m.count_sum(TOOL_DURATION, **{"gen_ai.tool.name": "fetch", "error.type": "_OTHER",
                                         "gen_ai.agent.name": "support"}) == (1, 0.5)
    assert m.count_sum(RUN_DURATION, **{"gen_ai.agent.name": "support"}) == (1, 5.0)
    assert m.count_sum(STEPS, **{"gen_ai.agent.name": "support"}) == (1, 2.0)
    assert m.count_sum(TOOLS, **{"gen_ai.agent.name": "support"}) == (1, 2.0)
    assert m.points(FLAGGED) == [] and m.points(COST) == []  # no ceiling hit, tools called; no prices
    assert m.units == {TOKENS: "{token}", OP_DURATION: "s", TOOL_DURATION: "s", RUN_DURATION: "s",
                       STEPS: "{inference_call}", TOOLS: "{tool_call}"}
    dp = m.raw(TOKENS, **tokens("input"))
    assert list(dp.explicit_bounds) == [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                                        16777216, 67108864]
    assert list(m.raw(OP_DURATION, **CHAT).explicit_bounds) == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28,
                                                                 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
    assert m.by_name[TOKENS][0][3] == {"service.name": "support-agent"}
    assert h.self_metric("otelpipe_connector_genai_metrics_runs_total", closed_by="root") == 1
    # the next interval is empty: points are deltas
    assert (await h.flush()).by_name.get(TOKENS) is None


async def test_exemplars_carry_trace_and_span_ids() -> None:
    h = Harness()
    await h.send(request(agent_run(7)))
    m = await h.flush()
    ex = list(m.raw(OP_DURATION, **CHAT).exemplars)
    assert {(e.trace_id, e.span_id, e.as_double) for e in ex} == {
        ((7).to_bytes(16, "big"), (2).to_bytes(8, "big"), 1.0), ((7).to_bytes(16, "big"), (4).to_bytes(8, "big"), 2.0)}
    (run_ex,) = m.raw(RUN_DURATION, **{"gen_ai.agent.name": "support"}).exemplars
    assert (run_ex.trace_id, run_ex.span_id, run_ex.as_double) == ((7).to_bytes(16, "big"), (1).to_bytes(8, "big"), 5.0)
    tok = {e.span_id: e.as_double for e in m.raw(TOKENS, **tokens("output")).exemplars}
    assert tok == {(4).to_bytes(8, "big"): 60.0}  # one exemplar per bucket: the latest


async def test_tokens_are_counted_once_on_leaf_inference_spans_only() -> None:
    h = Harness()
    t = 1
    spans = [
        # a framework's chat span wrapping the client library's chat span: only the inner one counts
        chat(t, 3, 2, 0.5, 1.5, tin=100, tout=10),
        chat(t, 2, 1, 0.0, 2.0, tin=100, tout=10),
        chat(t, 4, 1, 2.0, 3.0, tin=50, tout=5),
        # the agent span carries the run's totals, as many frameworks do: never counted
        agent(t, 1, None, 0.0, 4.0, **{"gen_ai.usage.input_tokens": 150, "gen_ai.usage.output_tokens": 15,
                                      "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}),
    ]
    await h.send(request(spans))
    m = await h.flush()
    assert m.count_sum(TOKENS, **tokens("input")) == (2, 150.0)
    assert m.count_sum(TOKENS, **tokens("output")) == (2, 15.0)
    assert m.count_sum(OP_DURATION, **CHAT) == (2, 2.0)
    assert m.count_sum(STEPS, **{"gen_ai.agent.name": "support"}) == (1, 2.0)


async def test_older_attribute_names_are_read() -> None:
    h = Harness()
    t = 1
    legacy = span(t, 2, 1, 0.0, 0.5, {"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-5-sonnet",
                                       "gen_ai.usage.prompt_tokens": 70, "gen_ai.usage.completion_tokens": 7})
    older = span(t, 3, 1, 1.0, 2.0, {"gen_ai.operation.name": "text_completion", "gen_ai.system": "openai",
                                      "gen_ai.request.model": "gpt-3.5-turbo-instruct",
                                      "gen_ai.usage.prompt_tokens": 9, "gen_ai.usage.completion_tokens": 3})
    run = agent(t, 1, None, 0.0, 3.0, name=None, **{"gen_ai.agent.id": "asst_42"})
    await h.send(request([legacy, older, run]))
    m = await h.flush()
    legacy_attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-3-5-sonnet", "gen_ai.agent.name": "asst_42"}
    assert m.count_sum(TOKENS, **legacy_attrs, **{"gen_ai.token.type": "input"}) == (1, 70.0)
    assert m.count_sum(TOKENS, **legacy_attrs, **{"gen_ai.token.type": "output"}) == (1, 7.0)
    older_attrs = {"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "openai",
                   "gen_ai.request.model": "gpt-3.5-turbo-instruct", "gen_ai.agent.name": "asst_42"}
    assert m.count_sum(OP_DURATION, **older_attrs) == (1, 1.0)
    assert m.count_sum(STEPS, **{"gen_ai.agent.name": "asst_42"}) == (1, 2.0)


async def test_an_empty_agent_name_is_no_name() -> None:
    h = Harness()
    await h.send(request([chat(1, 2, 1, 0, 1), agent(1, 1, None, 0.0, 3.0, name="", **{"gen_ai.agent.id": "asst_9"})]))
    m = await h.flush()
    assert m.count_sum(RUN_DURATION, **{"gen_ai.agent.name": "asst_9"}) == (1, 3.0)


async def test_missing_attributes_leave_labels_out_and_values_uncounted() -> None:
    h = Harness()
    t = 1
    bare = span(t, 2, 1, 0.0, 0.25, {"gen_ai.operation.name": "chat"})  # no provider, model nor tokens
    half = chat(t, 3, 1, 1.0, 1.5, tout=None, tin=12)  # input tokens only
    root = span(t, 1, None, 0.0, 2.0, {"http.route": "/ask"})  # a root that is no GenAI span
    await h.send(request([bare, half]), request([root]))
    m = await h.flush()
    assert m.count_sum(OP_DURATION, **{"gen_ai.operation.name": "chat"}) == (1, 0.25)
    no_agent = {k: v for k, v in CHAT.items() if k != "gen_ai.agent.name"}
    assert m.count_sum(TOKENS, **no_agent, **{"gen_ai.token.type": "input"}) == (1, 12.0)
    assert [a for a, _ in m.points(TOKENS)] == [{**no_agent, "gen_ai.token.type": "input"}]
    assert m.count_sum(RUN_DURATION) == (1, 2.0)  # the root span is the run; it has no agent
    assert m.count_sum(STEPS) == (1, 2.0)
    # a run without an agent is not flagged for not calling tools (it is no agent run)
    assert m.points(FLAGGED) == []


async def test_a_root_span_laid_out_unusually_is_still_found() -> None:
    h = Harness()
    root = span(1, 1, None, 0.0, 2.0, {"http.route": "/ask"})
    root.trace_state = "vendor=1"  # a field before the parent id: the fast layout check cannot tell
    child = span(1, 5, 1, 0.0, 0.5, {"http.route": "/inner"})
    child.trace_state = "vendor=1"
    await h.send(request([chat(1, 2, 1, 0.0, 1.0)]), request([child, root]))
    assert h.conn.runs.pending == {}
    m = await h.flush()
    assert m.count_sum(RUN_DURATION) == (1, 2.0)
    assert h.self_metric("otelpipe_connector_genai_metrics_runs_total", closed_by="root") == 1


async def test_errors_use_error_type_else_other() -> None:
    h = Harness()
    t = 1
    spans = [chat(t, 2, 1, 0.0, 1.0, tin=None, tout=None, error=True),
             chat(t, 3, 1, 1.0, 2.0, tin=5, tout=1, **{"error.type": "rate_limit_exceeded"}, error=True),
             tool(t, 4, 1, 2.0, 2.5, **{"error.type": "TimeoutError"}, error=True),
             agent(t, 1, None, 0.0, 3.0, error=True)]
    await h.send(request(spans))
    m = await h.flush()
    assert m.count_sum(OP_DURATION, **CHAT, **{"error.type": "_OTHER"}) == (1, 1.0)
    assert m.count_sum(OP_DURATION, **CHAT, **{"error.type": "rate_limit_exceeded"}) == (1, 1.0)
    # token usage has no error.type: failed calls that used tokens still count them
    assert m.count_sum(TOKENS, **tokens("input")) == (1, 5.0)
    assert m.count_sum(TOOL_DURATION, **{"gen_ai.tool.name": "search", "error.type": "TimeoutError",
                                         "gen_ai.agent.name": "support"}) == (1, 0.5)
    assert m.count_sum(RUN_DURATION, **{"gen_ai.agent.name": "support", "error.type": "_OTHER"}) == (1, 3.0)


async def test_late_child_spans_are_counted_with_the_runs_agent_and_open_no_run() -> None:
    h = Harness()
    t = 1
    await h.send(request([chat(t, 2, 1, 0.0, 1.0), agent(t, 1, None, 0.0, 2.0)]))
    await h.flush()
    await h.send(request([chat(t, 3, 1, 1.0, 1.5, tin=10, tout=2), tool(t, 4, 1, 1.5, 2.0)]))
    m = await h.flush()
    assert m.count_sum(TOKENS, **tokens("input")) == (1, 10.0)
    assert m.count_sum(TOOL_DURATION, **{"gen_ai.tool.name": "search", "gen_ai.agent.name": "support"}) == (1, 0.5)
    assert m.points(RUN_DURATION) == [] and m.points(STEPS) == []
    assert h.self_metric("otelpipe_connector_genai_metrics_late_spans_total") == 2
    assert len(h.conn.runs.pending) == 0


async def test_a_trace_whose_root_never_comes_is_accounted_after_trace_timeout() -> None:
    h = Harness(GenAIMetricsConfig(trace_timeout=10.0))
    t = 1
    # the agent span is no root (its parent, a web request span, was sampled away or went elsewhere)
    await h.send(request([chat(t, 2, 1, 0.0, 1.0), tool(t, 3, 1, 1.0, 1.5), agent(t, 1, 99, 0.0, 2.0)]))
    assert (await h.flush()).by_name == {}
    h.clock.advance(9.0)
    assert (await h.flush()).by_name == {}
    h.clock.advance(1.0)
    m = await h.flush()
    assert m.count_sum(RUN_DURATION, **{"gen_ai.agent.name": "support"}) == (1, 2.0)
    assert m.count_sum(TOKENS, **tokens("input")) == (1, 100.0)
    assert h.self_metric("otelpipe_connector_genai_metrics_runs_total", closed_by="timeout") == 1
    assert h.self_metric("otelpipe_connector_genai_metrics_traces_pending") == 0


async def test_traces_held_are_bounded_by_max_traces() -> None:
    h = Harness(GenAIMetricsConfig(max_traces=2))
    for t in (1, 2, 3):
        await h.send(request([chat(t, 2, 1, 0.0, 1.0)]))
    assert list(h.conn.runs.pending) == [(2).to_bytes(16, "big"), (3).to_bytes(16, "big")]
    assert h.self_metric("otelpipe_connector_genai_metrics_runs_total", closed_by="max_traces") == 1
    await h.conn.shutdown()
    assert h.self_metric("otelpipe_connector_genai_metrics_runs_total", closed_by="shutdown") == 2
    m = h.sink.payloads
    assert sum(dp.count for p in m for rm in p.message.resource_metrics for sm in rm.scope_metrics
               for mt in sm.metrics if mt.name == OP_DURATION for dp in mt.histogram.data_points) == 3


async def test_spans_held_in_all_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.genai_metrics import runs
    monkeypatch.setattr(runs, "MAX_HELD", 5)
    h = Harness()
    for t in (1, 2, 3):  # three traces of two calls, none with its root yet
        await h.send(request([chat(t, 2, 1, 0.0, 1.0), chat(t, 3, 1, 1.0, 2.0)]))
    assert list(h.conn.runs.pending) == [(2).to_bytes(16, "big"), (3).to_bytes(16, "big")]
    assert h.conn.runs.held == 4
    assert h.self_metric("otelpipe_connector_genai_metrics_runs_total", closed_by="max_spans") == 1
    await h.send(request([agent(1, 1, None, 0.0, 3.0)]))  # the root of a trace accounted early: a late span
    assert h.self_metric("otelpipe_connector_genai_metrics_late_spans_total") == 1 and h.conn.runs.held == 4


async def test_refused_series_are_not_remembered_without_bound() -> None:
    h = Harness(GenAIMetricsConfig(aggregation_cardinality_limit=1))
    limit = h.conn.series._max_keys
    spans = [tool(1, 10 + i, 1, 0, 0.5, name=f"tool-{i}") for i in range(limit + 50)] + [agent(1, 1, None, 0, 1)]
    await h.send(request(spans))
    from connectors.genai_metrics.runs import M_TOOL
    assert len(h.conn.series.points[M_TOOL]) == limit
    m = await h.flush()
    assert sum(v[0] for _, v in m.points(TOOL_DURATION)) == limit + 50


async def test_runs_hitting_the_step_ceiling_or_calling_no_tool_are_flagged() -> None:
    h = Harness(GenAIMetricsConfig(step_ceiling=3))
    loop = [chat(1, i, 1, i, i + 1.0) for i in range(2, 5)] + [tool(1, 9, 1, 5.0, 5.5), agent(1, 1, None, 0.0, 6.0)]
    silent = [chat(2, 2, 1, 0.0, 1.0), agent(2, 1, None, 0.0, 2.0, name="triage")]
    fine = [chat(3, 2, 1, 0.0, 1.0), tool(3, 3, 1, 1.0, 1.5), agent(3, 1, None, 0.0, 2.0)]
    await h.send(request(loop), request(silent), request(fine))
    m = await h.flush()
    assert m.value(FLAGGED, **{"gen_ai.agent.name": "support", "reason": "step_ceiling"}) == 1
    assert m.value(FLAGGED, **{"gen_ai.agent.name": "triage", "reason": "no_tool_call"}) == 1
    assert len(m.points(FLAGGED)) == 2
    assert m.value(STEPS, **{"gen_ai.agent.name": "support"})[:2] == (2, 4.0)
    assert m.value(TOOLS, **{"gen_ai.agent.name": "support"})[:2] == (2, 2.0)


async def test_agent_of_each_span_is_its_own_else_the_nearest_agent_above() -> None:
    h = Harness()
    t = 1
    spans = [chat(t, 4, 3, 1.0, 2.0, tin=1, tout=1),  # under the sub-agent
             agent(t, 3, 2, 1.0, 3.0, name="researcher"),
             tool(t, 2, 1, 0.5, 3.5, name="delegate"),
             chat(t, 5, 1, 4.0, 5.0, tin=2, tout=2, **{"gen_ai.agent.name": "own"}),
             agent(t, 1, None, 0.0, 6.0, name="planner")]
    await h.send(request(spans))
    m = await h.flush()
    assert m.count_sum(TOKENS, **tokens("input", **{"gen_ai.agent.name": "researcher"})) == (1, 1.0)
    assert m.count_sum(TOKENS, **tokens("input", **{"gen_ai.agent.name": "own"})) == (1, 2.0)
    assert m.count_sum(TOOL_DURATION, **{"gen_ai.tool.name": "delegate", "gen_ai.agent.name": "planner"}) == (1, 3.0)
    # one run per trace: the outermost invoke_agent span
    assert m.points(RUN_DURATION) == [({"gen_ai.agent.name": "planner"}, (1, 6.0, m.value(
        RUN_DURATION, **{"gen_ai.agent.name": "planner"})[2]))]
    assert m.count_sum(STEPS, **{"gen_ai.agent.name": "planner"}) == (1, 2.0)


async def test_mcp_calls_per_server_and_method() -> None:
    h = Harness()
    t = 1
    mcp = {"mcp.method.name": "tools/call", "server.address": "mcp.internal", "server.port": 8931,
           "mcp.session.id": "s-1"}
    spans = [
        span(t, 2, 1, 0.0, 0.2, {**mcp, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"},
             kind=3),
        span(t, 3, 1, 0.5, 1.0, {**mcp, "gen_ai.tool.name": "get_weather", "mcp.session.id": "s-2",
                                  "rpc.response.status_code": "-32602"}, kind=3),
        span(t, 4, 1, 1.0, 1.1, {"mcp.method.name": "tools/list", "server.address": "mcp.internal",
                                  "server.port": 8931}, kind=3),
        # the server's side of a call: the client side counts it
        span(t, 5, 2, 0.05, 0.15, {**mcp, "gen_ai.tool.name": "get_weather"}, kind=2),
        agent(t, 1, None, 0.0, 2.0)]
    await h.send(request(spans))
    m = await h.flush()
    base = {"mcp.method.name": "tools/call", "gen_ai.tool.name": "get_weather", "server.address": "mcp.internal",
            "server.port": "8931"}
    assert m.count_sum(MCP_DURATION, **base) == (1, 0.2)
    failed = {"error.type": "-32602", "rpc.response.status_code": "-32602"}
    assert m.count_sum(MCP_DURATION, **base, **failed) == (1, 0.5)
    assert m.count_sum(MCP_DURATION, **{"mcp.method.name": "tools/list", "server.address": "mcp.internal",
                                        "server.port": "8931"}) == (1, 0.1)
    assert len(m.points(MCP_DURATION)) == 3  # sessions are no key
    assert list(m.raw(MCP_DURATION, **base).explicit_bounds) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60,
                                                                  120, 300]
    # the MCP tools/call span is also the agent's tool call
    assert m.count_sum(TOOL_DURATION, **{"gen_ai.tool.name": "get_weather", "gen_ai.agent.name": "support"}) == (1, 0.2)
    assert m.count_sum(TOOLS, **{"gen_ai.agent.name": "support"}) == (1, 1.0)


PRICES = PricesConfig(
    default=PriceConfig(input=1.0, output=2.0),
    models={"gpt-4o": PriceConfig(input=2.5, output=10.0, cache_read_input=1.25),
            "gpt-4o-mini": PriceConfig(input=0.15, output=0.6),
            "o3": PriceConfig(input=2.0, output=8.0, reasoning_output=4.0)})


def cost_of(m: object, model: str, provider: str = "openai", agent_name: str = "support") -> float:
    return round(m.value(COST, **{"gen_ai.agent.name": agent_name,  # type: ignore[attr-defined]
                                  "gen_ai.provider.name": provider, "gen_ai.request.model": model}), 9)


async def test_cost_from_the_price_table_exact_then_longest_prefix_then_default() -> None:
    h = Harness(GenAIMetricsConfig(prices=PRICES))
    t = 1
    spans = [
        chat(t, 2, 1, 0, 1, model="gpt-4o", tin=1_000_000, tout=100_000),  # exact: 2.5 + 1.0
        chat(t, 3, 1, 1, 2, model="gpt-4o-mini-2024-07-18", tin=2_000_000, tout=0),  # longest prefix: 0.30
        chat(t, 4, 1, 2, 3, model="llama-3", tin=500_000, tout=500_000),  # default: 0.5 + 1.0
        # 400k of the 1M input read from the cache: 0.6M * 2.5 + 0.4M * 1.25 = 2.0
        chat(t, 5, 1, 3, 4, model="gpt-4o-2024-08-06", tin=1_000_000, tout=0,
             **{"gen_ai.usage.cache_read.input_tokens": 400_000}),
        # reasoning output priced apart: 0.5M * 8 + 0.5M * 4 = 6.0
        chat(t, 6, 1, 4, 5, model="o3", tin=0, tout=1_000_000,
             **{"gen_ai.usage.reasoning.output_tokens": 500_000}),
        tool(t, 7, 1, 5, 6), agent(t, 1, None, 0, 7)]
    await h.send(request(spans))
    m = await h.flush()
    assert cost_of(m, "gpt-4o") == 3.5
    assert cost_of(m, "gpt-4o-mini-2024-07-18") == 0.3
    assert cost_of(m, "llama-3") == 1.5
    assert cost_of(m, "gpt-4o-2024-08-06") == 2.0
    assert cost_of(m, "o3") == 6.0
    assert m.units[COST] == "{USD}"
    assert h.self_metric("otelpipe_connector_genai_metrics_unpriced_calls_total") == 0


async def test_the_response_model_prices_a_call_before_the_request_model() -> None:
    h = Harness(GenAIMetricsConfig(prices=PricesConfig(models={"gpt-4o-mini": PriceConfig(input=1.0, output=1.0)})))
    spans = [chat(1, 2, 1, 0, 1, model="gpt-4o-mini", tin=1_000_000, tout=0,
                  **{"gen_ai.response.model": "gpt-4o-mini-2024-07-18"}),
             chat(1, 3, 1, 1, 2, model="mystery", tin=1_000_000, tout=0), agent(1, 1, None, 0, 3)]
    await h.send(request(spans))
    m = await h.flush()
    assert cost_of(m, "gpt-4o-mini") == 1.0
    assert [a for a, _ in m.points(COST)] == [{"gen_ai.agent.name": "support", "gen_ai.provider.name": "openai",
                                               "gen_ai.request.model": "gpt-4o-mini"}]
    assert h.self_metric("otelpipe_connector_genai_metrics_unpriced_calls_total") == 1


async def test_budget_saturation_per_period_resets_at_the_boundary() -> None:
    day = 1_700_006_400.0  # 2023-11-15T00:00:00Z
    cfg = GenAIMetricsConfig(prices=PRICES, budgets=(BudgetConfig(agent="support", period="day", limit=10.0),
                                                     BudgetConfig(agent="support", period="hour", limit=2.0),
                                                     BudgetConfig(agent="triage", period="day", limit=1.0)))
    h = Harness(cfg, wall=day - 30.0)
    await h.send(request([chat(1, 2, 1, 0, 1, tin=1_000_000, tout=0), tool(1, 3, 1, 1, 2),
                          agent(1, 1, None, 0, 3)]))  # 2.5 USD
    m = await h.flush()
    assert m.value(BUDGET, **{"gen_ai.agent.name": "support", "period": "day"}) == 0.25
    assert m.value(BUDGET, **{"gen_ai.agent.name": "support", "period": "hour"}) == 1.25
    assert m.value(BUDGET, **{"gen_ai.agent.name": "triage", "period": "day"}) == 0.0
    assert m.by_name[BUDGET][0][3] == {}  # a budget is no service's
    h.wall = day + 30.0
    m = await h.flush()
    assert m.value(BUDGET, **{"gen_ai.agent.name": "support", "period": "day"}) == 0.0
    await h.send(request([chat(2, 2, 1, 0, 1, tin=2_000_000, tout=0), tool(2, 3, 1, 1, 2), agent(2, 1, None, 0, 3)]))
    m = await h.flush()
    assert m.value(BUDGET, **{"gen_ai.agent.name": "support", "period": "day"}) == 0.5
    assert m.value(BUDGET, **{"gen_ai.agent.name": "support", "period": "hour"}) == 2.5
    assert h.conn.status()["budgets"][0] == {"agent": "support", "period": "day", "spent_usd": 5.0,
                                            "utilization": 0.5}


async def test_dimensions_come_from_the_span_then_the_resource_then_the_default() -> None:
    cfg = GenAIMetricsConfig(dimensions=(DimensionConfig(name="deployment.environment", default="unknown"),
                                         DimensionConfig(name="tenant")))
    h = Harness(cfg)
    await h.send(request([chat(1, 2, 1, 0, 1, tenant="acme"), agent(1, 1, None, 0, 2)],
                         **{"deployment.environment": "prod"}),
                 request([chat(2, 2, 1, 0, 1), agent(2, 1, None, 0, 2)], service="other"))
    m = await h.flush()
    assert m.count_sum(OP_DURATION, **CHAT, **{"deployment.environment": "prod", "tenant": "acme"}) == (1, 1.0)
    assert m.count_sum(OP_DURATION, **CHAT, **{"deployment.environment": "unknown"}) == (1, 1.0)
    assert m.count_sum(RUN_DURATION, **{"gen_ai.agent.name": "support", "deployment.environment": "prod"}) == (1, 2.0)


async def test_cardinality_is_capped_per_metric_into_an_overflow_series() -> None:
    h = Harness(GenAIMetricsConfig(aggregation_cardinality_limit=2))
    spans = [tool(1, 10 + i, 1, 0, 0.5, name=f"tool-{i}") for i in range(5)] + [agent(1, 1, None, 0, 1)]
    await h.send(request(spans))
    m = await h.flush()
    pts = m.points(TOOL_DURATION)
    assert len(pts) == 3
    assert sum(v[0] for _, v in pts) == 5  # totals stay exact
    assert m.count_sum(TOOL_DURATION, **{"otel.metric.overflow": "true"}) == (3, 1.5)
    assert h.self_metric("otelpipe_connector_genai_metrics_overflow_series_total",
                         metric=TOOL_DURATION) == 3


async def test_spans_that_are_not_genai_make_nothing(monkeypatch: pytest.MonkeyPatch, reader: str) -> None:
    from connectors.genai_metrics import runs
    decoded: list[bytes] = []
    real = runs._SPAN_FROM

    def counting(sb: bytes) -> object:
        decoded.append(sb)
        return real(sb)
    monkeypatch.setattr(runs, "_SPAN_FROM", counting)
    h = Harness()
    plain = [span(1, i, 1 if i > 1 else None, 0, 1, {"http.route": "/x", "gen_ai.prompt": "not an operation"})
             for i in range(1, 50)]
    await h.send(request(plain))
    assert (await h.flush()).by_name == {}
    assert h.conn.runs.pending == {}
    assert h.self_metric("otelpipe_connector_genai_metrics_runs_total") == 0
    native = h.conn.runs.native
    assert (native is None) == (reader == "python")
    if native is not None:  # the C reader: spans parsed as GenAI spans
        decoded.extend(b"" for _ in range(native.parsed))
    assert decoded == []  # the operation-name key is looked for on the wire: no span was decoded
    await h.send(request([chat(2, 2, 1, 0, 1), *plain]))
    if native is not None:
        decoded.extend(b"" for _ in range(native.parsed))
    assert len(decoded) == 1


async def test_a_retryable_refusal_goes_with_the_next_flush_a_permanent_one_is_counted() -> None:
    h = Harness()
    await h.send(request(agent_run(1)))
    h.sink.refusals.append(RetryableError("queue full"))
    assert (await h.flush()).by_name == {}
    await h.send(request(agent_run(2)))
    m = await h.flush()
    assert m.count_sum(RUN_DURATION, **{"gen_ai.agent.name": "support"}) == (2, 10.0)
    assert m.count_sum(TOKENS, **tokens("input")) == (4, 1040.0)
    await h.send(request(agent_run(3)))
    h.sink.refusals.append(PermanentError("bad"))
    await h.flush()
    assert h.self_metric("otelpipe_connector_genai_metrics_dropped_metric_points_total", reason="export_failed") > 0
    assert (await h.flush()).by_name == {}


async def test_malformed_spans_are_counted_and_skipped() -> None:
    h = Harness()
    # a span holding the operation key whose bytes are cut short; the request around it is well formed
    body = b"\x0a\x10" + b"\x01" * 16 + OPERATION_NEEDLE + b"\x12\xff"
    scope = b"\x12" + bytes([len(body)]) + body
    rs = b"\x12" + bytes([len(scope)]) + scope
    await h.conn.consume(Payload(Signal.TRACES, raw=b"\x0a" + bytes([len(rs)]) + rs))
    await h.send(request([chat(1, 2, None, 0, 1)]))
    assert h.self_metric("otelpipe_connector_genai_metrics_skipped_spans_total", reason="malformed") == 1
    m = await h.flush()
    assert m.count_sum(OP_DURATION, **{k: v for k, v in CHAT.items() if k != "gen_ai.agent.name"}) == (1, 1.0)


@pytest.mark.parametrize(("cfg", "key"), [
    (GenAIMetricsConfig(dimensions=(DimensionConfig(name="gen_ai.agent.name"),)), "dimensions[0].name"),
    (GenAIMetricsConfig(trace_timeout=0.0), "trace_timeout"),
    (GenAIMetricsConfig(max_traces=0), "max_traces"),
    (GenAIMetricsConfig(budgets=(BudgetConfig(agent="a", limit=1), BudgetConfig(agent="a", limit=2))), "budgets[1]"),
])
def test_invalid_configs_say_which_key(cfg: GenAIMetricsConfig, key: str) -> None:
    assert [i.key for i in cfg.validate()] == [key]


def test_config_decodes_from_yaml_shape() -> None:
    from pipeline.config.types import decode_dataclass
    issues: list = []
    cfg = decode_dataclass(GenAIMetricsConfig, {
        "dimensions": [{"name": "deployment.environment", "default": "prod"}],
        "prices": {"default": {"input": 1, "output": 2}, "models": {"gpt-4o": {"input": 2.5, "output": 10}}},
        "budgets": [{"agent": "support", "period": "week", "limit": 100}],
        "step_ceiling": 10, "trace_timeout": "1m"}, "connectors.genai_metrics", issues)
    assert issues == []
    assert cfg.prices.models["gpt-4o"].output == 10 and cfg.budgets[0].period == "week"
    assert float(cfg.trace_timeout) == 60.0
    decode_dataclass(GenAIMetricsConfig, {"budgets": [{"agent": "a", "period": "year", "limit": -1}],
                                          "prices": {"models": {"x": {"inputs": 1}}}}, "c", issues)
    assert [i.path for i in issues] == ["c.budgets[0].period", "c.prices.models.x.inputs"]
    issues.clear()
    decode_dataclass(GenAIMetricsConfig, {"budgets": [{"agent": "a", "limit": -1}],
                                          "prices": {"models": {"x": {"input": float("nan")}}}}, "c", issues)
    assert [i.path for i in issues] == ["c.budgets[0].limit", "c.prices.models.x.input"]


async def test_budget_spend_survives_a_reload_handover() -> None:
    cfg = GenAIMetricsConfig(prices=PRICES, budgets=(BudgetConfig(agent="support", period="day", limit=10.0),))
    old = Harness(cfg)
    await old.send(request([chat(1, 2, 1, 0, 1, tin=1_000_000, tout=0), tool(1, 3, 1, 1, 2), agent(1, 1, None, 0, 3)]))
    await old.flush()
    new = Harness(GenAIMetricsConfig(prices=PRICES, budgets=(BudgetConfig(agent="support", period="day", limit=5.0),)))
    new.conn.takeover_state(old.conn.handover_state())
    m = await new.flush()
    assert m.value(BUDGET, **{"gen_ai.agent.name": "support", "period": "day"}) == 0.5  # 2.5 USD of the new 5


async def test_refusals_are_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    await h.send(request(agent_run(1)))
    h.sink.refusals.append(RetryableError("POST https://user:s3cr3t@intake.example/v1?api_key=k3y failed"))
    with caplog.at_level("DEBUG"):
        await h.flush()
        await h.send(request(agent_run(2)))
        h.sink.refusals.append(PermanentError("Authorization: Bearer t0ken rejected"))
        await h.flush()
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "intake.example" in text
    assert not any(s in text for s in ("s3cr3t", "k3y", "t0ken"))


async def test_an_unreadable_attribute_value_reads_as_empty_and_loses_nothing() -> None:
    # bytes that are no AnyValue (the receiver keeps requests on the wire, so they reach the connector):
    # before, reading them as text raised in the middle of the request, which was then counted as
    # malformed although some of its spans had been accounted, and the rest of its runs stayed held
    h = Harness(GenAIMetricsConfig(prices=PRICES))
    raw = request([chat(1, 2, 1, 0.0, 1.0), agent(1, 1, None, 0.0, 2.0),
                   chat(2, 2, 1, 0.0, 1.0), agent(2, 1, None, 0.0, 2.0)]).SerializeToString()
    at = raw.index(b"\x0a\x06gpt-4o")  # the first chat's request model
    raw = raw[:at] + b"\x0a\xff" + b"\xff" * 6 + raw[at + 8:]
    await h.conn.consume(Payload(Signal.TRACES, raw=raw))
    assert h.self_metric("otelpipe_connector_genai_metrics_skipped_spans_total", reason="malformed") == 0
    assert h.self_metric("otelpipe_connector_genai_metrics_runs_total", closed_by="root") == 2
    m = await h.flush()
    assert m.count_sum(OP_DURATION, **CHAT) == (1, 1.0)
    assert m.count_sum(OP_DURATION, **{**CHAT, "gen_ai.request.model": ""}) == (1, 1.0)
