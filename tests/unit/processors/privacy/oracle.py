"""The test oracle: secret_mask and uuid_normalize on a decoded request.

The processors edit a request's wire bytes (scanner, walker, splice); no decoded-message path runs
in them any more. This module is the reference implementation of the same rules on a decoded
message, written the plain way (every string of the request looked at, every rule applied to the
whole string with `re`), and the property, corpus and end-to-end tests compare every
walker/scanner combination, fused or not, to it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.model import Signal
from pipeline.pointmerge import MetricBytes, merge_same_series
from processors.privacy.masker import Masker
from processors.privacy.secret_keys import ALLOWED, NOT_SENSITIVE, SENSITIVE
from processors.privacy.secret_mask import SUMMARY_COUNT_KEY, SecretMaskConfig, make_masker
from processors.privacy.secret_rules import GATED
from processors.privacy.uuid_normalize import Normalizer, UUIDNormalizeConfig
from processors.privacy.walker import NAME_KEYS, VALUE_KEYS

StrFn = Callable[[str], str]
Collected = list[tuple[Any, str, str, object]]  # (holder, field, text, owner)


def data_point_attributes(msg: Any, exemplars: bool = False) -> Iterator[tuple[tuple[int, int, int], Any]]:
    """((resource, scope, metric) index, attribute list) of every data point (and exemplar, if asked)."""
    for ri, rm in enumerate(msg.resource_metrics):
        for si, sm in enumerate(rm.scope_metrics):
            for mi, m in enumerate(sm.metrics):
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                for dp in getattr(m, kind).data_points:
                    yield (ri, si, mi), dp.attributes
                    if exemplars and kind != "summary":
                        for ex in dp.exemplars:
                            yield (ri, si, mi), ex.filtered_attributes


def rewrite_any_value(v: AnyValue, fn: StrFn) -> int:
    """`fn` on every string leaf of `v`; the number changed."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        new = fn(v.string_value)
        if new != v.string_value:
            v.string_value = new
            return 1
        return 0
    if kind == "array_value":
        return sum(rewrite_any_value(item, fn) for item in v.array_value.values)
    if kind == "kvlist_value":
        return sum(rewrite_any_value(kv.value, fn) for kv in v.kvlist_value.values)
    return 0


def rewrite_attributes(attrs: Iterable[KeyValue], fn: StrFn, keys: frozenset[str] | None) -> int:
    """`fn` on the string leaves of the attributes whose key is in `keys` (all when None)."""
    return sum(rewrite_any_value(kv.value, fn) for kv in attrs if keys is None or kv.key in keys)


def replace_whole_value(v: AnyValue, mask: StrFn) -> int:
    """A value under a sensitive key: strings and bytes (as hex) become the mask, arrays and maps have
    every leaf masked; numbers and booleans carry no credential and stay."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        new = mask(v.string_value)
        if new != v.string_value:
            v.string_value = new
            return 1
        return 0
    if kind == "bytes_value":
        v.string_value = mask(v.bytes_value.hex())
        return 1
    if kind == "array_value":
        return sum(replace_whole_value(item, mask) for item in v.array_value.values)
    if kind == "kvlist_value":
        return sum(replace_whole_value(kv.value, mask) for kv in v.kvlist_value.values)
    return 0


class SecretMaskOracle:
    """secret_mask's rules on a decoded request; `masker.counts` counts as the processor does."""

    def __init__(self, cfg: SecretMaskConfig, signal: Signal) -> None:
        self.cfg = cfg
        self.signal = signal
        self.masker: Masker = make_masker(cfg)
        self.key_matching = cfg.key_matching and bool(cfg.blocked_keys)
        self.plain = frozenset({NOT_SENSITIVE} if self.key_matching else {NOT_SENSITIVE, SENSITIVE})
        self.nothing_enabled = not self.key_matching and not self.masker.enabled and not cfg.blocked_values

    def _attrs(self, attrs: Iterable[KeyValue], owner: object, out: Collected) -> int:
        n = 0
        for kv in attrs:
            c = self.masker.keys.classify(kv.key)
            if c in self.plain:
                n += self._any(kv.value, owner, out)
            elif c == SENSITIVE:
                n += replace_whole_value(kv.value, self.masker.mask_value)
        return n

    def _any(self, v: AnyValue, owner: object, out: Collected) -> int:
        kind = v.WhichOneof("value")
        if kind == "string_value":
            out.append((v, "string_value", v.string_value, owner))
        elif kind == "kvlist_value":
            values = v.kvlist_value.values
            if self.key_matching and self._names_whole(values):
                return self._named_map(values, owner, out)
            return self._attrs(values, owner, out)
        elif kind == "array_value":
            return sum(self._any(item, owner, out) for item in v.array_value.values)
        return 0

    def _names_whole(self, values: Iterable[KeyValue]) -> bool:
        """A map holding a name/value pair whose name names a credential (`{name: DB_PASSWORD, value: x}`)."""
        return any(kv.key in NAME_KEYS and kv.value.WhichOneof("value") == "string_value"
                   and self.masker.keys.classify(kv.value.string_value) == SENSITIVE for kv in values)

    def _named_map(self, values: Iterable[KeyValue], owner: object, out: Collected) -> int:
        n = 0
        for kv in values:
            if kv.key in VALUE_KEYS and self.masker.keys.classify(kv.key) != ALLOWED:
                n += replace_whole_value(kv.value, self.masker.mask_value)
            else:
                n += self._attrs((kv,), owner, out)
        return n

    def _owned(self, msg: Any, out: Collected) -> Iterator[tuple[object, int]]:
        """(owner, whole values masked) per item of the request, collecting its strings into `out`."""
        summary = self.cfg.summary_attributes
        if self.signal is Signal.TRACES:
            for rs in msg.resource_spans:
                yield None, self._attrs(rs.resource.attributes, None, out)
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        owner = sp if summary else None
                        out.append((sp, "name", sp.name, owner))
                        if sp.status.message:
                            out.append((sp.status, "message", sp.status.message, owner))
                        n = self._attrs(sp.attributes, owner, out)
                        n += sum(self._attrs(ev.attributes, owner, out) for ev in sp.events)
                        n += sum(self._attrs(link.attributes, owner, out) for link in sp.links)
                        yield owner, n
        elif self.signal is Signal.LOGS:
            for rl in msg.resource_logs:
                yield None, self._attrs(rl.resource.attributes, None, out)
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        owner = lr if summary else None
                        n = self._attrs(lr.attributes, owner, out)
                        if lr.HasField("body"):
                            n += self._any(lr.body, owner, out)
                        yield owner, n
        else:  # no summary attribute on data points: it would change the series
            for rm in msg.resource_metrics:
                yield None, self._attrs(rm.resource.attributes, None, out)
            for _, attrs in data_point_attributes(msg, exemplars=True):
                yield None, self._attrs(attrs, None, out)

    def rewrite(self, msg: Any, gated: frozenset[str] = GATED) -> int:
        """Mask `msg` in place (every gated detector on: the plain reference); the number of values masked."""
        if self.nothing_enabled:
            return 0
        out: Collected = []
        per_owner: dict[int, tuple[object, int]] = {}

        def count(owner: object, n: int) -> None:
            if owner is not None and n:
                per_owner[id(owner)] = (owner, per_owner.get(id(owner), (owner, 0))[1] + n)

        total = 0
        for owner, n in self._owned(msg, out):
            total += n
            count(owner, n)
        for holder, field_name, text, owner in out:
            new = self.masker.mask_text(text, gated)
            if new != text:
                setattr(holder, field_name, new)
                total += 1
                count(owner, 1)
        for owner, n in per_owner.values():
            _add_count(owner.attributes, n)  # type: ignore[attr-defined]
        return total


