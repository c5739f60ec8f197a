"""Reading the shipped Kubernetes manifests (deploy/) and the otelpipe configs their ConfigMaps carry."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PATTERNS = ("sidecar", "daemonset", "gateway")
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")
CONFIG_DIR = "/etc/otelpipe"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
_ENV_REF = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def manifest_files(pattern: str) -> list[Path]:
    return sorted(p for p in (DEPLOY / pattern).glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def objects(pattern: str) -> list[dict[str, Any]]:
    return [d for p in manifest_files(pattern) for d in documents(p)]


def kustomization(pattern: str) -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load((DEPLOY / pattern / "kustomization.yaml").read_text())
    return out


def workloads(pattern: str) -> list[dict[str, Any]]:
    return [o for o in objects(pattern) if o["kind"] in WORKLOADS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def otelpipe_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The otelpipe containers of a workload (regular or native-sidecar init containers)."""
    spec = pod_spec(workload)
    return [c for c in (*spec.get("initContainers", ()), *spec.get("containers", ()))
            if c["image"].split(":")[0].rsplit("/", 1)[-1] == "otelpipe"]


def config_map_of(pattern: str, workload: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap mounted at the container's config directory."""
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
    volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"])
    name = volume["configMap"]["name"]
    return next(o for o in objects(pattern) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)


def otelpipe_config(config_map: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return out


def config_text(config_map: dict[str, Any]) -> str:
    text: str = config_map["data"]["config.yaml"]
    return text


def env_references(text: str) -> dict[str, bool]:
    """Every `${env:VAR}` in a config: VAR → whether it has a default."""
    return {m.group(1): m.group(2) is not None for m in _ENV_REF.finditer(text)}


def all_workload_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for pattern in PATTERNS:
        for w in workloads(pattern):
            for c in otelpipe_containers(w):
                yield pattern, w, c


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    assert m, text
    return float(m.group(1)) * units[m.group(2)]


def port_of(endpoint: str) -> int:
    return int(str(endpoint).rsplit(":", 1)[1])
