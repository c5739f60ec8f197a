"""A config block's `validate()` may return warnings (`Issue(..., warning=True)`): reported with their key path,
never making the config invalid, and never stopping the checks of the blocks around them."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.types import Issue, decode_dataclass
from pipeline.errors import ConfigIssue


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    name: str = ""

    def validate(self) -> list[Issue]:
        return [Issue("name", "looks odd", warning=True)] if self.name == "odd" else []


@dataclass(frozen=True, slots=True, kw_only=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    size: int = 1

    def validate(self) -> list[Issue]:
        return [Issue("size", "must be positive")] if self.size <= 0 else []


def test_a_warning_keeps_its_flag_and_path() -> None:
    issues: list[ConfigIssue] = []
    decode_dataclass(Outer, {"inner": {"name": "odd"}}, "x", issues)
    assert issues == [ConfigIssue("x.inner.name", "looks odd", warning=True)]


def test_a_nested_warning_does_not_skip_the_outer_blocks_checks() -> None:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(Outer, {"inner": {"name": "odd"}, "size": 0}, "x", issues)
    assert issues == [ConfigIssue("x.inner.name", "looks odd", warning=True),
                      ConfigIssue("x.size", "must be positive")]
    assert cfg == Outer(inner=Inner(name="odd"), size=0)


def test_an_error_still_skips_them() -> None:
    issues: list[ConfigIssue] = []
    decode_dataclass(Outer, {"inner": {"nam": "odd"}, "size": 0}, "x", issues)
    assert [i.path for i in issues] == ["x.inner.nam"]