def _add_count(attrs: Any, n: int) -> None:
    for kv in attrs:
        if kv.key == SUMMARY_COUNT_KEY:
            kv.value.int_value = kv.value.int_value + n
            return
    attrs.add(key=SUMMARY_COUNT_KEY, value=AnyValue(int_value=n))


class UUIDNormalizeOracle:
    """uuid_normalize's rules on a decoded request: the whole-string normalizer (`Normalizer.__call__`,
    every builtin detector and the user patterns) on every selected string; `fn.counts` counts."""

    def __init__(self, cfg: UUIDNormalizeConfig, signal: Signal) -> None:
        self.cfg = cfg
        self.signal = signal
        self.fn = Normalizer(cfg)

    def rewrite(self, msg: Any) -> int:
        """Normalize `msg` in place (metrics: points made one series merged); the number of strings changed."""
        cfg, fn = self.cfg, self.fn
        n = 0
        if self.signal is Signal.TRACES:
            keys = frozenset(cfg.span_attributes)
            for rs in msg.resource_spans:
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        new = fn(sp.name) if cfg.span_names else sp.name
                        if new != sp.name:
                            sp.name = new
                            n += 1
                        n += rewrite_attributes(sp.attributes, fn, keys)
            return n
        if self.signal is Signal.LOGS:
            keys = frozenset(cfg.log_attributes)
            for rl in msg.resource_logs:
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        n += rewrite_attributes(lr.attributes, fn, keys)
            return n
        metric_keys = None if cfg.metric_attributes is None else frozenset(cfg.metric_attributes)
        before = MetricBytes(msg.SerializeToString())
        changed: dict[tuple[int, int, int], None] = {}
        for key, attrs in data_point_attributes(msg):
            k = rewrite_attributes(attrs, fn, metric_keys)
            if k:
                n += k
                changed[key] = None
        if changed:
            merge_same_series(lambda: cast(ExportMetricsServiceRequest, msg), list(changed), before)
        return n


def secret_reference(cfg: SecretMaskConfig, signal: Signal, raw: bytes) -> tuple[Any, dict[str, int]]:
    """The request `raw` as secret_mask should leave it (decoded), and the counts by detector."""
    oracle = SecretMaskOracle(cfg, signal)
    msg = signal.request_type.FromString(raw)
    oracle.rewrite(msg)
    return msg, oracle.masker.take_counts()


def uuid_reference(cfg: UUIDNormalizeConfig, signal: Signal, raw: bytes) -> tuple[Any, dict[str, int]]:
    """The request `raw` as uuid_normalize should leave it (decoded), and the counts by detector."""
    oracle = UUIDNormalizeOracle(cfg, signal)
    msg = signal.request_type.FromString(raw)
    oracle.rewrite(msg)
    return msg, oracle.fn.take_counts()
