"""The User-Agent every exporter sends (`otelpipe/<version>`), over HTTP and gRPC alike."""
from __future__ import annotations

from pipeline.version import VERSION

USER_AGENT = f"otelpipe/{VERSION}"
