"""Types of the C extension processors/privacy/_hsscan.c (see the comment at its top)."""

HS_FLAG_CASELESS: int

class Scanner:
    def __init__(self, expressions: list[bytes], flags: list[int], adj: tuple[int, ...], anchor_of: tuple[int, ...],
                 gate_from: int) -> None: ...
    def scan(self, data: bytes) -> tuple[list[int], list[int], list[int]]: ...
