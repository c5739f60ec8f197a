"""`probabilistic_sampler`: stateless, consistent head sampling of spans and log records.

Why stateless and consistent: every otelpipe replica (and every SDK that
follows OTEP 235) must make the same decision for a trace, so traces are
never cut in half and no coordination is needed. The decision is a pure
function of the trace id (or an explicit `rv`) and the configuration; see
`processors/sampling/common.py` for the arithmetic.

Modes (as in the Collector's probabilisticsamplerprocessor):

- `proportional` (default): keeps `sampling_percentage` of what arrives. An
  incoming threshold from an upstream sampler is multiplied in, so data that
  was already sampled at 50% and passes a 10% sampler ends at 5%.
- `equalizing`: brings everything down to `sampling_percentage` overall; data
  already sampled at that rate or lower passes untouched.
- `hash_seed`: the Collector's original, non-OTel mode: FNV-1a of `hash_seed`
  and the trace id (or, for logs, an attribute), 14 bits of precision. Chosen
  automatically when `hash_seed` is set and `mode` is not.

A downstream sampler can only sample further: thresholds only ever rise. Kept
spans carry the result in `tracestate` as `ot=th:<hex>` (log records in the
`sampling.threshold` attribute). Errors (unparseable tracestate, no
randomness, an inconsistent incoming threshold) drop the item when
`fail_closed` is true (default), else keep it. The OpenTracing
`sampling.priority` span attribute forces 0% (value 0) or 100% (value > 0).

Fast path: a decision is computed once per distinct (trace id, tracestate)
in a request; spans never have their attributes looked at unless the
request's bytes contain `sampling.priority`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.component import (
    Consumer,
    FuncProcessor,
    ProcessorFactory,
    Settings,
    Stability,
    processor_from_func,
)
from pipeline.config.types import Issue
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from processors.sampling import common as sc

Mode = Literal["proportional", "equalizing", "hash_seed"]

PRIORITY_KEY = "sampling.priority"
LOG_THRESHOLD_KEY = "sampling.threshold"
LOG_RANDOMNESS_KEY = "sampling.randomness"
ERRORS_METRIC = "processor_probabilistic_sampler_errors"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbabilisticSamplerConfig:
    """The Collector's probabilisticsamplerprocessor settings (see the module docstring).

    Differences from the Collector: `sampling_percentage` defaults to 100 (keep
    everything) rather than 0; `sampling_precision` defaults to 14 so the
    threshold is exactly `round((1 - p) * 2^56)` (set 4 for the Collector's
    shorter `th` values); `logs_missing_randomness` decides what happens to log
    records that have neither a trace id nor the `from_attribute` attribute.
    """

    sampling_percentage: float = 100.0
    mode: Mode | None = None
    hash_seed: int = 0
    sampling_precision: int = sc.NUM_HEX_DIGITS
    fail_closed: bool = True
    attribute_source: Literal["traceID", "record"] = "traceID"
    from_attribute: str = ""
    logs_missing_randomness: Literal["keep", "drop"] = "keep"

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        pct = self.sampling_percentage
        if math.isnan(pct) or math.isinf(pct):
            out.append(Issue("sampling_percentage", f"must be a finite number, got {pct}"))
        elif pct < 0:
            out.append(Issue("sampling_percentage", f"must be between 0 and 100, got {pct:g}"))
        elif 0 < pct and sc.probability_from_percentage(pct) < sc.MIN_PROBABILITY:
            out.append(Issue("sampling_percentage", f"{pct:g}% is below the smallest expressible probability (2^-56)"))
        if not 0 <= self.hash_seed <= 0xFFFFFFFF:
            out.append(Issue("hash_seed", "must be a 32-bit unsigned integer (0 to 4294967295)"))
        if not 1 <= self.sampling_precision <= sc.NUM_HEX_DIGITS:
            out.append(Issue("sampling_precision", "must be between 1 and 14 (hex digits of the threshold)"))
        if self.attribute_source == "record" and not self.from_attribute:
            out.append(Issue("from_attribute", "is required when attribute_source is 'record'"))
        if self.mode in ("proportional", "equalizing") and self.hash_seed:
            out.append(Issue("hash_seed", f"is only used by mode 'hash_seed', not '{self.mode}'"))
        return out

    def effective_mode(self, signal: Signal) -> Mode:
        """The Collector's rule when `mode` is unset: `hash_seed` if a seed is set (or logs sample by attribute)."""
        if self.mode is not None:
            return self.mode
        if self.hash_seed or (signal is Signal.LOGS and self.attribute_source == "record"):
            return "hash_seed"
        return "proportional"


