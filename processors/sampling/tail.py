"""`tail_sampling`: keep whole traces that failed, were slow or are otherwise interesting.

Why stateful: whether a trace is interesting is only known once all of it has
arrived, so spans are held per trace id for `decision_wait` after the trace's
first span, then the policies (`processors/sampling/policies.py`) decide; a trace
is kept when any policy says so (policies run in order and stop at the first
that keeps it). Kept traces are forwarded whole; dropped ones are counted as
`processor_dropped_spans{reason="not_sampled"}`.

Memory is bounded by `num_traces`: when more traces are pending, the oldest
are decided early (on what has arrived so far) and counted. Pending spans are
held as their wire bytes (an envelope-only parse, no span decode), about the
size of the data on the wire; policies decode a trace's spans once, at
decision time, and kept spans are forwarded as bytes without re-encoding. Decisions are
remembered in two bounded caches (`decision_cache`), so spans that arrive
after their trace was decided follow that decision ("late spans"): forwarded
at once if it was kept, dropped if not. On shutdown every pending trace is
decided and flushed downstream.

Scale-out rule: tail sampling needs every span of a trace on one instance.
Behind several replicas, put trace-id-aware load balancing in front (as the
Collector's loadbalancing exporter does); stateless head sampling
(`probabilistic_sampler`) needs no such care.

Timing: a background task wakes when the oldest pending trace is due and
calls `tick(now)`; `now` comes from `settings.clock` (injectable), and tests
call `tick(now)` / `force_decide()` directly instead of waiting.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from pipeline.component import (
    Consumer,
    Host,
    ProcessorFactory,
    Settings,
    Stability,
)
from pipeline.config.types import Duration, Issue
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.wire import TRACES_ENVELOPE, encode_varint, ld_tag, length_delimited
from processors.sampling.policies import (
    Origin,
    Policy,
    PolicyConfig,
    ResourceRef,
    TraceView,
    build_policy,
    frame_span,
)

# Self-metric names (the Collector's: sampling_traces_on_memory, count_traces_sampled{policy,sampled},
# late spans, sampling_trace_dropped_too_early).
PENDING_METRIC = "processor_tail_sampling_traces_pending"
DECISIONS_METRIC = "processor_tail_sampling_policy_decisions"
LATE_METRIC = "processor_tail_sampling_late_spans"
EARLY_METRIC = "processor_tail_sampling_traces_decided_early"
TRACES_METRIC = "processor_tail_sampling_traces"

MAX_SPANS_PER_OUTPUT = 8192


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionCacheConfig:
    """How many decided trace ids are remembered, so late spans follow their trace (0 disables)."""

    sampled_cache_size: int = 100_000
    non_sampled_cache_size: int = 100_000

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        for key in ("sampled_cache_size", "non_sampled_cache_size"):
            if getattr(self, key) < 0:
                out.append(Issue(key, "must not be negative (0 disables the cache)"))
        return out


def _default_policies() -> tuple[PolicyConfig, ...]:
    return (PolicyConfig(name="always_sample", type="always_sample"),)


@dataclass(frozen=True, slots=True, kw_only=True)
class TailSamplingConfig:
    """The Collector's tail_sampling settings. Without `policies`, every trace is kept.

    `expected_new_traces_per_sec` is accepted for Collector compatibility (it pre-sizes Go maps;
    Python dicts size themselves) and otherwise unused.
    """

    decision_wait: Duration = Duration(10.0)
    num_traces: int = 50_000
    expected_new_traces_per_sec: int = 0
    decision_cache: DecisionCacheConfig = field(default_factory=DecisionCacheConfig)
    policies: tuple[PolicyConfig, ...] = field(default_factory=_default_policies)

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        if self.decision_wait <= 0:
            out.append(Issue("decision_wait", "must be greater than 0, e.g. '10s'"))
        if self.num_traces < 1:
            out.append(Issue("num_traces", "must be at least 1 (it bounds the traces held in memory)"))
        if self.expected_new_traces_per_sec < 0:
            out.append(Issue("expected_new_traces_per_sec", "must not be negative"))
        if not self.policies:
            out.append(Issue("policies", "needs at least one policy, e.g. {name: keep-all, type: always_sample}"))
        seen: dict[str, int] = {}
        for i, p in enumerate(self.policies):
            if p.name in seen:
                out.append(Issue(f"policies[{i}].name",
                                 f"duplicate policy name '{p.name}' (also policies[{seen[p.name]}])"))
            elif p.name:
                seen[p.name] = i
        return out


# Tags of the fields `_Output` writes (the request's, ResourceSpans' and ScopeSpans').
_RESOURCE_SPANS_TAG = encode_varint(ld_tag(ExportTraceServiceRequest.DESCRIPTOR, "resource_spans"))
_RESOURCE_TAG = encode_varint(ld_tag(ResourceSpans.DESCRIPTOR, "resource"))
_SCOPE_SPANS_TAG = encode_varint(ld_tag(ResourceSpans.DESCRIPTOR, "scope_spans"))
_RS_SCHEMA_URL_TAG = encode_varint(ld_tag(ResourceSpans.DESCRIPTOR, "schema_url"))
_SCOPE_TAG = encode_varint(ld_tag(ScopeSpans.DESCRIPTOR, "scope"))
_SS_SCHEMA_URL_TAG = encode_varint(ld_tag(ScopeSpans.DESCRIPTOR, "schema_url"))
# A span's trace id is field 1, 16 bytes: every encoder writes it first, so a span starts with these.
_TRACE_ID_PREFIX = encode_varint(ld_tag(Span.DESCRIPTOR, "trace_id")) + encode_varint(16)


def _trace_id(span: bytes) -> bytes:
    """The trace id of a serialized span: bytes 2-18 when it leads (as every encoder writes it), else decode."""
    if span[:2] == _TRACE_ID_PREFIX:
        return span[2:18]
    return Span.FromString(span).trace_id


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field, left out when empty (as protobuf leaves out proto3 defaults)."""
    return length_delimited(tag, data) if data else b""


