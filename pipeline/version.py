"""otelpipe's version, as installed (`otelpipe --version`, the User-Agent, `otelpipe_build_info`, `/status`)."""
from __future__ import annotations

import importlib.metadata


def _version() -> str:
    try:
        return importlib.metadata.version("otelpipe")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


VERSION = _version()
