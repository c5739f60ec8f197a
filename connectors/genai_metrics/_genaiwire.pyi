"""Types of the C extension connectors/genai_metrics/_genaiwire.c (see the comment at its top)."""
from collections.abc import Callable
from typing import Any

class Reader:
    parsed: int
    def __init__(self, groups: tuple[tuple[bytes, ...], ...], counts: tuple[int, ...],
                 needles: tuple[bytes, ...]) -> None: ...
    def read(self, raw: bytes, /) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None: ...
    def read_ops(self, raw: bytes, classes: dict[bytes, tuple[int, bytes | None, bool]],
                 resource: Callable[[bytes], tuple[Any, tuple[Any, ...]]], other_error: str, exemplars: bool,
                 /) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None: ...
