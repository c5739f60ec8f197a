"""Test helpers bound to the shipped components (the library's own helpers are in `pipeline.testing`)."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from otelpipe import components
from pipeline import testing
from pipeline.service import Service


@contextlib.asynccontextmanager
async def running_service(yaml_text: str, env: Mapping[str, str] | None = None, *,
                          admin_address: str = "127.0.0.1:0") -> AsyncIterator[Service]:
    """Run the whole daemon, with every shipped component, from a YAML string."""
    async with testing.running_service(yaml_text, components.factories(), env,
                                       admin_address=admin_address) as svc:
        yield svc
