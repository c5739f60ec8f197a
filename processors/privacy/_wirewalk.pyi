"""Types of the C extension processors/privacy/_wirewalk.c (see the comment at its top)."""
from collections.abc import Callable, Sequence
from typing import TypeAlias

PF_UUID: int
PF_NUM: int
PF_HEX: int
PF_ULID: int

Step: TypeAlias = tuple[int, int, int, object, object]

class Walker:
    def __init__(self, nodes: list[list[Step]], fallback: type[BaseException]) -> None: ...
    def rewrite(self, raw: bytes, offsets: Sequence[int] | None, text_fn: Callable[..., str],
                whole_fn: Callable[[str], str] | None = None, prefilter: int = 0) -> bytes | None: ...

class Collector:
    def __init__(self, adj: tuple[int, ...], anchor_of: tuple[int, ...], gate_from: int) -> None: ...
    def __call__(self, id: int, start: int, end: int, flags: int, context: object) -> None: ...
    def take(self) -> tuple[list[int], list[int], list[int]]: ...

def prefilter(data: bytes, flags: int) -> int: ...
