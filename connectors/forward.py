"""The `forward` connector: hands a pipeline's data to other pipelines of the same signal.

The Collector's forwardconnector. Listed among the exporters of one pipeline
and the receivers of others, it joins them: one pipeline can receive and
pre-process, several can then each do their own processing and exporting
(the graph copies the data for every branch that changes it, so no branch
sees another's changes). It neither changes nor holds anything.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.component import (
    ConnectorFactory,
    Consumer,
    Host,
    Settings,
    Stability,
    acknowledges,
)
from pipeline.model import Payload, Signal


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardConfig:
    """`connectors.forward` takes no settings."""


class ForwardConnector:
    """Passes every payload on, as is."""

    mutates_data = False

    def __init__(self, settings: Settings, next_consumer: Consumer) -> None:
        self.settings = settings
        self._next = next_consumer

    @property
    def acknowledges(self) -> bool:
        """Hands data straight on: answers when downstream does (end-to-end acknowledgement)."""
        return acknowledges(self._next)

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def consume(self, payload: Payload) -> None:
        await self._next.consume(payload)


def create(settings: Settings, cfg: ForwardConfig, next_consumer: Consumer) -> ForwardConnector:
    return ForwardConnector(settings, next_consumer)


FACTORY = ConnectorFactory(
    type="forward",
    config_type=ForwardConfig,
    connects={(s, s): Stability.BETA for s in Signal},
    create=create,
    description="Joins pipelines of the same signal: an exporter of one pipeline, a receiver of others.",
)
