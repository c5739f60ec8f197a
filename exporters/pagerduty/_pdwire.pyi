"""Types of the C extension exporters/pagerduty/_pdwire.c (see the comment at its top)."""
from array import array
from collections.abc import Callable
from typing import Any

class Ingestor:
    def __init__(self, names: tuple[bytes, ...], classes: tuple[type, type, type], kinds: tuple[Any, Any, Any],
                 timelines: dict[tuple[int, int, float], int], next_timeline: Callable[[int, int, float], int],
                 append: int, replace: int, /) -> None: ...
    def ingest(self, raw: bytes, now: float, tables: tuple[Any, ...], resource: Callable[[bytes], Any],
               slow: Callable[..., None], result: Any, /) -> tuple[int, int, int, int] | None: ...

def column_sums(arrays: list[array[float]], start: int, width: int) -> list[float] | None: ...
