"""Per-trace accounting: GenAI spans become metrics once their agent run is known.

Why per trace: a model call rarely says which agent made it, and the agent's span
(`invoke_agent`) ends — and is exported — after the calls it made. So the GenAI spans of a
trace are kept (a few fields each, `spans.Op`) until the trace's root span arrives, then
accounted together:

- the run span is the trace's outermost `invoke_agent` span (the one that started first),
  else its root span; each trace with a run span is one agent run;
- each span's agent is its own `gen_ai.agent.name` (or `gen_ai.agent.id`), else that of the
  nearest `invoke_agent` span above it, else the run's;
- tokens are counted once: only on leaf inference spans. An inference span with an inference
  span below it (a framework's wrapper around the client library's call, or an aggregate)
  counts neither its tokens, its cost nor its duration; `invoke_agent` spans never count tokens;
- the run's reasoning steps are its leaf generation calls (chat, text_completion,
  generate_content), its tool calls its `execute_tool` spans.

Bounded in memory and time: a trace is held until its root span arrives, or for
`trace_timeout` of silence (a root that never comes: sampled away, or exported elsewhere),
at most `max_traces` traces at once (beyond, the oldest is accounted early), at most
`MAX_OPS` GenAI spans per trace and `MAX_HELD` in all (beyond, the oldest traces are
accounted early). Spans of a trace that was already accounted ("late" spans)
are accounted on their own, with the run's agent, and counted; they never open a new run.

Spans of kind SERVER are the serving side of a call the client side counts (model servers,
MCP servers, tool services): they are left out of the client metrics.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf.message import DecodeError

from connectors.genai_metrics import semconv as sc
from connectors.genai_metrics.aggregate import M_CALLS, Calls, Hist, ResourceId, Series
from connectors.genai_metrics.config import GenAIMetricsConfig
from connectors.genai_metrics.pricing import Price, PriceTable
from connectors.genai_metrics.spans import (
    AGENT,
    CLS,
    CONV,
    COUNT_GROUPS,
    DIMS,
    END,
    ERR,
    GEN,
    GROUPS,
    INFERENCE,
    L1,
    L2,
    L3,
    NEEDLES,
    OPV,
    OTHER,
    OWN_AGENT,
    PARENT,
    R_CODE,
    R_END,
    R_KIND,
    R_PARENT,
    R_RES,
    R_SID,
    R_START,
    R_TID,
    RES,
    RESOURCE_VIEW,
    ROOT,
    SERVER,
    SID,
    SPAN_VIEW,
    START,
    STATUS_ERROR,
    TCR,
    TCW,
    TIN,
    TOOL,
    TOUT,
    TRS,
    V_ADDRESS,
    V_AGENT_ID,
    V_AGENT_NAME,
    V_CONV,
    V_DIMS,
    V_ERR,
    V_MCP,
    V_OP,
    V_PORT,
    V_PROVIDER,
    V_REQUEST_MODEL,
    V_RESPONSE_MODEL,
    V_TCR,
    V_TCW,
    V_TIN,
    V_TOOL,
    V_TOOL_TYPE,
    V_TOUT,
    V_TRS,
    Op,
    Record,
    Texts,
    agent_of,
    any_count,
    classify,
    count,
    error_of,
    has_parent_fast,
    mcp_error,
    seconds,
    string_value,
    trace_id_fast,
)
from pipeline.wire import TRACES_ENVELOPE

_EMPTY = string_value("")
_OPEN = object()  # `_closed.get` default: the trace was not accounted yet

try:
    from connectors.genai_metrics import _genaiwire
except ImportError:  # not built (no C compiler): the Python reader below does the same work, slower
    _genaiwire = None  # type: ignore[assignment]

MAX_OPS = 10_000  # GenAI spans held per trace; a trace with more is accounted at once
MAX_HELD = 200_000  # GenAI spans held in all; beyond, the oldest traces are accounted early
MAX_DEPTH = 64  # parent links followed when looking for a span's agent or nested inference
_CACHE = 4096
_JOB_INSTANCE = ("service.name", "service.namespace", "service.instance.id")
M = {m.name: i for i, m in enumerate(sc.METRICS)}
M_TOOL, M_MCP, M_RUN, M_STEPS, M_TOOLS, M_FLAGGED, M_BUDGET = (
    M[m.name] for m in (sc.TOOL_DURATION, sc.MCP_DURATION, sc.RUN_DURATION, sc.INFERENCE_CALLS, sc.TOOL_CALLS,
                        sc.RUNS_FLAGGED, sc.BUDGET))
_SPAN_FROM = SPAN_VIEW.FromString
_PARENT_AT_28 = b"\x22\x08"  # parent_span_id's tag and length, where SDKs put it (after trace and span id)
_CLASSES = {v: c for v in (string_value(op) for op in (*sc.INFERENCE, sc.EXECUTE_TOOL, sc.INVOKE_AGENT))
            if (c := classify(v, None)) is not None}
_DUR_BOUNDS = sc.DURATION_BUCKETS
_RUN_BOUNDS = sc.AGENT_DURATION_BUCKETS
_CALLS_BOUNDS = sc.CALLS_BUCKETS
_TOKEN_BOUNDS = sc.TOKEN_BUCKETS


class _Trace:
    __slots__ = ("last", "ops", "root")

    def __init__(self, now: float) -> None:
        self.ops: list[Op] = []
        self.root: Op | None = None
        self.last = now


@dataclass(slots=True)
class Stats:
    """What the accounting counts about itself (the connector turns it into self-metrics)."""

    runs: dict[str, int] = field(default_factory=dict)  # traces accounted, by what closed them
    late_spans: int = 0
    malformed: int = 0


class RunAccounting:
    """Reads the GenAI spans of serialized trace requests (`ingest`) and accounts them into `series`."""

    def __init__(self, cfg: GenAIMetricsConfig, series: Series, prices: PriceTable, texts: Texts,
                 clock: Callable[[], float]) -> None:
        self.series = series
        self._prices = prices
        self._text = texts
        self._clock = clock
        self._timeout = float(cfg.trace_timeout)
        self._max_traces = cfg.max_traces
        self._ceiling = cfg.step_ceiling
        self._exemplars = cfg.exemplars.enabled
        self._dim_names = tuple(d.name for d in cfg.dimensions)
        self._dim_defaults = tuple(d.default for d in cfg.dimensions)
        self.pending: dict[bytes, _Trace] = {}
        self.held = 0  # GenAI spans in `pending`
        self._closed: dict[bytes, bytes | None] = {}  # accounted trace → its run's agent, for late spans
        self._resources: dict[bytes, tuple[ResourceId, tuple[Any, ...]]] = {}
        self._price_cache: dict[tuple[bytes | None, bytes | None], Price | None] = {}
        self.stats = Stats()
        self._groups = (*GROUPS, *((n,) for n in self._dim_names))
        self.native = None if _genaiwire is None else _genaiwire.Reader(
            tuple(tuple(n.encode() for n in names) for names in self._groups), COUNT_GROUPS, NEEDLES)

    # -- reading spans ---------------------------------------------------------------------------

    def ingest(self, raw: bytes) -> None:
        """Account the GenAI spans of one serialized ExportTraceServiceRequest."""
        now = self._clock()
        native = self.native
        found = None
        if native is not None:
            found = native.read_ops(raw, _CLASSES, self._resource, sc.OTHER_ERROR, self._exemplars) \
                if not self._dim_names else native.read(raw)
        genai, roots = self._read_py(raw) if found is None else found
        rooted: list[bytes] = []
        span = self._span
        rb: bytes | None = None
        res = None
        for r in genai:
            if len(r) == 3:  # (trace id, ops, the first op without a parent): spans the C reader made ops of
                self._ops(r[0], r[1], r[2], now, rooted)
                continue
            if r[R_RES] is not rb:
                rb = r[R_RES]
                res = self._resource(rb)
            span(r, res, now, rooted)
        if roots and self.pending:
            self._find_roots(roots, rooted)
        for tid in rooted:
            t = self.pending.get(tid)
            if t is not None:
                self._close(tid, t, "root")

    # -- the Python reader (where _genaiwire is not built, and for what it does not read) ------------

    def _read_py(self, raw: bytes) -> tuple[list[Record], list[Any]]:
        """What `_genaiwire.Reader.read` returns, but root candidates stay (resource, span bytes) pairs:
        they are decoded only when their trace is held (`_find_roots`)."""
        env = TRACES_ENVELOPE.FromString(raw)
        genai: list[Record] = []
        roots: list[Any] = []
        record = self._record
        for rs in env.resource_spans:
            rb = rs.resource
            for ss in rs.scope_spans:
                for sb in ss.spans:
                    if NEEDLES[0] in sb or NEEDLES[1] in sb or NEEDLES[2] in sb:
                        r = record(rb, sb)
                        if r is not None:
                            genai.append(r)
                    elif sb[28:30] != _PARENT_AT_28:  # not visibly a child (as SDKs lay spans out): maybe a root
                        roots.append((rb, sb))
        return genai, roots

    def _record(self, rb: bytes, sb: bytes) -> Record | None:
        """The record of a span (None: malformed, counted)."""
        try:
            s = _SPAN_FROM(sb)
        except DecodeError:
            self.stats.malformed += 1
            return None
        g = s.attributes.get
        vals: list[Any] = [rb, s.trace_id, s.span_id, s.parent_span_id, s.kind, s.start_time_unix_nano,
                           s.end_time_unix_nano, s.status.code]
        for names in self._groups:
            for name in names:
                v = g(name)
                if v is not None:
                    break
            vals.append(v)
        return tuple(vals)

    def _find_roots(self, roots: list[Any], rooted: list[bytes]) -> None:
        """Root spans that are no GenAI operation (an HTTP server span, a framework's run span) of traces
        held: looked at only when their trace is held and no root is known yet."""
        pending = self.pending
        for r in roots:
            if len(r) == 2:  # (resource, span bytes) of the Python reader: decoded only if its trace is held
                rb, sb = r
                tid = trace_id_fast(sb)
                if tid is not None and ((t := pending.get(tid)) is None or t.root is not None or has_parent_fast(sb)):
                    continue
                r = self._record(rb, sb)
                if r is None or r[R_PARENT]:
                    continue
            tid = r[R_TID]
            t = pending.get(tid)
            if t is None or t.root is not None:
                continue
            res = self._resource(r[R_RES])
            t.root = (ROOT, r[R_SID], b"", r[R_START], r[R_END], error_of(r), agent_of(r), res[0],
                      self._dims(r, res[1]), None)
            rooted.append(tid)

    def _resource(self, rbytes: bytes) -> tuple[ResourceId, tuple[Any, ...]]:
        """(resource identity, dimension values from the resource) of a serialized Resource."""
        found = self._resources.get(rbytes)
        if found is not None:
            return found
        try:
            attrs = RESOURCE_VIEW.FromString(rbytes).attributes
        except DecodeError:
            attrs = {}
        ident: ResourceId = tuple((k, t) for k in _JOB_INSTANCE if (t := self._text(attrs.get(k))) is not None)
        dims = tuple(attrs.get(n, d) for n, d in zip(self._dim_names, self._dim_defaults))
        if len(self._resources) >= _CACHE:
            self._resources.clear()
        found = self._resources[rbytes] = (ident, dims)
        return found

    @staticmethod
    def _dims(r: Record, res_dims: tuple[Any, ...]) -> tuple[Any, ...]:
        """Dimension values: the span's, else the resource's (or the default)."""
        if not res_dims:
            return ()
        return tuple(v if (v := r[i]) is not None else d for i, d in enumerate(res_dims, V_DIMS))

    def _span(self, r: Record, res: Any, now: float, rooted: list[bytes]) -> None:
        # The hot path (one call per GenAI span).
        kind = r[R_KIND]
        if kind != SERVER and r[V_MCP] is not None:
            self._mcp(r, res)
        op_raw = r[V_OP]
        c = _CLASSES.get(op_raw) if op_raw is not None else None
        if c is None:
            c = classify(op_raw, r[V_PROVIDER])
            if c is None:
                return  # an MCP call that is no tool call, or not a GenAI span after all
        cls, op_raw, generation = c
        if kind == SERVER and cls != AGENT:
            return
        err = r[V_ERR]
        if err is None and r[R_CODE] == STATUS_ERROR:
            err = sc.OTHER_ERROR
        parent = r[R_PARENT]
        own = r[V_AGENT_NAME]  # agent_of, inline
        if own is None or own == _EMPTY:
            own = r[V_AGENT_ID]
            if own == _EMPTY:
                own = None
        dims = self._dims(r, res[1]) if res[1] else ()
        conv = r[V_CONV] if self._exemplars else None
        op: Op
        if cls == INFERENCE:
            tin = r[V_TIN]
            if tin.__class__ is bytes:
                tin = any_count(tin)
            tout = r[V_TOUT]
            if tout.__class__ is bytes:
                tout = any_count(tout)
            tcr, tcw, trs = r[V_TCR], r[V_TCW], r[V_TRS]
            if tcr is not None or tcw is not None or trs is not None:
                tcr, tcw, trs = count(tcr), count(tcw), count(trs)
            op = (cls, r[R_SID], parent, r[R_START], r[R_END], err, own, res[0], dims, conv,
                  op_raw, r[V_PROVIDER], r[V_REQUEST_MODEL], r[V_RESPONSE_MODEL], generation, tin, tout, tcr, tcw, trs)
        elif cls == TOOL:
            op = (cls, r[R_SID], parent, r[R_START], r[R_END], err, own, res[0], dims, conv,
                  op_raw, r[V_TOOL], r[V_TOOL_TYPE], None)
        elif cls == OTHER:
            op = (cls, r[R_SID], parent, r[R_START], r[R_END], err, own, res[0], dims, conv,
                  op_raw, r[V_PROVIDER], r[V_REQUEST_MODEL], r[V_RESPONSE_MODEL])
        else:
            op = (cls, r[R_SID], parent, r[R_START], r[R_END], err, own, res[0], dims, conv, op_raw)
        self._add(r[R_TID], op, now, rooted)

    def _ops(self, tid: bytes, ops: tuple[Op, ...], root: Op | None, now: float, rooted: list[bytes]) -> None:
        """Ops of one trace made by the C reader: added at once, as `_add` adds them one by one."""
        t = self.pending.get(tid)
        n = len(ops)
        if t is None:
            found = self._closed.get(tid, _OPEN)
            if found is not _OPEN:  # late spans (as `_add` accounts them)
                agent = cast(bytes | None, found)
                self.stats.late_spans += n
                self._account(tid, [(op, op[OWN_AGENT] or agent) for op in ops])
                return
            t = self._open(tid, now)
        if len(t.ops) + n >= MAX_OPS or self.held + n > MAX_HELD:
            for op in ops:  # a limit reached on the way: one by one
                self._add(tid, op, now, rooted)
            return
        t.ops += ops
        t.last = now
        self.held += n
        if root is not None and t.root is None:
            t.root = root
            rooted.append(tid)

    def _add(self, tid: bytes, op: Op, now: float, rooted: list[bytes]) -> None:
        """Hold a span's op with its trace (or account it at once when its trace was accounted already)."""
        t = self.pending.get(tid)
        parent = op[PARENT]
        if t is None:
            closed = self._closed
            if tid in closed:
                self.stats.late_spans += 1
                self._account(tid, ((op, op[OWN_AGENT] or closed[tid]),))
                return
            t = self._open(tid, now)
        t.ops.append(op)
        t.last = now
        self.held += 1
        if not parent and t.root is None:
            t.root = op
            rooted.append(tid)
        if len(t.ops) >= MAX_OPS:
            self._close(tid, t, "max_spans")
        elif self.held > MAX_HELD:
            pending = self.pending
            while self.held > MAX_HELD and pending:
                oldest = next(iter(pending))
                self._close(oldest, pending[oldest], "max_spans")

    def _mcp(self, r: Record, res: tuple[ResourceId, tuple[Any, ...]]) -> None:
        err, rpc = mcp_error(r, self._text)
        d = r[R_END] - r[R_START]
        secs = d / 1e9 if d > 0 else 0.0
        key = (res[0], r[V_MCP], r[V_TOOL], r[V_ADDRESS], r[V_PORT], err, rpc,
               *(self._dims(r, res[1]) if res[1] else ()))
        ref = (r[R_TID], r[R_SID], r[R_END], r[V_CONV], secs) if self._exemplars else None
        self.series.hist(M_MCP, key, secs, ref)

    # -- traces held -------------------------------------------------------------------------------

    def _open(self, tid: bytes, now: float) -> _Trace:
        pending = self.pending
        while len(pending) >= self._max_traces:
            oldest = next(iter(pending))
            self._close(oldest, pending[oldest], "max_traces")
        t = pending[tid] = _Trace(now)
        return t

    def close_idle(self) -> None:
        """Account the traces silent for trace_timeout (their root never came)."""
        cutoff = self._clock() - self._timeout
        for tid, t in list(self.pending.items()):
            if t.last <= cutoff:
                self._close(tid, t, "timeout")

    def close_all(self, reason: str) -> None:
        for tid, t in list(self.pending.items()):
            self._close(tid, t, reason)

    # -- accounting --------------------------------------------------------------------------------

    def _close(self, tid: bytes, t: _Trace, reason: str) -> None:
        del self.pending[tid]
        ops = t.ops
        self.held -= len(ops)
        runs = self.stats.runs
        runs[reason] = runs.get(reason, 0) + 1
        agents = [op for op in ops if op[CLS] == AGENT]
        # The common shape: one invoke_agent span with the trace's other GenAI spans right below it. Those need
        # no walk up the trace (an inference span there has no inference span above it to mark as a wrapper,
        # and its agent is the invoke_agent span's): `by_id` is built only for the spans that do.
        top = agents[0] if len(agents) == 1 and agents[0][OWN_AGENT] is not None else None
        top_sid = top[SID] if top is not None else None
        by_id: dict[bytes, Op] | None = None
        nested = None
        above = {op[PARENT] for op in ops if op[CLS] == INFERENCE}  # the spans inference spans are right below
        if len(ops) > len(agents) + 1 and len(above) > (top_sid in above):  # some below another span than `top`
            by_id = {op[SID]: op for op in ops}
            nested = _nested_inference(ops, by_id)
        root = t.root
        run = (agents[0] if len(agents) == 1 else min(agents, key=lambda o: (o[START], -o[END]))) if agents else root
        run_agent = run[OWN_AGENT] if run is not None else None
        if run_agent is None:
            run_agent = root[OWN_AGENT] if root is not None and root[OWN_AGENT] is not None else \
                next((op[OWN_AGENT] for op in ops if op[OWN_AGENT] is not None), None)
        memo: dict[bytes, bytes | None] | None = None
        steps = tools = 0
        pairs: list[tuple[Op, bytes | None]] = []
        add = pairs.append
        for op in ops:
            cls = op[CLS]
            if cls == AGENT or (nested and op[SID] in nested):
                continue
            agent = op[OWN_AGENT]
            if agent is None:
                if op[PARENT] == top_sid:
                    agent = top[OWN_AGENT]  # type: ignore[index]
                else:
                    if by_id is None:
                        by_id = {op[SID]: op for op in ops}
                    parent = by_id.get(op[PARENT])
                    if parent is None:
                        agent = run_agent
                    elif parent[CLS] == AGENT and parent[OWN_AGENT] is not None:  # a direct child
                        agent = parent[OWN_AGENT]
                    else:
                        if memo is None:
                            memo = {}
                        agent = _agent_above(op, by_id, memo, run_agent)
            add((op, agent))
            if cls == INFERENCE:
                steps += op[GEN]
            elif cls == TOOL:
                tools += 1
        self._account(tid, pairs)
        closed = self._closed
        closed[tid] = run_agent
        if len(closed) > self._max_traces:
            while len(closed) > self._max_traces:
                del closed[next(iter(closed))]
        if run is not None:
            self._run(run, run_agent, steps, tools, tid)

    def _run(self, run: Op, agent: bytes | None, steps: int, tools: int, tid: bytes) -> None:
        series = self.series
        pts = series.points
        dims = run[DIMS]
        secs = seconds(run)
        ex = self._exemplars
        key: tuple[Any, ...] = (run[RES], agent, run[ERR])
        if dims:
            key += dims
        ref = (tid, run[SID], run[END], run[CONV], secs) if ex else None
        h = pts[M_RUN].get(key)
        if h is None:
            series.hist(M_RUN, key, secs, ref)
        else:  # `observe`, inline (as below)
            i = bisect_left(_RUN_BOUNDS, secs)
            h.buckets[i] += 1  # type: ignore[union-attr]
            h.count += 1  # type: ignore[union-attr]
            h.total += secs  # type: ignore[union-attr]
            if ref is not None:
                h.exemplars[i] = ref  # type: ignore[union-attr]
        key = (run[RES], agent)
        if dims:
            key += dims
        for m, n in ((M_STEPS, steps), (M_TOOLS, tools)):
            ref = (tid, run[SID], run[END], run[CONV], n) if ex else None
            h = pts[m].get(key)
            if h is None:
                series.hist(m, key, n, ref)
            else:
                i = bisect_left(_CALLS_BOUNDS, n)
                h.buckets[i] += 1  # type: ignore[union-attr]
                h.count += 1  # type: ignore[union-attr]
                h.total += n  # type: ignore[union-attr]
                if ref is not None:
                    h.exemplars[i] = ref  # type: ignore[union-attr]
        if self._ceiling and steps >= self._ceiling:
            series.add(M_FLAGGED, (run[RES], agent, sc.STEP_CEILING, *dims), 1,
                       (tid, run[SID], run[END], run[CONV], 1) if ex else None)
        if steps and not tools and agent is not None:
            series.add(M_FLAGGED, (run[RES], agent, sc.NO_TOOL_CALL, *dims), 1,
                       (tid, run[SID], run[END], run[CONV], 1) if ex else None)

    def _account(self, tid: bytes, pairs: Iterable[tuple[Op, bytes | None]]) -> None:
        """The metrics of spans of one trace, each with its agent (their run's aside). One call per trace:
        the series and bounds are looked up once."""
        series = self.series
        tools = series.points[M_TOOL]
        calls = series.points[M_CALLS]
        ex = self._exemplars
        bisect = bisect_left
        dur_bounds = _DUR_BOUNDS
        token_bounds = _TOKEN_BOUNDS
        for op, agent in pairs:
            cls = op[CLS]
            secs = op[END] - op[START]
            secs = secs / 1e9 if secs > 0 else 0.0
            if cls == TOOL:
                tkey = (op[RES], op[L1], op[L2], op[ERR], agent)
                if op[DIMS]:
                    tkey += op[DIMS]
                th = tools.get(tkey)
                if th is None:
                    series.hist(M_TOOL, tkey, secs, (tid, op[SID], op[END], op[CONV], secs) if ex else None)
                    continue
                i = bisect(dur_bounds, secs)
                th.buckets[i] += 1  # type: ignore[union-attr]
                th.count += 1  # type: ignore[union-attr]
                th.total += secs  # type: ignore[union-attr]
                if ex:
                    th.exemplars[i] = (tid, op[SID], op[END], op[CONV], secs)  # type: ignore[union-attr]
                continue
            if cls != INFERENCE and cls != OTHER:
                continue
            key = (op[RES], op[OPV], op[L1], op[L2], op[L3], op[ERR], agent)
            if op[DIMS]:
                key += op[DIMS]
            c = calls.get(key)
            if c is None:
                price = self._price(op[L3], op[L2]) if cls == INFERENCE else None
                c = series.new(M_CALLS, key, lambda: Calls(price))  # noqa: B023 (called at once)
            tin = tout = None
            if cls == INFERENCE:
                tin = op[TIN]
                tout = op[TOUT]
            ref = (tid, op[SID], op[END], op[CONV], secs, tin, tout) if ex else None
            h: Hist = c.dur  # type: ignore[union-attr]
            i = bisect(dur_bounds, secs)
            h.buckets[i] += 1
            h.count += 1
            h.total += secs
            if ref is not None:
                h.exemplars[i] = ref
            if tin is None and tout is None:
                continue
            if tin is not None:
                h = c.tin  # type: ignore[union-attr]
                i = bisect(token_bounds, tin)
                h.buckets[i] += 1
                h.count += 1
                h.total += tin
                if ref is not None:
                    h.exemplars[i] = ref
            else:
                tin = 0
            if tout is not None:
                h = c.tout  # type: ignore[union-attr]
                i = bisect(token_bounds, tout)
                h.buckets[i] += 1
                h.count += 1
                h.total += tout
                if ref is not None:
                    h.exemplars[i] = ref
            else:
                tout = 0
            if c.price is None:  # type: ignore[union-attr]
                c.unpriced += 1  # type: ignore[union-attr]
                continue
            cache_read = op[TCR] or 0
            cache_write = op[TCW] or 0
            reasoning = op[TRS] or 0
            if cache_read or cache_write:
                plain = tin - cache_read - cache_write
                c.plain_in += plain if plain > 0 else 0  # type: ignore[union-attr]
                c.cache_read += cache_read  # type: ignore[union-attr]
                c.cache_write += cache_write  # type: ignore[union-attr]
            else:
                c.plain_in += tin  # type: ignore[union-attr]
            if reasoning:
                plain = tout - reasoning
                c.plain_out += plain if plain > 0 else 0  # type: ignore[union-attr]
                c.reasoning += reasoning  # type: ignore[union-attr]
            else:
                c.plain_out += tout  # type: ignore[union-attr]

    def _price(self, resp: bytes | None, req: bytes | None) -> Price | None:
        key = (resp, req)
        try:
            return self._price_cache[key]
        except KeyError:
            pass
        if len(self._price_cache) >= _CACHE:
            self._price_cache.clear()
        found = self._price_cache[key] = self._prices.price(self._text(resp), self._text(req))
        return found


def _nested_inference(ops: list[Op], by_id: dict[bytes, Op]) -> set[bytes]:
    """Span ids of inference spans that have an inference span below them (through GenAI spans)."""
    out: set[bytes] = set()
    for op in ops:
        if op[CLS] != INFERENCE:
            continue
        p = by_id.get(op[PARENT])
        hops = 0
        while p is not None and p[CLS] != AGENT and hops < MAX_DEPTH:
            if p[CLS] == INFERENCE:
                out.add(p[SID])
            p = by_id.get(p[PARENT])
            hops += 1
    return out


def _agent_above(op: Op, by_id: dict[bytes, Op], memo: dict[bytes, bytes | None],
                 run_agent: bytes | None) -> bytes | None:
    """The agent of the nearest named invoke_agent span above `op`, else the run's."""
    seen: list[bytes] = []
    p = by_id.get(op[PARENT])
    found = run_agent
    while p is not None and len(seen) < MAX_DEPTH:
        sid = p[SID]
        if sid in memo:
            found = memo[sid]
            break
        seen.append(sid)
        if p[CLS] == AGENT and p[OWN_AGENT] is not None:
            found = p[OWN_AGENT]
            break
        p = by_id.get(p[PARENT])
    for sid in seen:
        memo[sid] = found
    return found

