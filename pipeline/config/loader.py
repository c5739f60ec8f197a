"""Loading a configuration: YAML files → env expansion → strict decode → validate → cross-check.

Every problem is collected and raised together in one `ConfigError`, each with
the file, the key path and (for typos) the closest valid name; unused
components are warnings. The shape lives in `schema.py`, the cross-checks in
`checks.py`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pipeline.auth import check_authenticators
from pipeline.component import ComponentID, Factory, Kind
from pipeline.config.checks import check_extensions, check_storage, cross_check, pipeline_order, unused
from pipeline.config.confmap import RawConfig, expand_env, load_files, load_texts
from pipeline.config.masking import env_values, mask_issue
from pipeline.config.schema import SECTIONS, Config, ServiceConfig
from pipeline.config.types import decode_dataclass, did_you_mean, join
from pipeline.errors import ConfigError, ConfigIssue


def load(paths: list[str], factories: Mapping[Kind, Mapping[str, Factory]],
         env: Mapping[str, str] | None = None) -> Config:
    """Load and merge config files, raising ConfigError with every issue."""
    raw, issues = load_files(paths)
    return build(raw, issues, factories, env)


def load_text(text: str, factories: Mapping[Kind, Mapping[str, Factory]], env: Mapping[str, str] | None = None,
              name: str = "<config>") -> Config:
    raw, issues = load_texts([(name, text)])
    return build(raw, issues, factories, env)


def build(raw: RawConfig, issues: list[ConfigIssue], factories: Mapping[Kind, Mapping[str, Factory]],
          env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    if any(not i.warning for i in issues):
        # A file that cannot be read or is not valid YAML is reported alone (with its line), not
        # followed by everything else that "is missing" because the file did not load.
        raise ConfigError(issues)
    data = expand_env(raw.data, env, "", issues)
    for key in data:
        if key not in SECTIONS:
            issues.append(ConfigIssue(str(key), f"unknown top-level key '{key}'{did_you_mean(str(key), SECTIONS)}"
                                      f" (valid: {', '.join(SECTIONS)})"))
    comps: dict[Kind, dict[ComponentID, Any]] = {}
    reported: set[ComponentID] = set()
    for kind in Kind:
        comps[kind] = _decode_section(kind, data.get(kind.section), factories.get(kind, {}), issues, reported)
    service = decode_dataclass(ServiceConfig, data.get("service"), "service", issues)
    pipelines = cross_check(service, comps, factories, issues, frozenset(reported))
    order = pipeline_order(pipelines, comps[Kind.CONNECTOR], issues)
    check_extensions(service, comps[Kind.EXTENSION], issues)
    check_storage(service, comps, issues)
    check_authenticators(service.extensions, comps, issues)
    warnings = [i for i in issues if i.warning] + unused(comps, pipelines, service)
    errors = [i for i in issues if not i.warning]
    secrets = env_values(raw.data, env)  # never printed back, wherever a message quotes them
    for i, issue in enumerate(errors):
        issue = mask_issue(issue, secrets)
        errors[i] = ConfigIssue(issue.path, issue.message, issue.warning, issue.file or raw.origin(issue.path))
    warnings = [ConfigIssue(w.path, mask_issue(w, secrets).message, True, raw.origin(w.path)) for w in warnings]
    if errors:
        raise ConfigError(errors + warnings)
    return Config(
        receivers=comps[Kind.RECEIVER], processors=comps[Kind.PROCESSOR], exporters=comps[Kind.EXPORTER],
        connectors=comps[Kind.CONNECTOR], extensions=comps[Kind.EXTENSION], pipelines=pipelines,
        pipeline_order=order, service=service, warnings=tuple(warnings), sources=tuple(raw.files), raw=data,
    )


# Types the Collector renamed or removed, with what to use instead (a better hint than "did you mean").
RENAMED: Mapping[tuple[Kind, str], str] = {
    (Kind.EXPORTER, "logging"): "the Collector renamed it 'debug' (v0.86); use 'debug'",
    (Kind.EXPORTER, "jaeger"): "the Collector removed it (v0.85): Jaeger ingests OTLP, use 'otlp' (gRPC, port "
                               "4317) or 'otlphttp' (port 4318)",
    (Kind.EXPORTER, "jaeger_thrift"): "the Collector removed it (v0.85): Jaeger ingests OTLP, use 'otlp' or 'otlphttp'",
    (Kind.PROCESSOR, "spanmetrics"): "the Collector turned it into the 'spanmetrics' connector (v0.81); otelpipe "
                                     "derives agent metrics from spans with the 'genai_metrics' connector",
    (Kind.EXTENSION, "memory_ballast"): "the Collector removed it (v0.108); use the memory_limiter processor",
}


def unknown_type(kind: Kind, type_name: str, factories: Mapping[str, Factory]) -> str:
    """The error for a type no factory has: a rename hint when the Collector renamed it, else the closest name."""
    available = f" (available: {', '.join(sorted(factories))})" if factories else ""
    renamed = RENAMED.get((kind, type_name))
    if renamed is not None:
        return f"unknown {kind.value} type '{type_name}': {renamed}"
    return f"unknown {kind.value} type '{type_name}'{did_you_mean(type_name, factories)}{available}"


def _decode_section(kind: Kind, section: object, factories: Mapping[str, Factory],
                    issues: list[ConfigIssue], reported: set[ComponentID]) -> dict[ComponentID, Any]:
    """Decode one section; ids of components whose type is unknown go to `reported` (one error each)."""
    out: dict[ComponentID, Any] = {}
    if section is None:
        return out
    if not isinstance(section, dict):
        issues.append(ConfigIssue(kind.section, f"expected a mapping of {kind.value} ids to their settings"))
        return out
    for key, value in section.items():
        path = join(kind.section, key)
        try:
            cid = ComponentID.parse(str(key))
        except ValueError as e:
            issues.append(ConfigIssue(path, str(e)))
            continue
        factory = factories.get(cid.type)
        if factory is None:
            issues.append(ConfigIssue(path, unknown_type(kind, cid.type, factories)))
            reported.add(cid)
            continue
        out[cid] = decode_dataclass(factory.config_type, value, path, issues)
    return out
