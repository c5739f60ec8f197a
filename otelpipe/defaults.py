"""Which configuration `otelpipe` runs: `--config` sources and `--set` overrides, or the embedded default.

The embedded default config ships inside the package as `otelpipe.shipped_config`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from pipeline.component import Factory, Kind
from pipeline.config.confmap import load_texts
from pipeline.config.loader import build
from pipeline.config.schema import Config
from pipeline.config.sources import apply_sets, load_sources

DEFAULT_CONFIG_NAME = "<embedded default config>"


def default_config_text() -> str:
    """The default config's YAML (from the installed package, or the source tree's config/)."""
    try:
        return resources.files("otelpipe.shipped_config").joinpath("default.yaml").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parent.parent / "config" / "default.yaml").read_text(encoding="utf-8")


def load_config(sources: Sequence[str], factories: Mapping[Kind, Mapping[str, Factory]],
                env: Mapping[str, str] | None = None, sets: Sequence[str] = ()) -> Config:
    """The `--config` sources merged in order (the embedded default when there are none), then `--set`."""
    env = os.environ if env is None else env
    if sources:
        raw, issues = load_sources(sources, env)
    else:
        raw, issues = load_texts([(DEFAULT_CONFIG_NAME, default_config_text())])
    apply_sets(raw, sets, issues)
    return build(raw, issues, factories, env)
