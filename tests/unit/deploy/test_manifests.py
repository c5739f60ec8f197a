"""The Kubernetes manifests in deploy/: valid against the API schemas (kubernetes-validate, which ships
them), and holding the invariants that keep data safe: probes, security context, grace period above
the drain, ports that match the config, memory_limiter tied to the container limit, secrets from
Secrets, a kustomization per pattern, agents pointed at the gateway's headless Service."""
from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from otelpipe import components
from pipeline.config.loader import load_text

from .manifests import (
    CONFIG_DIR,
    CONFIG_PATH,
    PATTERNS,
    all_workload_containers,
    config_map_of,
    config_text,
    documents,
    duration_seconds,
    env_references,
    kustomization,
    manifest_files,
    objects,
    otelpipe_config,
    otelpipe_containers,
    pod_spec,
    port_of,
    workloads,
)

# Native sidecars (init containers with restartPolicy: Always) need 1.28; the latest schema shipped too.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
CONTAINERS = list(all_workload_containers())
IDS = [f"{p}/{w['metadata']['name']}/{c['name']}" for p, w, c in CONTAINERS]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(pattern: str, version: str) -> None:
    checked = 0
    for path in manifest_files(pattern):
        for doc in documents(path):
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: kubernetes-validate has no schema; checked below
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_pattern_has_a_kustomization_listing_exactly_its_manifests(pattern: str) -> None:
    k = kustomization(pattern)
    assert k["kind"] == "Kustomization" and k["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert sorted(k["resources"]) == sorted(p.name for p in manifest_files(pattern))
    namespaces = {o["metadata"].get("namespace") for o in objects(pattern)}
    assert namespaces == {k["namespace"]}
    assert [i["name"] for i in k["images"]] == ["otelpipe"]


def test_the_old_single_file_manifests_are_gone() -> None:
    assert not list((manifest_files("sidecar")[0].parents[1]).glob("*.yaml"))


@pytest.mark.parametrize(("pattern", "workload", "container"), CONTAINERS, ids=IDS)
def test_probes_run_on_the_admin_port(pattern: str, workload: dict[str, Any], container: dict[str, Any]) -> None:
    admin = next(p for p in container["ports"] if p["name"] == "admin")
    cfg = otelpipe_config(config_map_of(pattern, workload, container))
    assert admin["containerPort"] == port_of(cfg["service"]["telemetry"]["metrics"]["address"])
    assert cfg["service"]["telemetry"]["metrics"]["address"].startswith("0.0.0.0:")  # the kubelet dials the pod IP
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}


@pytest.mark.parametrize(("pattern", "workload", "container"), CONTAINERS, ids=IDS)
def test_security_context_is_locked_down(pattern: str, workload: dict[str, Any], container: dict[str, Any]) -> None:
    pod = pod_spec(workload)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in (*pod.get("initContainers", ()), *pod["containers"]):  # the example agent too
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in sc


@pytest.mark.parametrize(("pattern", "workload", "container"), CONTAINERS, ids=IDS)
def test_requests_and_limits_are_set(pattern: str, workload: dict[str, Any], container: dict[str, Any]) -> None:
    res = container["resources"]
    for kind in ("requests", "limits"):
        assert set(res[kind]) == {"cpu", "memory"}, (kind, res)


@pytest.mark.parametrize(("pattern", "workload", "container"), CONTAINERS, ids=IDS)
def test_the_grace_period_outlasts_the_drain(pattern: str, workload: dict[str, Any],
                                             container: dict[str, Any]) -> None:
    cfg = otelpipe_config(config_map_of(pattern, workload, container))
    drain = duration_seconds(cfg["service"].get("shutdown_timeout", "25s"))
    pause = 0.0
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        pause = float(command[1])
    grace = pod_spec(workload)["terminationGracePeriodSeconds"]
    assert grace > pause + drain, (grace, pause, drain)


@pytest.mark.parametrize(("pattern", "workload", "container"), CONTAINERS, ids=IDS)
def test_ports_match_the_config_in_the_config_map(pattern: str, workload: dict[str, Any],
                                                   container: dict[str, Any]) -> None:
    cfg = otelpipe_config(config_map_of(pattern, workload, container))
    declared = {(p["containerPort"], p.get("protocol", "TCP")) for p in container["ports"]}
    listeners: list[tuple[int, str]] = []
    for name, rcfg in cfg["receivers"].items():
        if name.split("/")[0] == "otlp":
            listeners += [(port_of(p["endpoint"]), "TCP") for p in rcfg["protocols"].values()]
        elif name.split("/")[0] == "statsd":
            listeners.append((port_of(rcfg["endpoint"]), "UDP"))
    listeners.append((port_of(cfg["service"]["telemetry"]["metrics"]["address"]), "TCP"))
    assert set(listeners) == declared
    host_ports = {(p["hostPort"], p["protocol"]) for p in container["ports"] if "hostPort" in p}
    if workload["kind"] == "DaemonSet":
        # every receiver reachable on the node's address; the admin port stays pod-local
        assert host_ports == set(listeners[:-1])
        assert (8125, "UDP") in host_ports
    else:
        assert not host_ports