# A decision: keep?, the tracestate (or sampling.threshold value) to write on a kept item, an error reason.
Decision = tuple[bool, str | None, str | None]


class Sampler:
    """The decision function for one configuration; pure, so two instances always agree."""

    def __init__(self, cfg: ProbabilisticSamplerConfig, signal: Signal) -> None:
        self.mode: Mode = cfg.effective_mode(signal)
        self.fail_closed = cfg.fail_closed
        self.precision = cfg.sampling_precision
        self.seed = cfg.hash_seed
        self._basis = sc.seed_basis(cfg.hash_seed)
        self.ratio: Fraction = sc.probability_from_percentage(cfg.sampling_percentage)
        self.never = self.ratio == 0
        if self.mode == "hash_seed":
            self.threshold = sc.hash_seed_threshold(cfg.sampling_percentage)
            self.never = self.never or self.threshold >= sc.MAX_THRESHOLD
        else:
            self.threshold = sc.threshold_for_probability(self.ratio, self.precision)
        self._plain_tracestate = "ot=th:" + sc.encode_threshold(self.threshold) if not self.never else None
        self._scaled: dict[int, int] = {}

    # -- thresholds --------------------------------------------------------------------------

    def threshold_after(self, incoming: int | None) -> int:
        """This sampler's threshold for an item that arrives with threshold `incoming` (None: unsampled)."""
        if incoming is None or self.mode == "hash_seed":
            return self.threshold
        if self.mode == "equalizing":
            return max(self.threshold, incoming)
        t = self._scaled.get(incoming)
        if t is None:
            t = sc.threshold_for_probability(sc.threshold_probability(incoming) * self.ratio, self.precision)
            t = max(t, incoming)  # rounding must never raise the probability
            if len(self._scaled) > 4096:
                self._scaled.clear()
            self._scaled[incoming] = t
        return t

    def hash_randomness(self, data: bytes) -> int:
        return sc.hash_seed_randomness(data, self.seed, basis=self._basis)

    # -- spans ---------------------------------------------------------------------------------

    def decide_span(self, trace_id: bytes, tracestate: str) -> Decision:
        """Keep or drop a span, and the tracestate a kept span must carry."""
        if self.never:
            return False, None, None
        if not tracestate and self.mode != "hash_seed":
            if not any(trace_id):
                return self._failed(sc.TraceState([], sc.OTelState()), "missing_randomness")
            if sc.trace_id_randomness(trace_id) >= self.threshold:
                return True, self._plain_tracestate, None
            return False, None, None
        try:
            ts = sc.TraceState.parse(tracestate)
        except ValueError:
            return self._failed(None, "invalid_tracestate", keep_tracestate=tracestate)
        r: int | None  # annotation only (no runtime cost): set in both branches below
        if self.mode == "hash_seed":
            if ts.ot.randomness is not None:
                return self._failed(ts, "randomness_in_use")
            if ts.ot.threshold is not None:
                return self._failed(ts, "threshold_in_use")
            if not any(trace_id):
                return self._failed(ts, "missing_randomness")
            r = self.hash_randomness(trace_id)
            if r >= self.threshold:
                return True, ts.with_threshold(self.threshold, randomness=r), None
            return False, None, None
        r = sc.span_randomness(trace_id, ts.ot)
        if r is None:
            return self._failed(ts, "missing_randomness")
        incoming = ts.ot.threshold
        if incoming is not None and r < incoming:
            ts.ot.threshold = None  # an inconsistent arriving threshold is cleared, as the spec says
            return self._failed(ts, "inconsistent_threshold")
        t = self.threshold_after(incoming)
        if r >= t:
            return True, ts.with_threshold(t), None
        return False, None, None

    def _failed(self, ts: sc.TraceState | None, reason: str, keep_tracestate: str | None = None) -> Decision:
        if self.fail_closed:
            return False, None, reason
        if ts is None:
            return True, keep_tracestate, reason
        # Fail open: kept at "100%" unless an (consistent) incoming threshold says otherwise.
        t = ts.ot.threshold or 0
        return True, ts.with_threshold(t), reason

    # -- log records -----------------------------------------------------------------------------

    def decide_log(self, randomness: int | None, incoming: int | None) -> Decision:
        """Keep or drop a log record; the second element is the `sampling.threshold` value to write."""
        if self.never:
            return False, None, None
        if randomness is None:
            return self.failed_log(incoming, "missing_randomness")
        if incoming is not None and randomness < incoming:
            return self.failed_log(None, "inconsistent_threshold")
        t = self.threshold_after(incoming)
        if randomness >= t:
            return True, sc.encode_threshold(t), None
        return False, None, None

    def failed_log(self, incoming: int | None, reason: str) -> Decision:
        if self.fail_closed:
            return False, None, reason
        return True, sc.encode_threshold(incoming or 0), reason