class _Trace:
    __slots__ = ("arrival", "origins", "spans")

    def __init__(self, arrival: float) -> None:
        self.arrival = arrival
        self.origins: list[Origin] = []
        self.spans: list[bytes] = []


class _Output:
    """Builds export requests (wire bytes) from kept spans, regrouped under their resource and scope."""

    def __init__(self) -> None:
        self._payloads: list[Payload] = []
        self._new()

    def _new(self) -> None:
        self._n = 0
        # id(ResourceRef) -> (ref, {id(Origin): (origin, [framed spans])}); the dicts keep the objects alive.
        self._groups: dict[int, tuple[ResourceRef, dict[int, tuple[Origin, list[bytes]]]]] = {}

    def add(self, origins: list[Origin], spans: list[bytes]) -> None:
        groups = self._groups
        for origin, span in zip(origins, spans):
            res = groups.get(id(origin.resource))
            if res is None:
                res = groups[id(origin.resource)] = (origin.resource, {})
            scope = res[1].get(id(origin))
            if scope is None:
                scope = res[1][id(origin)] = (origin, [])
            scope[1].append(frame_span(span))
            self._n += 1
            if self._n >= MAX_SPANS_PER_OUTPUT:
                self.finish()
                groups = self._groups

    def finish(self) -> None:
        if not self._n:
            return
        parts = []
        for ref, scopes in self._groups.values():
            body = [_field(_RESOURCE_TAG, ref.data)]
            for origin, framed in scopes.values():
                scope_body = b"".join([_field(_SCOPE_TAG, origin.scope), *framed,
                                       _field(_SS_SCHEMA_URL_TAG, origin.scope_schema_url.encode())])
                body.append(length_delimited(_SCOPE_SPANS_TAG, scope_body))
            body.append(_field(_RS_SCHEMA_URL_TAG, ref.schema_url.encode()))
            parts.append(length_delimited(_RESOURCE_SPANS_TAG, b"".join(body)))
        self._payloads.append(Payload(Signal.TRACES, raw=b"".join(parts), items=self._n))
        self._new()

    def payloads(self) -> list[Payload]:
        self.finish()
        return self._payloads


