"""The `genai_metrics` connector: agent signals from GenAI spans (traces → metrics).

An exporter of traces pipelines and a receiver of metrics pipelines. Every traces request is
read on the wire (`runs.RunAccounting`: only GenAI spans are decoded), accounted into delta
series (`aggregate.Aggregator`), and every `metrics_flush_interval` the series of the interval
and the budget gauges go downstream as one OTLP metrics request. A flush that downstream
refuses with a retryable error (a full queue, a memory limit) is merged back and goes with the
next flush, so nothing is lost while the refusal lasts (deltas add up); a permanent refusal, or
one at shutdown, is counted in `otelpipe_connector_genai_metrics_dropped_metric_points_total`.
At shutdown every trace still held is accounted and flushed.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import DecodeError

from connectors.genai_metrics.aggregate import M_CALLS, OVERFLOW, Acc, Calls, Key, Series, derived, encode, unique
from connectors.genai_metrics.budgets import Budgets
from connectors.genai_metrics.config import GenAIMetricsConfig
from connectors.genai_metrics.pricing import PriceTable
from connectors.genai_metrics.runs import M_BUDGET, RunAccounting
from connectors.genai_metrics.spans import Texts
from pipeline.component import ConnectorFactory, Consumer, Host, Settings, Stability
from pipeline.errors import RetryableError
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.redact import redact_text
from pipeline.serieslimit import SeriesLimiter

RUNS_METRIC = "connector_genai_metrics_runs"
PENDING_METRIC = "connector_genai_metrics_traces_pending"
LATE_METRIC = "connector_genai_metrics_late_spans"
UNPRICED_METRIC = "connector_genai_metrics_unpriced_calls"
OVERFLOW_METRIC = "connector_genai_metrics_overflow_series"
DROPPED_METRIC = "connector_genai_metrics_dropped_metric_points"
SKIPPED_METRIC = "connector_genai_metrics_skipped_spans"


class GenAIMetricsConnector:
    """See the module docstring. `wall` is the wall clock (timestamps, budget periods); time spans and
    timeouts run on `settings.clock`."""

    mutates_data = False

    def __init__(self, settings: Settings, cfg: GenAIMetricsConfig, next_consumer: Consumer, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cfg = cfg
        self._next = next_consumer
        self._clock = settings.clock
        self._wall = wall
        self._texts = Texts()
        self._dims = tuple(d.name for d in cfg.dimensions)
        self.series = Series(SeriesLimiter(cfg.aggregation_cardinality_limit, float(cfg.series_expiration)),
                             self._clock)
        self.budgets = Budgets(cfg.budgets)
        self.runs = RunAccounting(cfg, self.series, PriceTable(cfg.prices), self._texts, self._clock)
        self._unpriced_calls = 0
        self._window_start = self._wall_ns()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._closed = False
        self._log = RateLimitedLog(settings.logger)
        tel = settings.telemetry
        cid = str(settings.id)
        self._cid = cid
        self._runs = tel.counter(RUNS_METRIC)
        self._pending = tel.gauge(PENDING_METRIC).labels(cid)
        self._late = tel.counter(LATE_METRIC).labels(cid)
        self._unpriced = tel.counter(UNPRICED_METRIC).labels(cid)
        self._overflow = tel.counter(OVERFLOW_METRIC)
        self._dropped = tel.counter(DROPPED_METRIC)
        self._skipped = tel.counter(SKIPPED_METRIC)
        self._recorded: dict[str, int] = {}

    def _wall_ns(self) -> int:
        return int(self._wall() * 1e9)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._loop(), name=f"{self.settings.id} flush")

    async def _loop(self) -> None:
        interval = float(self.cfg.metrics_flush_interval)
        while not await self._clock.wait(interval, self._stop):
            await self.force_flush()

    async def shutdown(self) -> None:
        """Account every trace held and flush. Safe without start and safe twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.runs.close_all("shutdown")
        await self._flush(final=True)

    async def force_flush(self) -> None:
        """Account traces silent for trace_timeout, then send what the interval recorded."""
        await self._flush(final=False)

    # -- data path ----------------------------------------------------------------------------------

    async def consume(self, payload: Payload) -> None:
        raw = payload.raw_cached
        if raw is None:
            raw = payload.serialize()
        try:
            self.runs.ingest(raw)
        except DecodeError:
            self._skipped.labels(self._cid, "malformed").inc(payload.items)
        self._record_stats()

    async def _flush(self, *, final: bool) -> None:
        async with self._flush_lock:
            if not final:
                self.runs.close_idle()
            points = self.series.take()
            now = self._wall()
            self._spend(points[M_CALLS], now)
            gauges = [(M_BUDGET, ((), agent, period), utilization)  # no resource: a budget spans services
                      for agent, period, _, utilization in self.budgets.utilization(now)]
            time_ns = int(now * 1e9)
            req = encode(derived(points), self._dims, gauges, self._texts, self._window_start, time_ns,
                         self.cfg.exemplars.max_per_data_point)
            self._record_stats()
            if req is None:
                self._window_start = time_ns
                return
            payload = Payload(Signal.METRICS, message=req)
            try:
                await self._next.consume(payload)
            except RetryableError as e:
                if final:
                    self._drop(payload.items, "shutdown", e)
                    return
                self.series.put_back(points)  # deltas add up: they go with the next flush
                self._log.warning("downstream refused the agent metrics; they go with the next flush",
                                  key="refused", extra={"error": redact_text(str(e))})
                return
            except Exception as e:  # a permanent refusal: counted, never raised into the loop
                self._drop(payload.items, "export_failed", e)
            self._window_start = time_ns

    def _spend(self, calls: dict[Key, Acc], now: float) -> None:
        """Add the cost of the interval's model calls to the budgets (once, even if they are sent again)."""
        budgets = self.budgets
        for key, c in unique(calls):
            assert isinstance(c, Calls)
            self._unpriced_calls += c.unpriced
            c.unpriced = 0
            if budgets and c.price is not None and key[6] is not None and key[1] is not OVERFLOW:
                cost = c.cost()
                budgets.add(self._texts(key[6]) or "", cost - c.budgeted, now)
                c.budgeted = cost

    def _drop(self, points: int, reason: str, e: BaseException) -> None:
        self._dropped.labels(self._cid, reason).inc(points)
        self._log.error("agent metrics dropped", key=reason, extra={"points": points, "reason": reason,
                                                                   "error": redact_text(str(e))})

    def _record_stats(self) -> None:
        """Move the accounting's own counts into the self-metrics."""
        st = self.runs.stats
        done = self._recorded
        for reason, n in st.runs.items():
            k = f"runs:{reason}"
            if n > done.get(k, 0):
                self._runs.labels(self._cid, reason).inc(n - done.get(k, 0))
                done[k] = n
        for k, n, counter in (("late", st.late_spans, self._late), ("unpriced", self._unpriced_calls, self._unpriced)):
            if n > done.get(k, 0):
                counter.inc(n - done.get(k, 0))
                done[k] = n
        if st.malformed > done.get("malformed", 0):
            self._skipped.labels(self._cid, "malformed").inc(st.malformed - done.get("malformed", 0))
            done["malformed"] = st.malformed
        if self.series.folded:
            for metric, n in self.series.folded.items():
                self._overflow.labels(self._cid, metric).inc(n)
            self.series.folded.clear()
        self._pending.set(len(self.runs.pending))

    # -- status and reload ---------------------------------------------------------------------------

    def status(self) -> Mapping[str, Any]:
        now = self._wall()
        return {"traces_pending": len(self.runs.pending),
                "budgets": [{"agent": a, "period": p, "spent_usd": round(spent, 6), "utilization": round(u, 6)}
                            for a, p, spent, u in self.budgets.utilization(now)]}

    def handover_state(self) -> object:
        return {"genai_metrics.budgets": self.budgets.state()}

    def takeover_state(self, state: object) -> None:
        if isinstance(state, dict) and isinstance(spent := state.get("genai_metrics.budgets"), dict):
            self.budgets.restore(spent)


def create(settings: Settings, cfg: GenAIMetricsConfig, next_consumer: Consumer) -> GenAIMetricsConnector:
    return GenAIMetricsConnector(settings, cfg, next_consumer)


FACTORY = ConnectorFactory(
    type="genai_metrics",
    config_type=GenAIMetricsConfig,
    connects={(Signal.TRACES, Signal.METRICS): Stability.ALPHA},
    create=create,
    description="Agent signals from GenAI spans: tokens, cost, budgets, model and tool latency, runs, steps, MCP.",
)
