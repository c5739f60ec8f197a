"""The names `genai_metrics` reads from spans and the metrics it writes, in one table each.

The OpenTelemetry GenAI conventions are in development and are being renamed as
they go (they moved to their own repository, `semantic-conventions-genai`);
instrumentations in the field emit several generations of them. Each attribute
below lists the names read, newest first: the first one present on a span wins.

Sources: semantic-conventions-genai `docs/registry/attributes/gen-ai.md`,
`docs/gen-ai/gen-ai-metrics.md` and `docs/gen-ai/mcp.md`; the older spellings are
those of semantic-conventions v1.26–v1.36 and of OpenLLMetry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# -- attributes read (newest spelling first) --------------------------------------------------------

OPERATION = "gen_ai.operation.name"
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ_TOKENS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE_TOKENS = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens",
                      "gen_ai.usage.cache_creation_input_tokens")
REASONING_TOKENS = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
AGENT = ("gen_ai.agent.name", "gen_ai.agent.id")
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
CONVERSATION = "gen_ai.conversation.id"
ERROR_TYPE = "error.type"
MCP_METHOD = "mcp.method.name"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
RPC_STATUS = ("rpc.response.status_code", "rpc.jsonrpc.error_code")

#: `error.type` when a span failed (status ERROR) without saying how, as the conventions prescribe.
OTHER_ERROR = "_OTHER"
#: `rpc.response.status_code` values that are not errors.
RPC_OK = frozenset({"OK", "0"})

# -- operations ------------------------------------------------------------------------------------

#: Model calls that generate: each is a reasoning step of its agent run.
GENERATION = frozenset({"chat", "text_completion", "generate_content"})
#: Operations whose tokens are counted (on leaf spans only) and priced.
INFERENCE = GENERATION | {"embeddings"}
EXECUTE_TOOL = "execute_tool"
INVOKE_AGENT = "invoke_agent"
#: What a span without `gen_ai.operation.name` but with a provider is taken for (conventions before v1.27).
LEGACY_OPERATION = "chat"

# -- metrics written ---------------------------------------------------------------------------------

Kind = Literal["histogram", "sum", "gauge"]

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
AGENT_DURATION_BUCKETS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4, 204.8, 409.6)
CALLS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MCP_DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric the connector writes: its attributes come first in every key, the dimensions after."""

    name: str
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...]
    buckets: tuple[float, ...] = ()


TOKEN_USAGE = MetricDef(
    "gen_ai.client.token.usage", "histogram", "{token}",
    "Number of input and output tokens used, per leaf model call.",
    ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
     "gen_ai.token.type", "gen_ai.agent.name"), TOKEN_BUCKETS)
OPERATION_DURATION = MetricDef(
    "gen_ai.client.operation.duration", "histogram", "s", "GenAI operation duration.",
    ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
     "error.type", "gen_ai.agent.name"), DURATION_BUCKETS)
TOOL_DURATION = MetricDef(
    "gen_ai.execute_tool.duration", "histogram", "s", "The duration of a single tool execution.",
    ("gen_ai.tool.name", "gen_ai.tool.type", "error.type", "gen_ai.agent.name"), DURATION_BUCKETS)
MCP_DURATION = MetricDef(
    "mcp.client.operation.duration", "histogram", "s",
    "The duration of the MCP request or notification as observed on the sender.",
    ("mcp.method.name", "gen_ai.tool.name", "server.address", "server.port", "error.type",
     "rpc.response.status_code"), MCP_DURATION_BUCKETS)
RUN_DURATION = MetricDef(
    "gen_ai.agent.run.duration", "histogram", "s",
    "Duration of agent runs (the outermost invoke_agent span of a trace, else its root span).",
    ("gen_ai.agent.name", "error.type"), AGENT_DURATION_BUCKETS)
INFERENCE_CALLS = MetricDef(
    "gen_ai.invoke_agent.inference_calls", "histogram", "{inference_call}",
    "Model calls (reasoning steps) per agent run.", ("gen_ai.agent.name",), CALLS_BUCKETS)
TOOL_CALLS = MetricDef(
    "gen_ai.invoke_agent.tool_calls", "histogram", "{tool_call}", "Tool calls per agent run.",
    ("gen_ai.agent.name",), CALLS_BUCKETS)
RUNS_FLAGGED = MetricDef(
    "gen_ai.agent.runs.flagged", "sum", "{run}",
    "Agent runs that hit the step ceiling or ended without any tool call, by reason.",
    ("gen_ai.agent.name", "reason"))
COST = MetricDef(
    "gen_ai.client.cost.usd", "sum", "{USD}", "Cost of model calls in US dollars, from the configured prices.",
    ("gen_ai.agent.name", "gen_ai.provider.name", "gen_ai.request.model"))
BUDGET = MetricDef(
    "gen_ai.agent.budget.utilization", "gauge", "1",
    "Spend of the agent in the current budget period divided by its budget.", ("gen_ai.agent.name", "period"))

METRICS = (TOKEN_USAGE, OPERATION_DURATION, TOOL_DURATION, MCP_DURATION, RUN_DURATION, INFERENCE_CALLS,
           TOOL_CALLS, RUNS_FLAGGED, COST, BUDGET)

#: Run flags (the `reason` attribute of gen_ai.agent.runs.flagged).
STEP_CEILING = "step_ceiling"
NO_TOOL_CALL = "no_tool_call"
