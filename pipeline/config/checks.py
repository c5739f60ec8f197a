"""Cross-checks over the decoded sections: references, signals, connectors, cycles, ports, extensions.

Every problem becomes a `ConfigIssue` with its key path (the loader raises them
all together); components defined but not used are warnings. A cycle between
pipelines prints the whole loop, as Vector does.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.component import ComponentID, ConnectorFactory, Factory, HasListeners, Kind
from pipeline.config.schema import (
    Pipeline,
    PipelineID,
    ServiceConfig,
    parse_pipeline_id,
)
from pipeline.config.types import did_you_mean, join
from pipeline.errors import ConfigIssue
from pipeline.exporterhelper.config import ExporterConfig
from pipeline.exporterhelper.storage import StorageConfig, is_directory
from pipeline.net.endpoint import Endpoint


def cross_check(service: ServiceConfig, comps: dict[Kind, dict[ComponentID, Any]],
                 factories: Mapping[Kind, Mapping[str, Factory]],
                 issues: list[ConfigIssue],
                 reported: frozenset[ComponentID] = frozenset()) -> dict[PipelineID, Pipeline]:
    """Check every pipeline's references. `reported` holds ids whose own definition already got an error
    (an unknown type, say): a pipeline listing them is not told again that they are not configured."""
    out: dict[PipelineID, Pipeline] = {}
    if not service.pipelines:
        issues.append(ConfigIssue("service.pipelines", "no pipelines are configured; add at least one, e.g. "
                                  "traces: {receivers: [otlp], exporters: [debug]}"))
        return out
    _check_connector_ids(comps, issues)
    for pname, pcfg in service.pipelines.items():
        base = join("service.pipelines", pname)
        pid: PipelineID | None
        try:
            pid = parse_pipeline_id(pname)
        except ValueError as e:
            issues.append(ConfigIssue(base, str(e)))
            pid = None  # still check what it lists, so one typo does not hide other problems
        lists: dict[Kind, list[ComponentID]] = {}
        for kind, names in ((Kind.RECEIVER, pcfg.receivers), (Kind.PROCESSOR, pcfg.processors),
                            (Kind.EXPORTER, pcfg.exporters)):
            lists[kind] = []
            seen: set[ComponentID] = set()
            for i, name in enumerate(names):
                path = join(join(base, kind.section), i)
                try:
                    cid = ComponentID.parse(name)
                except ValueError as e:
                    issues.append(ConfigIssue(path, str(e)))
                    continue
                # A pipeline's receivers and exporters may also be connectors (the Collector's rule).
                found = kind if cid in comps[kind] else (
                    Kind.CONNECTOR if kind is not Kind.PROCESSOR and cid in comps[Kind.CONNECTOR] else None)
                if found is None:
                    if cid not in reported:
                        issues.append(ConfigIssue(path, _not_configured(kind, cid, comps)))
                    continue
                if found is not Kind.CONNECTOR and pid is not None:
                    factory = factories[kind][cid.type]
                    if not factory.supports(pid.signal):
                        issues.append(ConfigIssue(path, f"{kind.value} '{cid}' does not support {pid.signal.value} (it "
                                                        f"supports: {factory.stability_text()})"))
                        continue
                if cid in seen:
                    issues.append(ConfigIssue(path, f"{kind.value} '{cid}' is listed twice in this pipeline"))
                    continue
                seen.add(cid)
                lists[kind].append(cid)
        if not pcfg.receivers:
            issues.append(ConfigIssue(join(base, "receivers"), "a pipeline needs at least one receiver"))
        if not pcfg.exporters:
            issues.append(ConfigIssue(join(base, "exporters"), "a pipeline needs at least one exporter"))
        if pid is not None:
            out[pid] = Pipeline(pid, tuple(lists[Kind.RECEIVER]), tuple(lists[Kind.PROCESSOR]),
                                tuple(lists[Kind.EXPORTER]))
    _check_connector_use(out, comps[Kind.CONNECTOR], factories.get(Kind.CONNECTOR, {}), issues)
    _check_listeners(service, comps, issues)
    return out


def _not_configured(kind: Kind, cid: ComponentID, comps: dict[Kind, dict[ComponentID, Any]]) -> str:
    defined = [str(c) for c in comps[kind]]
    with_connectors = kind is not Kind.PROCESSOR and bool(comps[Kind.CONNECTOR])
    if with_connectors:
        defined += [str(c) for c in comps[Kind.CONNECTOR]]
    sections = f"'{kind.section}'" + (" or 'connectors'" if with_connectors else "")
    hint = did_you_mean(str(cid), defined) or (f" (configured: {', '.join(defined)})" if defined
                                               else f" (no {kind.section} are configured)")
    return f"references {kind.value} '{cid}' which is not configured under {sections}{hint}"


def _check_connector_ids(comps: dict[Kind, dict[ComponentID, Any]], issues: list[ConfigIssue]) -> None:
    """A connector id must not also name a receiver or an exporter: pipelines could not tell them apart."""
    for cid in comps[Kind.CONNECTOR]:
        for kind in (Kind.RECEIVER, Kind.EXPORTER):
            if cid in comps[kind]:
                issues.append(ConfigIssue(join("connectors", str(cid)), f"connector '{cid}' is also defined as "
                                          f"{'a' if kind is Kind.RECEIVER else 'an'} {kind.value} under "
                                          f"'{kind.section}'; give one of them another name (e.g. '{cid.type}/x')"))


def _check_connector_use(pipelines: Mapping[PipelineID, Pipeline], connectors: Mapping[ComponentID, Any],
                         factories: Mapping[str, Factory], issues: list[ConfigIssue]) -> None:
    """Both ends of every connector: used as an exporter and as a receiver, with a signal pair it supports."""
    as_exporter: dict[ComponentID, list[tuple[PipelineID, int]]] = {}
    as_receiver: dict[ComponentID, list[tuple[PipelineID, int]]] = {}
    for pid, p in pipelines.items():
        for i, cid in enumerate(p.exporters):
            if cid in connectors:
                as_exporter.setdefault(cid, []).append((pid, i))
        for i, cid in enumerate(p.receivers):
            if cid in connectors:
                as_receiver.setdefault(cid, []).append((pid, i))
    for cid in connectors:
        factory = factories[cid.type]
        if not isinstance(factory, ConnectorFactory):
            continue  # not a connector type: reported when the section was decoded
        for pid, i in as_exporter.get(cid, []):
            path = join(join(join("service.pipelines", str(pid)), "exporters"), i)
            targets = [q for q, _ in as_receiver.get(cid, [])]
            if not targets:
                issues.append(ConfigIssue(path, f"connector '{cid}' is used as an exporter here but is not a "
                                                "receiver of any pipeline; list it under the receivers of the "
                                                "pipeline it should feed"))
            elif not any(factory.connects_pair(pid.signal, q.signal) for q in targets):
                issues.append(ConfigIssue(path, f"connector '{cid}' cannot take {pid.signal.value} to the pipelines "
                                                f"it feeds ({', '.join(str(q) for q in targets)}); it connects: "
                                                f"{_pairs(factory)}"))
        for pid, i in as_receiver.get(cid, []):
            path = join(join(join("service.pipelines", str(pid)), "receivers"), i)
            sources = [q for q, _ in as_exporter.get(cid, [])]
            if not sources:
                issues.append(ConfigIssue(path, f"connector '{cid}' is used as a receiver here but is not an "
                                                "exporter of any pipeline; list it under the exporters of the "
                                                "pipeline it should take data from"))
            elif not any(factory.connects_pair(q.signal, pid.signal) for q in sources):
                issues.append(ConfigIssue(path, f"connector '{cid}' cannot emit {pid.signal.value} from the pipelines "
                                                f"that feed it ({', '.join(str(q) for q in sources)}); it connects: "
                                                f"{_pairs(factory)}"))


def _pairs(factory: ConnectorFactory[Any]) -> str:
    return ", ".join(f"{a.value} -> {b.value}" for a, b in factory.connects) or "nothing"


def pipeline_order(pipelines: Mapping[PipelineID, Pipeline], connectors: Mapping[ComponentID, Any],
                    issues: list[ConfigIssue]) -> tuple[PipelineID, ...]:
    """Pipelines upstream first; a loop through connectors is an error that prints the loop (as Vector does)."""
    feeds: dict[PipelineID, list[tuple[ComponentID, PipelineID]]] = {pid: [] for pid in pipelines}
    for pid, p in pipelines.items():
        for cid in p.exporters:
            if cid in connectors:
                feeds[pid].extend((cid, q) for q, qp in pipelines.items() if cid in qp.receivers)
    order: list[PipelineID] = []
    state: dict[PipelineID, int] = {}  # 1: on the current path, 2: done
    path: list[tuple[PipelineID, ComponentID | None]] = []
    reported: set[frozenset[PipelineID]] = set()

    def visit(pid: PipelineID, via: ComponentID | None) -> None:
        state[pid] = 1
        path.append((pid, via))
        for cid, q in feeds[pid]:
            if state.get(q) == 1:
                start = next(i for i, (p, _) in enumerate(path) if p == q)
                loop = path[start:]
                key = frozenset(p for p, _ in loop)
                if key not in reported:
                    reported.add(key)
                    steps = [str(loop[0][0])]
                    for p, v in loop[1:]:
                        steps += [f"[{v}]", str(p)]
                    steps += [f"[{cid}]", str(q)]
                    issues.append(ConfigIssue("service.pipelines", "pipelines are connected in a cycle: "
                                              + " -> ".join(steps) + "; data would flow around it forever"))
            elif q not in state:
                visit(q, cid)
        path.pop()
        state[pid] = 2
        order.append(pid)

    for pid in pipelines:
        if pid not in state:
            visit(pid, None)
    return tuple(reversed(order))


def check_extensions(service: ServiceConfig, extensions: Mapping[ComponentID, Any], issues: list[ConfigIssue]) -> None:
    seen: set[ComponentID] = set()
    for i, name in enumerate(service.extensions):
        path = join("service.extensions", i)
        try:
            cid = ComponentID.parse(name)
        except ValueError as e:
            issues.append(ConfigIssue(path, str(e)))
            continue
        if cid not in extensions:
            known = [str(c) for c in extensions]
            hint = did_you_mean(str(cid), known) or (f" (configured extensions: {', '.join(known)})" if known
                                                     else " (no extensions are configured)")
            issues.append(ConfigIssue(path, f"references extension '{cid}' which is not configured under "
                                            f"'extensions'{hint}"))
        elif cid in seen:
            issues.append(ConfigIssue(path, f"extension '{cid}' is listed twice"))
        seen.add(cid)


def check_storage(service: ServiceConfig, comps: dict[Kind, dict[ComponentID, Any]],
                  issues: list[ConfigIssue]) -> None:
    """`sending_queue.storage` naming an extension: it must be configured, enabled, and a storage extension."""
    enabled = set(service.extensions)
    for eid, cfg in comps[Kind.EXPORTER].items():
        storage = cfg.sending_queue.storage if isinstance(cfg, ExporterConfig) else None
        if storage is None or is_directory(storage):
            continue
        path = join(join("exporters", str(eid)), "sending_queue.storage")
        try:
            sid = ComponentID.parse(storage)
        except ValueError:
            continue  # QueueConfig.validate() reported it
        known = [str(c) for c, ecfg in comps[Kind.EXTENSION].items() if isinstance(ecfg, StorageConfig)]
        if sid not in comps[Kind.EXTENSION]:
            hint = did_you_mean(storage, known) or (f" (storage extensions configured: {', '.join(known)})" if known
                                                    else " (none is configured; e.g. extensions: {file_storage: "
                                                         "{directory: /var/lib/otelpipe/file_storage}})")
            issues.append(ConfigIssue(path, f"references extension '{sid}' which is not configured under "
                                            f"'extensions'{hint}; a directory is written as an absolute path or "
                                            f"./{storage}"))
        elif not isinstance(comps[Kind.EXTENSION][sid], StorageConfig):
            issues.append(ConfigIssue(path, f"extension '{sid}' is not a storage extension"
                                            + (f" (storage extensions: {', '.join(known)})" if known else "")))
        elif str(sid) not in enabled:
            issues.append(ConfigIssue(path, f"extension '{sid}' is configured but not enabled: add it to "
                                            "service.extensions"))


def _check_listeners(service: ServiceConfig, comps: dict[Kind, dict[ComponentID, Any]],
                     issues: list[ConfigIssue]) -> None:
    """Two components must not claim the same port (Vector's resource check)."""
    claims: dict[tuple[str, int], str] = {}

    def claim(proto: str, endpoint: Endpoint | None, path: str) -> None:
        if endpoint is None or endpoint.port == 0:  # None: the decoder already reported a bad endpoint
            return
        port = endpoint.port
        key = (proto, port)
        if key in claims:
            issues.append(ConfigIssue(path, f"{proto} port {port} is already used by {claims[key]}; "
                                            "give one of them another port"))
        else:
            claims[key] = path

    claim("tcp", service.telemetry.metrics.address, "service.telemetry.metrics.address")
    for kind, items in comps.items():
        for cid, cfg in items.items():
            if isinstance(cfg, HasListeners):
                for proto, endpoint, key in cfg.listeners():
                    claim(proto, endpoint, join(join(kind.section, str(cid)), key))


def unused(comps: dict[Kind, dict[ComponentID, Any]], pipelines: Mapping[PipelineID, Pipeline],
            service: ServiceConfig) -> list[ConfigIssue]:
    used: dict[Kind, set[ComponentID]] = {k: set() for k in Kind}
    for p in pipelines.values():
        used[Kind.RECEIVER].update(p.receivers)
        used[Kind.PROCESSOR].update(p.processors)
        used[Kind.EXPORTER].update(p.exporters)
        used[Kind.CONNECTOR].update(p.receivers + p.exporters)
    for name in service.extensions:
        try:
            used[Kind.EXTENSION].add(ComponentID.parse(name))
        except ValueError:
            pass  # reported by _check_extensions
    out = []
    for kind, items in comps.items():
        for cid in items:
            if cid not in used[kind]:
                where = "by any pipeline" if kind is not Kind.EXTENSION else "(add it to service.extensions)"
                out.append(ConfigIssue(join(kind.section, str(cid)), f"{kind.value} '{cid}' is configured but not "
                                       f"used {where}", warning=True))
    return out
