"""The embedded default config, shipped inside the package as `otelpipe.shipped_config`."""
from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from pipeline.component import Factory, Kind
from pipeline.config.loader import load, load_text
from pipeline.config.schema import Config

DEFAULT_CONFIG_NAME = "<embedded default config>"


def default_config_text() -> str:
    """The default config's YAML (from the installed package, or the source tree's config/)."""
    try:
        return resources.files("otelpipe.shipped_config").joinpath("default.yaml").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parent.parent / "config" / "default.yaml").read_text(encoding="utf-8")


def load_config(paths: list[str], factories: Mapping[Kind, Mapping[str, Factory]],
                env: Mapping[str, str] | None = None) -> Config:
    """The given files merged in order, or the embedded default config when there are none."""
    if paths:
        return load(paths, factories, env)
    return load_text(default_config_text(), factories, env, name=DEFAULT_CONFIG_NAME)
