"""Types of the C extension exporters/loki/_lokiwire.c (see the comment at its top)."""
from collections.abc import Callable, Mapping
from typing import Any

class Renderer:
    def __init__(self, make: Callable[[bytes], tuple[str, bytes] | None], resources: Mapping[bytes, Any],
                 text_levels: Mapping[str, str], number_levels: tuple[str, ...], unknown: str,
                 now_ns: Callable[[], int], limit: int) -> None: ...
    def render(self, raw: bytes, stream_index: Callable[[Any, str], int],
               /) -> tuple[list[tuple[bytes, int]], int] | None: ...
    def cached(self) -> int: ...