@pytest.mark.parametrize(("pattern", "workload", "container"), CONTAINERS, ids=IDS)
def test_the_config_map_config_is_valid_and_mounted_where_the_args_say(
        pattern: str, workload: dict[str, Any], container: dict[str, Any]) -> None:
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[CONFIG_DIR]["readOnly"] is True
    assert "/tmp" in mounts  # a writable scratch directory on a read-only root filesystem
    text = config_text(config_map_of(pattern, workload, container))
    env = {e["name"] for e in container.get("env", ())}
    required = {var for var, has_default in env_references(text).items() if not has_default}
    assert required <= env, f"set in the container: {required - env}"
    # the secrets as the Secret would give them (a Datadog key is 32 hex digits); defaults left to the config
    load_text(text, components.factories(), env={v: "0123456789abcdef" * 2 for v in required})


@pytest.mark.parametrize(("pattern", "workload", "container"), CONTAINERS, ids=IDS)
def test_memory_limiter_is_tied_to_the_container_limit_and_comes_first(
        pattern: str, workload: dict[str, Any], container: dict[str, Any]) -> None:
    cfg = otelpipe_config(config_map_of(pattern, workload, container))
    ml = cfg["processors"]["memory_limiter"]
    assert "limit_mib" not in ml and 0 < ml["limit_percentage"] <= 90  # of the cgroup's limit
    assert 0 < ml["spike_limit_percentage"] < ml["limit_percentage"]
    assert container["resources"]["limits"]["memory"]
    for pipeline in cfg["service"]["pipelines"].values():
        assert pipeline["processors"][0] == "memory_limiter"


@pytest.mark.parametrize(("pattern", "workload", "container"), CONTAINERS, ids=IDS)
def test_secrets_come_from_secrets(pattern: str, workload: dict[str, Any], container: dict[str, Any]) -> None:
    for e in container.get("env", ()):
        if any(w in e["name"].upper() for w in ("KEY", "TOKEN", "PASSWORD", "TENANT")):
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], e


def test_the_sidecar_pod_secrets_are_the_datadog_and_pagerduty_keys() -> None:
    for w in workloads("sidecar"):
        (c,) = otelpipe_containers(w)
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert set(refs) == {"DD_API_KEY", "PAGERDUTY_ROUTING_KEY"}
        cfg = otelpipe_config(config_map_of("sidecar", w, c))
        assert cfg["exporters"]["datadog"]["api"]["key"] == "${env:DD_API_KEY}"
        assert cfg["exporters"]["pagerduty"]["routing_key"] == "${env:PAGERDUTY_ROUTING_KEY}"


def test_the_sidecar_runs_natively_and_classically() -> None:
    by_name = {w["metadata"]["name"]: w for w in workloads("sidecar")}
    native, classic = by_name["support-agent"], by_name["support-agent-classic"]
    (init,) = pod_spec(native)["initContainers"]
    assert init["restartPolicy"] == "Always" and init["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert "lifecycle" not in init  # started before and stopped after the agent: no pause needed
    (sidecar,) = otelpipe_containers(classic)
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    for w in (native, classic):
        agent = next(c for c in pod_spec(w)["containers"] if c["name"] == "agent")
        env = {e["name"]: e.get("value") for e in agent["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4317"


def _gateway_headless() -> tuple[str, int]:
    svc = next(o for o in objects("gateway") if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None")
    fqdn = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    return fqdn, svc["spec"]["ports"][0]["port"]


@pytest.mark.parametrize("pattern", ["sidecar", "daemonset"])
def test_agents_send_every_signal_to_the_gateways_headless_service(pattern: str) -> None:
    fqdn, port = _gateway_headless()
    gw = otelpipe_config(next(o for o in objects("gateway") if o["kind"] == "ConfigMap"))
    gw_signals = {p.split("/")[0] for p in gw["service"]["pipelines"]}
    for w in workloads(pattern):
        (c,) = otelpipe_containers(w)
        cfg = otelpipe_config(config_map_of(pattern, w, c))
        lb = cfg["exporters"]["loadbalancing"]
        dns = lb["resolver"]["dns"]
        assert dns["hostname"] == f"${{env:GATEWAY_HEADLESS_SERVICE:-{fqdn}}}" and dns["port"] == port
        sent = {p.split("/")[0] for p, pl in cfg["service"]["pipelines"].items() if "loadbalancing" in pl["exporters"]}
        assert sent == {"traces", "metrics", "logs"}
        assert sent <= gw_signals  # the gateway has a pipeline for everything the agents send it
        assert "routing_key" not in lb  # traceID for traces, service for metrics and logs


def test_the_gateway_has_services_an_hpa_a_pdb_and_a_service_monitor() -> None:
    objs = objects("gateway")
    (deploy,) = [o for o in objs if o["kind"] == "Deployment"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    (c,) = otelpipe_containers(deploy)
    port_names = {p["name"] for p in c["ports"]}
    services = [o for o in objs if o["kind"] == "Service"]
    assert {s["spec"].get("clusterIP") for s in services} == {"None", None}
    for s in services:
        assert s["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in s["spec"]["ports"]} <= port_names
    (hpa,) = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2 and c["resources"]["requests"]["cpu"]  # utilization needs a request
    (pdb,) = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    (sm,) = [o for o in objs if o["kind"] == "ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [s for s in services if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert any(p["name"] == "admin" for s in selected for p in s["spec"]["ports"])
    assert sm["spec"]["endpoints"] == [{"port": "admin", "path": "/metrics", "interval": "30s"}]
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [deploy["metadata"]["namespace"]]
