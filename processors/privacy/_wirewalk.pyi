"""Types of the C extension processors/privacy/_wirewalk.c (see the comment at its top)."""
from collections.abc import Sequence

PF_UUID: int
PF_NUM: int
PF_HEX: int
PF_ULID: int
MODE_MASK: int
MODE_TEXT: int
INFO_PAIR: int
INFO_FULL: int

#: (tag, kind, sub-node, owner, leaves: per stage None or (rule, nested)); a node is (reach, steps)
Step = tuple[int, int, int, bool, tuple[object, ...]]
Node = tuple[int, list[Step]]
Shape = tuple[int, tuple[tuple[bytes, int], ...]]

class Walker:
    def __init__(self, nodes: list[Node], nstages: int, fallback: type[BaseException]) -> None: ...
    def rewrite(self, raw: bytes, stages: tuple[tuple[object, ...], ...], offsets: Sequence[int] | None = None,
                ids: Sequence[int] | None = None) -> bytes | None: ...

class Collector:
    def __init__(self, adj: tuple[int, ...], anchor_of: tuple[int, ...], gate_from: int,
                 shapes: tuple[Shape, ...]) -> None: ...
    def __call__(self, id: int, start: int, end: int, flags: int, context: object) -> None: ...
    def take(self, data: bytes) -> tuple[list[int], list[int], list[int]]: ...

def prefilter(data: bytes, flags: int) -> int: ...
def pair_match(data: bytes, p: int) -> tuple[int, int, int, int]: ...
