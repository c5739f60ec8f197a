"""resource: the attributes processor's actions on resource attributes (the Collector's resourceprocessor).

Config: `attributes`, the list of actions (insert, update, upsert, delete, hash, extract, convert;
see processors/attributes/actions.py). Every resource of every request is acted on; a request whose
bytes cannot be changed by any action is handed on without being decoded.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.component import Consumer, FuncProcessor, ProcessorFactory, Settings, Stability, processor_from_func
from pipeline.config.types import Issue
from pipeline.model import Payload, Signal
from processors.attributes.actions import ActionConfig, Actions, validate_actions
from processors.ottl import prefilter


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceConfig:
    attributes: tuple[ActionConfig, ...] = ()

    def validate(self) -> list[Issue]:
        return validate_actions(self.attributes, "attributes")


class ResourceProcessor:
    def __init__(self, cfg: ResourceConfig, signal: Signal) -> None:
        self.actions = Actions(cfg.attributes)
        self.may_touch = prefilter.Checker(self.actions.need)
        self.field = signal.resource_field

    def __call__(self, payload: Payload) -> Payload:
        raw = payload.raw_cached
        if raw is not None and not self.may_touch(raw):
            return payload
        changed = False
        for r in getattr(payload.message, self.field):
            changed |= self.actions.apply(r.resource.attributes, payload.headers)
        if changed:
            payload.mutable()
        return payload


def create(settings: Settings, cfg: ResourceConfig, next_consumer: Consumer) -> FuncProcessor:
    assert settings.signal is not None
    return processor_from_func(settings, ResourceProcessor(cfg, settings.signal), next_consumer)


FACTORY = ProcessorFactory(
    type="resource",
    config_type=ResourceConfig,
    signals={Signal.TRACES: Stability.BETA, Signal.METRICS: Stability.BETA, Signal.LOGS: Stability.BETA},
    create=create,
    description="Applies attribute actions to resource attributes (the Collector's resource processor).",
)

__all__ = ["FACTORY", "ResourceConfig", "ResourceProcessor"]