class TailSamplingProcessor:
    """Buffers spans per trace id and forwards the traces the policies keep."""

    mutates_data = False  # the incoming request is only read (as bytes); kept spans go out in new requests

    def __init__(self, settings: Settings, cfg: TailSamplingConfig, next_consumer: Consumer) -> None:
        self.settings = settings
        self.cfg = cfg
        self._next = next_consumer
        self._clock = settings.clock
        self._wait = float(cfg.decision_wait)
        self._policies: list[Policy] = [build_policy(p) for p in cfg.policies]
        self._pending: OrderedDict[bytes, _Trace] = OrderedDict()
        self._sampled: OrderedDict[bytes, None] = OrderedDict()
        self._not_sampled: OrderedDict[bytes, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopped = False
        self._log = RateLimitedLog(settings.logger)
        self._obs = settings.telemetry.processor(settings)
        tel = settings.telemetry
        labels = (str(settings.id), settings.pipeline)
        tel.gauge(PENDING_METRIC).labels(*labels).set_function(lambda: len(self._pending))
        decisions = tel.counter(DECISIONS_METRIC)
        self._decision_counters = {
            p.name: (decisions.labels(*labels, p.name, "sampled"), decisions.labels(*labels, p.name, "not_sampled"))
            for p in self._policies}
        late = tel.counter(LATE_METRIC)
        self._late_kept = late.labels(*labels, "sampled")
        self._late_dropped = late.labels(*labels, "not_sampled")
        self._early = tel.counter(EARLY_METRIC).labels(*labels)
        traces = tel.counter(TRACES_METRIC)
        self._traces_kept = traces.labels(*labels, "sampled")
        self._traces_dropped = traces.labels(*labels, "not_sampled")

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        if self._task is None and not self._stopped:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name=f"tail_sampling {self.settings.id}")

    async def shutdown(self) -> None:
        """Stop the timer, decide every pending trace and flush it downstream. Safe twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopped = True
        await self.force_decide()

    async def _run(self) -> None:
        assert self._wake is not None
        slack = min(0.1, self._wait / 10)
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            oldest = next(iter(self._pending.values()))
            delay = oldest.arrival + self._wait - self._clock()
            # Sleep until the oldest trace is due (plus a little, to decide traces in batches).
            await asyncio.sleep(min(max(delay, 0.0) + slack, self._wait))
            try:
                await self.tick(self._clock())
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the timer die; the failure is counted in _forward
                self.settings.logger.exception("tail sampling tick failed")

    # -- data path ----------------------------------------------------------------------------

    async def consume(self, payload: Payload) -> None:
        now = self._clock()
        pending = self._pending
        sampled, not_sampled = self._sampled, self._not_sampled
        out: _Output | None = None
        late_kept = late_dropped = 0
        was_empty = not pending
        envelope = TRACES_ENVELOPE.FromString(payload.serialize())  # cached bytes when the receiver kept them
        for rs in envelope.resource_spans:
            ref = ResourceRef(rs.resource, rs.schema_url)
            for ss in rs.scope_spans:
                origin = Origin(ref, ss.scope, ss.schema_url)
                last_tid: bytes | None = None
                last: _Trace | None = None
                for span in ss.spans:
                    tid = _trace_id(span)
                    if tid == last_tid and last is not None:
                        last.origins.append(origin)
                        last.spans.append(span)
                        continue
                    tr = pending.get(tid)
                    if tr is None:
                        if tid in sampled:
                            sampled.move_to_end(tid)
                            if out is None:
                                out = _Output()
                            out.add([origin], [span])
                            late_kept += 1
                            last_tid, last = None, None
                            continue
                        if tid in not_sampled:
                            not_sampled.move_to_end(tid)
                            late_dropped += 1
                            last_tid, last = None, None
                            continue
                        tr = pending[tid] = _Trace(now)
                    tr.origins.append(origin)
                    tr.spans.append(span)
                    last_tid, last = tid, tr
        if late_kept:
            self._late_kept.inc(late_kept)
        if late_dropped:
            self._late_dropped.inc(late_dropped)
            self._obs.dropped(late_dropped, "not_sampled")
        excess = len(pending) - self.cfg.num_traces
        if excess > 0 or self._stopped:
            if out is None:
                out = _Output()
            count = len(pending) if self._stopped else excess
            if not self._stopped:
                self._early.inc(count)
                self._log.warning("num_traces exceeded: deciding the oldest traces before decision_wait",
                                  key="early", extra={"num_traces": self.cfg.num_traces})
            self._decide_oldest(count, now, out)
        if was_empty and pending and self._wake is not None:
            self._wake.set()
        if out is not None:
            for p in out.payloads():
                await self._next.consume(p)  # errors reach the sender, which may retry

    async def tick(self, now: float | None = None) -> int:
        """Decide every trace whose decision_wait has passed at `now`; returns how many were decided."""
        now = self._clock() if now is None else now
        cutoff = now - self._wait
        pending = self._pending
        n = 0
        for tr in pending.values():
            if tr.arrival > cutoff:
                break
            n += 1
        if n:
            out = _Output()
            self._decide_oldest(n, now, out)
            await self._forward(out)
        return n

    async def force_decide(self) -> int:
        """Decide every pending trace now (shutdown, tests) and flush the kept ones downstream."""
        n = len(self._pending)
        if n:
            out = _Output()
            self._decide_oldest(n, self._clock(), out)
            await self._forward(out)
        return n

    @property
    def pending_traces(self) -> int:
        return len(self._pending)

    # -- decisions ----------------------------------------------------------------------------

    def _decide_oldest(self, n: int, now: float, out: _Output) -> None:
        pending = self._pending
        policies = self._policies
        counts = {p.name: [0, 0] for p in policies}
        kept_traces = dropped_traces = dropped_spans = 0
        for _ in range(n):
            tid, tr = pending.popitem(last=False)
            view = TraceView(tid, tr.origins, tr.spans)
            keep = False
            for p in policies:
                if p.evaluate(view, now):
                    counts[p.name][0] += 1
                    keep = True
                    break
                counts[p.name][1] += 1
            if keep:
                kept_traces += 1
                out.add(tr.origins, tr.spans)
                _remember(self._sampled, tid, self.cfg.decision_cache.sampled_cache_size)
            else:
                dropped_traces += 1
                dropped_spans += len(tr.spans)
                _remember(self._not_sampled, tid, self.cfg.decision_cache.non_sampled_cache_size)
        for name, (yes, no) in counts.items():
            c_yes, c_no = self._decision_counters[name]
            if yes:
                c_yes.inc(yes)
            if no:
                c_no.inc(no)
        if kept_traces:
            self._traces_kept.inc(kept_traces)
        if dropped_traces:
            self._traces_dropped.inc(dropped_traces)
        self._obs.dropped(dropped_spans, "not_sampled")

    async def _forward(self, out: _Output) -> None:
        """Hand kept traces on from the timer or shutdown; a failure there has no sender to tell, so count it."""
        for p in out.payloads():
            try:
                await self._next.consume(p)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._obs.dropped(p.items, "downstream_failed")
                self._log.error("could not forward sampled traces downstream; spans dropped", key="forward",
                                extra={"error": repr(e), "spans": p.items})


def _remember(cache: OrderedDict[bytes, None], tid: bytes, size: int) -> None:
    if size <= 0:
        return
    cache[tid] = None
    if len(cache) > size:
        cache.popitem(last=False)


def create(settings: Settings, cfg: TailSamplingConfig, next_consumer: Consumer) -> TailSamplingProcessor:
    return TailSamplingProcessor(settings, cfg, next_consumer)


FACTORY = ProcessorFactory(
    type="tail_sampling",
    config_type=TailSamplingConfig,
    signals={Signal.TRACES: Stability.BETA},
    create=create,
    description="Holds spans per trace for decision_wait and keeps whole traces that match any policy.",
)
