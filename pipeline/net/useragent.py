"""The User-Agent every exporter sends (`otelpipe/<version>`), over HTTP and gRPC alike."""
from __future__ import annotations

import importlib.metadata


def _version() -> str:
    try:
        return importlib.metadata.version("otelpipe")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


USER_AGENT = f"otelpipe/{_version()}"
