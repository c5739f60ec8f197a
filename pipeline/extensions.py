"""Extensions: components outside the pipelines (health endpoints, queue storage, authenticators).

As in the Collector, an extension is configured under `extensions:` and runs
only when `service.extensions` lists it. The Service starts them in that
order before any pipeline component and stops them in the reverse order
after the last one, so a receiver that authenticates with an extension, or an
exporter whose queue lives in a storage extension, never outlives it.
Components find them through `Host.extensions()`. On reload, an extension
whose settings did not change is taken over running (`previous`), as pipeline
components are.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.component import Component, ComponentID, ExtensionFactory, Factory, Host, Kind, Settings, factory_of
from pipeline.config.schema import Config
from pipeline.errors import StartError
from pipeline.logutil import component_logger
from pipeline.telemetry import Telemetry

log = logging.getLogger("otelpipe.service")


class Extensions:
    """The enabled extensions of one config, in `service.extensions` order."""

    def __init__(self, config: Config, factories: Mapping[Kind, Mapping[str, Factory]], telemetry: Telemetry,
                 previous: Extensions | None = None, reusable: Callable[[ComponentID], bool] | None = None) -> None:
        self.config = config
        self._items: dict[ComponentID, Component] = {}
        self._states: dict[ComponentID, str] = {}
        for cid in config.enabled_extensions():
            if previous is not None and reusable is not None and previous._states.get(cid) == "running" \
                    and reusable(cid):
                self._items[cid] = previous._items[cid]
                self._states[cid] = "running"
                continue
            factory = factory_of(factories, ExtensionFactory, cid.type)
            settings = Settings(id=cid, kind=Kind.EXTENSION, telemetry=telemetry,
                                logger=component_logger(Kind.EXTENSION.value, str(cid)))
            self._items[cid] = factory.create(settings, config.extensions[cid])
            self._states[cid] = "created"

    def by_id(self) -> Mapping[ComponentID, Component]:
        return dict(self._items)

    async def start(self, host: Host) -> None:
        for cid, ext in self._items.items():
            if self._states[cid] == "running":
                continue
            try:
                await ext.start(host)
            except Exception as e:
                raise StartError(f"failed to start extension {cid}: {e}") from e
            self._states[cid] = "running"

    async def shutdown(self, keep: set[int] | None = None, only: set[ComponentID] | None = None) -> None:
        """Stop in reverse start order, except the extensions in `keep` (identities a newer set took over);
        with `only`, just those ids."""
        for cid, ext in reversed(self._items.items()):
            if self._states[cid] == "stopped" or (keep is not None and id(ext) in keep) \
                    or (only is not None and cid not in only):
                continue
            try:
                await ext.shutdown()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("error while shutting down", extra={"component": f"extension {cid}"})
            self._states[cid] = "stopped"

    def component_set(self) -> set[int]:
        return {id(ext) for ext in self._items.values()}

    def state(self, cid: ComponentID) -> str:
        return self._states.get(cid, "absent")

    def still_running(self) -> list[str]:
        return [f"extension {cid}" for cid, st in reversed(self._states.items()) if st != "stopped"]

    def describe(self) -> list[dict[str, Any]]:
        return [{"kind": Kind.EXTENSION.value, "id": str(cid), "state": self._states[cid]} for cid in self._items]
