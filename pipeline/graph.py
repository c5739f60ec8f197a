"""Config → a running DAG of receivers, processors and exporters.

As in the Collector's service graph: exporters are built first (one per
exporter id and signal, shared by the pipelines of that signal), then each
pipeline's processors from last to first so every node has its `next`, then
receivers (one per receiver id, handed one consumer per signal that fans out to
every pipeline listing it). Start runs exporters → processors → receivers;
shutdown runs the reverse, so processors can flush into exporters that are
still running and exporters drain last.

Unlike the Collector, a reload does not rebuild everything: `build(previous=)`
reuses every running component whose settings did not change (and whose
extensions did not), so its sockets, queues, aggregates, series and buffers
live on. A component hands its output to a `Relay` (processors: their
`ObservedConsumer`), so a reused component is re-pointed at the new graph's
downstream in one synchronous step (`switch()`), with no await in between.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.component import (
    CarriesState,
    ComponentID,
    ConnectorFactory,
    Consumer,
    ExporterFactory,
    Factory,
    Fuses,
    HasEndpoints,
    HasStatus,
    Host,
    Kind,
    ProcessorFactory,
    ReceiverFactory,
    Settings,
    acknowledges,
    factory_of,
)
from pipeline.config.schema import Config, PipelineID
from pipeline.errors import PermanentError, StartError
from pipeline.exporterhelper import ExporterHelper
from pipeline.logutil import component_logger
from pipeline.model import Payload, Signal
from pipeline.telemetry import Telemetry

log = logging.getLogger("otelpipe.service")


class FanOut:
    """Hands one payload to several consumers without letting one branch see another's changes.

    Non-mutating consumers share the payload; mutating ones get their own copy,
    except that when every consumer mutates, the last one may take the original.
    """

    def __init__(self, consumers: list[Consumer]) -> None:
        self.consumers = consumers
        self.mutates_data = any(c.mutates_data for c in consumers)
        self._share_original = any(not c.mutates_data for c in consumers)

    @property
    def acknowledges(self) -> bool:
        return any(acknowledges(c) for c in self.consumers)

    async def consume(self, payload: Payload) -> None:
        consumers = self.consumers
        if len(consumers) == 1:
            await consumers[0].consume(payload)
            return
        last_mutating = max((i for i, c in enumerate(consumers) if c.mutates_data), default=-1)
        parts = []
        for i, c in enumerate(consumers):
            if c.mutates_data and (self._share_original or i != last_mutating):
                parts.append(c.consume(payload.copy()))
            else:
                parts.append(c.consume(payload))
        results = await asyncio.gather(*parts, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # A retryable failure anywhere makes the sender retry; permanent only if all failed permanently.
            retryable = [e for e in errors if not isinstance(e, PermanentError)]
            raise (retryable or errors)[0]


class Relay:
    """A component's output edge, re-pointable when a reload reuses the component.

    `retarget()` is synchronous: every payload handed on after it goes to the
    new consumer, every one before it to the old.
    """

    __slots__ = ("_next", "mutates_data")

    def __init__(self, next_consumer: Consumer) -> None:
        self._next = next_consumer
        self.mutates_data = next_consumer.mutates_data

    def retarget(self, next_consumer: Consumer) -> None:
        self._next = next_consumer
        self.mutates_data = next_consumer.mutates_data

    @property
    def acknowledges(self) -> bool:
        return acknowledges(self._next)

    async def consume(self, payload: Payload) -> None:
        await self._next.consume(payload)


class ObservedConsumer(Relay):
    """Counts the items that cross one edge of the graph (the Collector's obsconsumer).

    The graph puts one in front of every processor (`incoming`) and one in front
    of what each processor hands on to (`outgoing`), so the standard
    `otelpipe_processor_{incoming,outgoing}_*` counters move for every
    processor without any processor recording them itself. The outgoing one is
    the processor's relay for reloads.
    """

    __slots__ = ("_count",)

    def __init__(self, next_consumer: Consumer, count: Callable[[int], None]) -> None:
        super().__init__(next_consumer)
        self._count = count

    async def consume(self, payload: Payload) -> None:
        self._count(payload.items)
        await self._next.consume(payload)


class PipelineEntry:
    """The head of one pipeline (the Collector's capabilities node): mutates if any processor does."""

    def __init__(self, pipeline: PipelineID, first: Consumer, mutates: bool) -> None:
        self.pipeline = pipeline
        self._first = first
        self.mutates_data = mutates

    @property
    def acknowledges(self) -> bool:
        return acknowledges(self._first)

    async def consume(self, payload: Payload) -> None:
        await self._first.consume(payload)


@dataclass
class Node:
    """One running component in the graph.

    `outputs` are the relays it hands data to (one per signal for receivers);
    `reused` says the component was taken over, running, from the previous graph.
    """

    kind: Kind
    id: ComponentID
    component: Any
    pipeline: str = ""
    signal: Signal | None = None
    state: str = "created"
    to_signal: Signal | None = None
    outputs: dict[Signal | None, Relay] = field(default_factory=dict)
    reused: bool = False

    @property
    def key(self) -> NodeKey:
        """What identifies the component across configs: kind, id, pipeline and signals."""
        return (self.kind, self.id, self.signal, self.to_signal, self.pipeline)

    @property
    def label(self) -> str:
        if self.pipeline:
            where = f" in pipeline {self.pipeline}"
        elif self.signal and self.to_signal:
            where = f" ({self.signal.value} -> {self.to_signal.value})"
        else:
            where = f" ({self.signal.value})" if self.signal else ""
        return f"{self.kind.value} {self.id}{where}"


NodeKey = tuple[Kind, ComponentID, Signal | None, Signal | None, str]


@dataclass
class Graph:
    """The running DAG. `middle` holds processors and connectors in start order (downstream first)."""

    config: Config
    factories: Mapping[Kind, Mapping[str, Factory]]
    telemetry: Telemetry
    exporters: list[Node] = field(default_factory=list)
    middle: list[Node] = field(default_factory=list)
    receivers: list[Node] = field(default_factory=list)
    _previous: dict[NodeKey, Node] = field(default_factory=dict, repr=False)
    _reusable: Callable[[Kind, ComponentID], bool] = field(default=lambda _k, _c: False, repr=False)
    _retargets: list[tuple[Relay, Consumer]] = field(default_factory=list, repr=False)

    @property
    def processors(self) -> list[Node]:
        return [n for n in self.middle if n.kind is Kind.PROCESSOR]

    @property
    def connectors(self) -> list[Node]:
        return [n for n in self.middle if n.kind is Kind.CONNECTOR]

    def build(self, previous: Graph | None = None,
              reusable: Callable[[Kind, ComponentID], bool] | None = None) -> None:
        """Create every component; with `previous`, take over its running ones that `reusable` allows.

        `reusable(kind, id)` says whether the component's settings are unchanged;
        a component is taken over only if it also sits at the same place (same
        pipeline, same signals; a receiver feeding the same signals) and runs.
        """
        if previous is not None and reusable is not None:
            self._previous = {n.key: n for n in previous.start_order() if n.state == "running"}
            self._reusable = reusable
        cfg = self.config
        exporters = self._build_exporters()
        entries: dict[PipelineID, PipelineEntry] = {}
        connectors: dict[tuple[ComponentID, Signal, Signal], Consumer] = {}
        # Downstream pipelines first, so every connector is created with its `next` already built.
        for pid in reversed(cfg.pipeline_order or tuple(cfg.pipelines)):
            p = cfg.pipelines[pid]
            outs: list[Consumer] = [
                self._connector_consumer(eid, pid.signal, entries, connectors) if eid in cfg.connectors
                else exporters[(eid, pid.signal)]
                for eid in p.exporters]
            nxt: Consumer = outs[0] if len(outs) == 1 else FanOut(outs)
            mutates = False
            after: object = None  # the processor built last: the next one in the pipeline
            for prid in reversed(p.processors):
                settings = self._settings(Kind.PROCESSOR, prid, pid.signal, str(pid))
                obs = self.telemetry.processor(settings)
                node = self._take_over(Node(Kind.PROCESSOR, prid, None, pipeline=str(pid), signal=pid.signal), nxt)
                if node is None:
                    factory = factory_of(self.factories, ProcessorFactory, prid.type)
                    out = ObservedConsumer(nxt, obs.outgoing)
                    node = Node(Kind.PROCESSOR, prid, factory.create(settings, cfg.processors[prid], out),
                                pipeline=str(pid), signal=pid.signal, outputs={None: out})
                proc = node.component
                if after is not None and isinstance(proc, Fuses):
                    proc.fuse(after)
                after = proc
                mutates = mutates or proc.mutates_data
                self.middle.append(node)
                nxt = ObservedConsumer(proc, obs.incoming)
            entries[pid] = PipelineEntry(pid, nxt, mutates)

        for rid, rcfg in cfg.receivers.items():
            consumers: dict[Signal, Consumer] = {}
            for sig in Signal:
                heads: list[Consumer] = [entries[pid] for pid, p in cfg.pipelines.items()
                                         if pid.signal is sig and rid in p.receivers]
                if heads:
                    consumers[sig] = heads[0] if len(heads) == 1 else FanOut(heads)
            if not consumers:
                continue  # defined but unused (a warning at validation)
            self.receivers.append(self._receiver(rid, rcfg, consumers))

    def _receiver(self, rid: ComponentID, rcfg: Any, consumers: dict[Signal, Consumer]) -> Node:
        """The receiver `rid`: the running one if reusable and feeding the same signals, else a new one."""
        old = self._previous.get((Kind.RECEIVER, rid, None, None, ""))
        if old is not None and set(old.outputs) == set(consumers) and self._reusable(Kind.RECEIVER, rid):
            for sig, consumer in consumers.items():
                self._retargets.append((old.outputs[sig], consumer))
            return Node(Kind.RECEIVER, rid, old.component, state="running", outputs=old.outputs, reused=True)
        relays = {sig: Relay(c) for sig, c in consumers.items()}
        rfactory = factory_of(self.factories, ReceiverFactory, rid.type)
        settings = self._settings(Kind.RECEIVER, rid, None)
        component = rfactory.create(settings, rcfg, dict(relays))
        return Node(Kind.RECEIVER, rid, component, outputs=dict(relays))  # type: ignore[arg-type]

    def _take_over(self, node: Node, nxt: Consumer | None) -> Node | None:
        """The running component at `node`'s place in the previous graph, re-pointed at `nxt` on `switch()`."""
        old = self._previous.get(node.key)
        # A processor that fuses with its neighbour is never reused: which pair fuses (and which of the two
        # then hands requests on untouched) is decided when both are built, so both must be new together.
        if old is None or isinstance(old.component, Fuses) or not self._reusable(node.kind, node.id):
            return None
        if nxt is not None:
            self._retargets.append((old.outputs[None], nxt))
        node.component, node.state, node.outputs, node.reused = old.component, "running", old.outputs, True
        return node

    def switch(self) -> None:
        """Point every reused component at this graph's downstream (synchronous: no payload sees half of it)."""
        for relay, consumer in self._retargets:
            relay.retarget(consumer)
        self._retargets.clear()

    def component_set(self) -> set[int]:
        """Identities of the components in this graph (to tell which of a previous graph's ones leave)."""
        return {id(n.component) for n in self.start_order()}

    def _build_exporters(self) -> dict[tuple[ComponentID, Signal], ExporterHelper]:
        """One exporter per (id, signal), shared by every pipeline of that signal that lists it."""
        cfg = self.config
        exporters: dict[tuple[ComponentID, Signal], ExporterHelper] = {}
        for pid, p in cfg.pipelines.items():
            for eid in p.exporters:
                key = (eid, pid.signal)
                if key in exporters or eid in cfg.connectors:
                    continue
                node = self._take_over(Node(Kind.EXPORTER, eid, None, signal=pid.signal), None)
                if node is None:
                    factory = factory_of(self.factories, ExporterFactory, eid.type)
                    settings = self._settings(Kind.EXPORTER, eid, pid.signal)
                    ecfg = cfg.exporters[eid]
                    node = Node(Kind.EXPORTER, eid, ExporterHelper(settings, factory.create(settings, ecfg), ecfg),
                                signal=pid.signal)
                exporters[key] = node.component
                self.exporters.append(node)
        return exporters

    def _connector_consumer(self, cid: ComponentID, source: Signal, entries: Mapping[PipelineID, PipelineEntry],
                            built: dict[tuple[ComponentID, Signal, Signal], Consumer]) -> Consumer:
        """What a pipeline of `source` hands to connector `cid`: one instance per signal it emits.

        As in the Collector, there is one connector instance per (id, source
        signal, target signal), shared by every source pipeline of that signal;
        its `next` fans out to every target pipeline of that signal that lists
        the connector among its receivers.
        """
        cfg = self.config
        factory = factory_of(self.factories, ConnectorFactory, cid.type)
        instances: list[Consumer] = []
        for target in Signal:
            if not factory.connects_pair(source, target):
                continue
            heads: list[Consumer] = [entries[pid] for pid, p in cfg.pipelines.items()
                                     if pid.signal is target and cid in p.receivers]
            if not heads:
                continue
            key = (cid, source, target)
            if key not in built:
                nxt: Consumer = heads[0] if len(heads) == 1 else FanOut(heads)
                node = self._take_over(Node(Kind.CONNECTOR, cid, None, signal=source, to_signal=target), nxt)
                if node is None:
                    settings = self._settings(Kind.CONNECTOR, cid, source, to_signal=target)
                    out = Relay(nxt)
                    node = Node(Kind.CONNECTOR, cid, factory.create(settings, cfg.connectors[cid], out),
                                signal=source, to_signal=target, outputs={None: out})
                built[key] = node.component
                self.middle.append(node)
            instances.append(built[key])
        return instances[0] if len(instances) == 1 else FanOut(instances)

    def _settings(self, kind: Kind, cid: ComponentID, signal: Signal | None, pipeline: str = "",
                  to_signal: Signal | None = None) -> Settings:
        logger = component_logger(kind.value, str(cid), pipeline, signal.value if signal else "")
        return Settings(id=cid, kind=kind, telemetry=self.telemetry, logger=logger, signal=signal, pipeline=pipeline,
                        to_signal=to_signal)

    def start_order(self) -> list[Node]:
        """Exporters, then processors and connectors nearest the exporters first, receivers last."""
        return [*self.exporters, *self.middle, *self.receivers]

    async def start(self, host: Host, nodes: list[Node] | None = None) -> None:
        """Start `nodes` (default: all) in start order; reused ones are running already."""
        for node in self.start_order() if nodes is None else nodes:
            if node.state == "running":
                continue
            try:
                await node.component.start(host)
            except Exception as e:
                raise StartError(f"failed to start {node.label}: {e}") from e
            node.state = "running"
            logging.getLogger("otelpipe.service").debug("started", extra={"component": node.label})

    async def shutdown(self, keep: set[int] | None = None) -> None:
        """The reverse of start: receivers, then each pipeline's processors first-to-last (each flushes
        downstream) with connectors after the pipelines that feed them, then exporters (drain).

        Components in `keep` (identities, see `component_set`) were taken over by a newer graph and
        are left running.
        """
        await self.stop_nodes([n for n in reversed(self.start_order()) if keep is None or id(n.component) not in keep])

    async def stop_nodes(self, nodes: list[Node]) -> None:
        """Shut `nodes` down in the order given, each once."""
        for node in nodes:
            if node.state == "stopped":
                continue
            node.state = "stopping"
            try:
                await node.component.shutdown()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("error while shutting down", extra={"component": node.label})
            node.state = "stopped"

    def still_running(self) -> list[str]:
        return [n.label for n in reversed(self.start_order()) if n.state != "stopped"]

    def describe(self) -> dict[str, Any]:
        pipelines = {
            str(pid): {
                "receivers": [str(c) for c in p.receivers],
                "processors": [str(c) for c in p.processors],
                "exporters": [str(c) for c in p.exporters],
            }
            for pid, p in self.config.pipelines.items()
        }
        comps = [
            {"kind": n.kind.value, "id": str(n.id), "pipeline": n.pipeline or None,
             "signal": n.signal.value if n.signal else None, "state": n.state,
             **({"to_signal": n.to_signal.value} if n.to_signal else {}),
             **({"queue_size": n.component.queue_size} if isinstance(n.component, ExporterHelper) else {}),
             **({"endpoints": eps} if (eps := _endpoints(n.component)) else {}),
             **({"status": dict(inner.status())} if isinstance(inner := _inner(n.component), HasStatus) else {})}
            for n in reversed(self.start_order())
        ]
        return {"pipelines": pipelines, "components": comps}

    def handover_states(self) -> dict[NodeKey, object]:
        """The state of every component that carries state over a reload (see `CarriesState`)."""
        return {n.key: inner.handover_state() for n in self.start_order()
                if isinstance(inner := _inner(n.component), CarriesState)}

    def takeover_states(self, states: Mapping[NodeKey, object]) -> None:
        """Give each newly built (not yet started) component its predecessor's state, if it had one."""
        for n in self.start_order():
            inner = _inner(n.component)
            if not n.reused and isinstance(inner, CarriesState) and (state := states.get(n.key)) is not None:
                inner.takeover_state(state)

    def endpoints(self) -> dict[str, dict[str, str]]:
        """Actual bound addresses of every listening component, keyed `kind/id`."""
        out = {}
        for n in (*self.receivers, *self.exporters):
            eps = _endpoints(n.component)
            if eps:
                out[f"{n.kind.value}/{n.id}"] = eps
        return out


def _inner(component: object) -> object:
    """The component itself (for exporters: the exporter inside its helper)."""
    return component.exporter if isinstance(component, ExporterHelper) else component


def _endpoints(component: object) -> dict[str, str]:
    inner = _inner(component)
    return dict(inner.endpoints) if isinstance(inner, HasEndpoints) else {}