def _priority(span_attributes: object) -> int:
    """OpenTracing sampling.priority: -1 absent/negative/unparseable, 0 drop, 1 keep."""
    for kv in span_attributes:  # type: ignore[attr-defined]
        if kv.key != PRIORITY_KEY:
            continue
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "int_value":
            num = float(v.int_value)
        elif kind == "double_value":
            num = v.double_value
        elif kind == "string_value":
            try:
                num = float(v.string_value)
            except ValueError:
                return -1
        else:
            return -1
        if math.isnan(num) or num < 0:
            return -1
        return 0 if num == 0 else 1
    return -1


def _attr_bytes(value: AnyValue) -> bytes | None:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value.encode()
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "bool_value":
        return b"true" if value.bool_value else b"false"
    if kind == "int_value":
        return str(value.int_value).encode()
    if kind == "double_value":
        return repr(value.double_value).encode()
    return value.SerializeToString()


class ProbabilisticSampler:
    """`process(payload)` for one signal; wrapped by `processor_from_func`."""

    def __init__(self, settings: Settings, cfg: ProbabilisticSamplerConfig) -> None:
        assert settings.signal in (Signal.TRACES, Signal.LOGS)
        self.signal = settings.signal
        self.cfg = cfg
        self.sampler = Sampler(cfg, settings.signal)
        self._log = RateLimitedLog(settings.logger)
        self._errors = settings.telemetry.counter(ERRORS_METRIC)
        self._labels = (str(settings.id), settings.pipeline)
        self.process: Callable[[Payload], Payload | None] = (
            self.process_traces if settings.signal is Signal.TRACES else self.process_logs)

    def _count_errors(self, errors: dict[str, int]) -> None:
        for reason, n in errors.items():
            self._errors.labels(*self._labels, reason).inc(n)
        self._log.warning("some items had unusable sampling information", key="errors",
                          extra={"reasons": dict(errors), "fail_closed": self.cfg.fail_closed})

    @staticmethod
    def _contains(payload: Payload, needle: bytes) -> bool:
        raw = payload.raw_cached
        if raw is None:
            raw = payload.serialize()
        return needle in raw

    # -- traces --------------------------------------------------------------------------------

    def process_traces(self, payload: Payload) -> Payload | None:
        sampler = self.sampler
        check_priority = self._contains(payload, PRIORITY_KEY.encode())
        if sampler.never and not check_priority:
            return None
        msg = payload.mutable()
        decide = sampler.decide_span
        cache: dict[object, Decision] = {}
        errors: dict[str, int] = {}
        dropped = 0
        for rs in msg.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                spans = ss.spans
                drop: list[int] = []
                for i, span in enumerate(spans):
                    tid = span.trace_id
                    ts = span.trace_state
                    key: object = (tid, ts) if ts else tid
                    d = cache.get(key)
                    if d is None:
                        d = cache[key] = decide(tid, ts)
                    keep, new_ts, err = d
                    if err is not None:
                        errors[err] = errors.get(err, 0) + 1
                    if check_priority:
                        prio = _priority(span.attributes)
                        if prio == 0:
                            keep = False
                        elif prio == 1:
                            keep, new_ts = True, self._forced_tracestate(ts)
                    if keep:
                        if new_ts is not None and new_ts != ts:
                            span.trace_state = new_ts
                    else:
                        drop.append(i)
                if drop:
                    dropped += len(drop)
                    if len(drop) == len(spans):
                        del spans[:]
                    else:
                        for i in reversed(drop):
                            del spans[i]
        if errors:
            self._count_errors(errors)
        if not dropped:
            return payload
        _prune(msg.resource_spans, "scope_spans", "spans")  # type: ignore[union-attr]
        payload.mark_changed()
        return payload if payload.items else None

    @staticmethod
    def _forced_tracestate(ts: str) -> str | None:
        """sampling.priority > 0 keeps the span at 100%, never lowering an incoming threshold."""
        try:
            st = sc.TraceState.parse(ts)
        except ValueError:
            return None
        return st.with_threshold(st.ot.threshold or 0)

    # -- logs ------------------------------------------------------------------------------------

    def process_logs(self, payload: Payload) -> Payload | None:
        sampler = self.sampler
        if sampler.never:
            return None
        cfg = self.cfg
        check_sampling_attrs = self._contains(payload, b"sampling.")
        msg = payload.mutable()
        use_trace_id = cfg.attribute_source == "traceID"
        from_attr = cfg.from_attribute
        hash_mode = sampler.mode == "hash_seed"
        cache: dict[bytes, tuple[Decision, int | None]] = {}
        errors: dict[str, int] = {}
        dropped = 0
        for rl in msg.resource_logs:  # type: ignore[union-attr]
            for sl in rl.scope_logs:
                records = sl.log_records
                drop: list[int] = []
                for i, rec in enumerate(records):
                    tid = rec.trace_id
                    has_tid = use_trace_id and any(tid)
                    th_attr = rv_attr = None
                    if check_sampling_attrs:
                        th_attr, rv_attr = _sampling_attrs(rec.attributes)
                    if has_tid and th_attr is None and rv_attr is None:
                        # Fast path: the decision depends on the trace id alone.
                        cached = cache.get(tid)
                        if cached is None:
                            r = sampler.hash_randomness(tid) if hash_mode else sc.trace_id_randomness(tid)
                            cached = cache[tid] = (sampler.decide_log(r, None), r if hash_mode else None)
                        d, set_rv = cached
                    else:
                        d, set_rv = self._decide_log_slow(rec, has_tid, tid, th_attr, rv_attr, from_attr, hash_mode)
                    keep, new_th, err = d
                    if err is not None:
                        errors[err] = errors.get(err, 0) + 1
                    if keep:
                        if new_th is not None:
                            _set_attr(rec.attributes, LOG_THRESHOLD_KEY, new_th, existing=th_attr is not None)
                        if set_rv is not None:
                            _set_attr(rec.attributes, LOG_RANDOMNESS_KEY, sc.encode_randomness(set_rv),
                                      existing=rv_attr is not None)
                    else:
                        drop.append(i)
                if drop:
                    dropped += len(drop)
                    if len(drop) == len(records):
                        del records[:]
                    else:
                        for i in reversed(drop):
                            del records[i]
        if errors:
            self._count_errors(errors)
        if not dropped:
            return payload
        _prune(msg.resource_logs, "scope_logs", "log_records")  # type: ignore[union-attr]
        payload.mark_changed()
        return payload if payload.items else None

    def _decide_log_slow(self, rec: object, has_tid: bool, tid: bytes, th_attr: str | None, rv_attr: str | None,
                         from_attr: str, hash_mode: bool) -> tuple[Decision, int | None]:
        """A record with sampling attributes, or without a usable trace id."""
        sampler = self.sampler
        incoming = None
        explicit = None
        try:
            if th_attr is not None:
                incoming = sc.decode_threshold(th_attr)
            if rv_attr is not None:
                explicit = sc.decode_randomness(rv_attr)
        except ValueError:
            return sampler.failed_log(None, "invalid_sampling_attribute"), None
        if hash_mode and (incoming is not None or explicit is not None):
            return sampler.failed_log(None, "randomness_in_use" if explicit is not None else "threshold_in_use"), None
        set_rv = None
        if explicit is not None:
            r: int | None = explicit
        elif has_tid:
            r = sampler.hash_randomness(tid) if hash_mode else sc.trace_id_randomness(tid)
            set_rv = r if hash_mode else None
        else:
            value = _find_attr(rec.attributes, from_attr) if from_attr else None  # type: ignore[attr-defined]
            data = _attr_bytes(value) if value is not None else None
            if data:
                r = set_rv = sampler.hash_randomness(data)
            else:
                if self.cfg.logs_missing_randomness == "keep":
                    return (True, None, None), None
                return (False, None, "missing_randomness"), None
        return sampler.decide_log(r, incoming), set_rv


