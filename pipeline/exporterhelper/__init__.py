"""The exporter helper: what every exporter sits behind, as small wrappers around its `push`.

- `config`: `ExporterConfig`, the `timeout` / `sending_queue` / `retry_on_failure` blocks;
- `queue`, `queue_sender`: the bounded sending queue and its consumers;
- `obs`: sent / send_failed{reason} per request, push duration per attempt;
- `retry`, `retry_sender`: the backoff schedule and the retrying on the injected clock;
- `timeout`: the one place the per-attempt timeout is enforced;
- `helper`: `ExporterHelper`, which chains them in the Collector's order and owns the lifecycle.
"""
from __future__ import annotations

from pipeline.exporterhelper.config import ExporterConfig
from pipeline.exporterhelper.helper import ExporterHelper
from pipeline.exporterhelper.queue import QueueConfig
from pipeline.exporterhelper.retry import RetryConfig

__all__ = ["ExporterConfig", "ExporterHelper", "QueueConfig", "RetryConfig"]
