"""The blocks every exporter config shares: `timeout`, `sending_queue`, `retry_on_failure` (the Collector's keys)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.types import Duration, Issue
from pipeline.exporterhelper.queue import QueueConfig
from pipeline.exporterhelper.retry import RetryConfig

DEFAULT_TIMEOUT = Duration(5.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExporterConfig:
    """The blocks every exporter config shares; exporter configs inherit from this."""

    timeout: Duration = DEFAULT_TIMEOUT
    sending_queue: QueueConfig = field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> list[Issue]:
        return [Issue("timeout", "must be greater than 0")] if self.timeout <= 0 else []