def _sampling_attrs(attributes: object) -> tuple[str | None, str | None]:
    th = rv = None
    for kv in attributes:  # type: ignore[attr-defined]
        k = kv.key
        if k == LOG_THRESHOLD_KEY:
            th = kv.value.string_value
        elif k == LOG_RANDOMNESS_KEY:
            rv = kv.value.string_value
    return th, rv


def _find_attr(attributes: object, key: str) -> AnyValue | None:
    for kv in attributes:  # type: ignore[attr-defined]
        if kv.key == key:
            return kv.value  # type: ignore[no-any-return]
    return None


def _set_attr(attributes: object, key: str, value: str, *, existing: bool) -> None:
    if existing:
        for kv in attributes:  # type: ignore[attr-defined]
            if kv.key == key:
                kv.value.string_value = value
                return
    attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))  # type: ignore[attr-defined]


def _prune(resources: object, scope_field: str, item_field: str) -> None:
    """Remove scopes and resources left empty after dropping items."""
    for ri in range(len(resources) - 1, -1, -1):  # type: ignore[arg-type]
        scopes = getattr(resources[ri], scope_field)  # type: ignore[index]
        for si in range(len(scopes) - 1, -1, -1):
            if not getattr(scopes[si], item_field):
                del scopes[si]
        if not scopes:
            del resources[ri]  # type: ignore[attr-defined]


def create(settings: Settings, cfg: ProbabilisticSamplerConfig, next_consumer: Consumer) -> FuncProcessor:
    sampler = ProbabilisticSampler(settings, cfg)
    return processor_from_func(settings, sampler.process, next_consumer, mutates_data=True, drop_reason="sampled")


FACTORY = ProcessorFactory(
    type="probabilistic_sampler",
    config_type=ProbabilisticSamplerConfig,
    signals={Signal.TRACES: Stability.BETA, Signal.LOGS: Stability.ALPHA},
    create=create,
    description="Consistent probability head sampling (OTEP 235) of spans and log records; stateless.",
)
