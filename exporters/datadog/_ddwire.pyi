"""Types of the C extension exporters/datadog/_ddwire.c (see the comment at its top)."""
from collections.abc import Callable
from typing import Any

class Renderer:
    tracked: int
    evicted: int
    def __init__(self, scope_of: Callable[[bytes, str, str], tuple[Any, bytes, bytes]],
                 heads_of: Callable[[str], tuple[bytes, ...]], tag_of: Callable[[bytes], str],
                 quantiles_of: Callable[..., list[bytes]],
                 *, to_delta: bool, initial: int, aggregations: bool, quantiles: bool, started_ns: int,
                 max_series: int) -> None: ...
    def render(self, raw: bytes, cuts: list[int], offsets: list[int], skipped: dict[str, int], now: float, now_s: int,
               /) -> bytes | None: ...
    def delta(self, key: bytes, start: int, ts: int, values: tuple[float, ...], now: float,
              /) -> tuple[float, ...] | int: ...
    def expire(self, deadline: float, /) -> None: ...
