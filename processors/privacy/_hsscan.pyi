"""Types of the C extension processors/privacy/_hsscan.c (see the comment at its top)."""

HS_FLAG_CASELESS: int

Shape = tuple[int, tuple[tuple[bytes, int], ...]]

class Scanner:
    def __init__(self, expressions: list[bytes], ids: list[int], flags: list[int], adj: tuple[int, ...],
                 anchor_of: tuple[int, ...], gate_from: int, shapes: tuple[Shape, ...]) -> None: ...
    def scan(self, data: bytes) -> tuple[list[int], list[int], list[int]]: ...
