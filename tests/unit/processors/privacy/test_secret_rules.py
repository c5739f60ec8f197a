"""The detector table's pattern pieces mean what they say (processors/privacy/secret_rules.py)."""
from __future__ import annotations

import re
import sys

from processors.privacy import secret_rules


def test_ws_is_exactly_what_backslash_s_matches() -> None:
    """`WS` spells out `\\s` so that sre can use a bitmap: over every code point it must match the same."""
    spelled, category = re.compile(f"[{secret_rules.WS}]"), re.compile(r"\s")
    differ = [hex(c) for c in range(sys.maxunicode + 1)
              if (spelled.match(chr(c)) is None) != (category.match(chr(c)) is None)]
    assert differ == []


def test_pair_value_characters_are_unchanged_by_spelling_out_the_blanks() -> None:
    spelled = re.compile(secret_rules._PAIR_CHAR)
    written = re.compile(r"[^\s&,;\"'<>()\[\]{}\x00\\]")  # the class as it was first written
    differ = [hex(c) for c in range(sys.maxunicode + 1)
              if (spelled.match(chr(c)) is None) != (written.match(chr(c)) is None)]
    assert differ == []
