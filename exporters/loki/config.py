"""`exporters.loki`: the push URL, tenant, labels, structured metadata and line format.

Keys follow the Collector's (removed) Loki exporter where it had them (`endpoint`, `tenant_id`,
`headers`, `labels.resource` / `labels.attributes` mapping an attribute to a label name, the
shared `sending_queue` / `retry_on_failure` / `timeout`); `structured_metadata` and `format` are
this exporter's own, after Loki 3's structured metadata and the Collector's `loki.format` hint.

Every stream gets `service_name` (resource `service.name`, `unknown_service` without one) and
`level` (the severity text, else the severity number's range); configured labels come on top.
Label names are sanitized to Prometheus label rules (`k8s.pod.name` → `k8s_pod_name`), which is
also how Loki's own OTLP ingestion names them.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from yarl import URL

from exporters.prometheus.naming import sanitize_label_name
from pipeline.auth import AuthConfig
from pipeline.config.types import Issue, Secret
from pipeline.exporterhelper import ExporterConfig
from pipeline.net.http import Compression
from pipeline.net.tls import TLSClientConfig
from pipeline.net.urls import header_issues, url_problem

Format = Literal["raw", "json", "logfmt"]

SERVICE_LABEL = "service_name"
LEVEL_LABEL = "level"
DEFAULT_LABELS = (SERVICE_LABEL, LEVEL_LABEL)
PUSH_PATH = "/loki/api/v1/push"
TENANT_HEADER = "X-Scope-OrgID"
#: Loki's default `limits_config.max_label_names_per_series`.
LOKI_MAX_LABELS = 15
# Loki's tenant ids: at most 150 of these characters (its `tenant.ValidTenantID`); `.` and `..` alone are not.
_TENANT_RE = re.compile(r"[A-Za-z0-9!._*'()-]{1,150}")
# Attribute names whose values are (nearly) unique per record or per user: as labels, each value makes a stream.
# Matched on the name lower-cased with everything but letters and digits removed (`enduser.id` → `enduserid`).
_HIGH_CARDINALITY_SUFFIXES = ("traceid", "spanid", "sessionid", "userid", "conversationid")
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_OWN_HEADERS = frozenset({"content-type", "content-encoding", "content-length"})


def label_name(attribute: str, configured: str) -> str:
    """The label an attribute becomes: the configured name (or the attribute's own), sanitized."""
    return sanitize_label_name(configured or attribute)


def high_cardinality(attribute: str) -> bool:
    """Whether `attribute` is a known high-cardinality attribute (a trace, span, session or user id)."""
    squeezed = _NON_ALNUM.sub("", attribute.lower())
    return squeezed.endswith(_HIGH_CARDINALITY_SUFFIXES)


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelsConfig:
    """Which attributes become stream labels: `{attribute name: label name}` ("" = the attribute's own name)."""

    resource: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)

    def items(self) -> Iterator[tuple[str, str, str]]:
        """(block, attribute, sanitized label name) of every configured label."""
        for block in ("resource", "attributes"):
            for attribute, name in getattr(self, block).items():
                yield block, attribute, label_name(attribute, name)

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        for block in ("resource", "attributes"):
            seen: dict[str, str] = {}
            for attribute, name in getattr(self, block).items():
                key = f"{block}.{attribute}"
                label = label_name(attribute, name)
                if not attribute:
                    out.append(Issue(block, "an attribute name cannot be empty"))
                elif not label:
                    out.append(Issue(key, f"label name {name!r} has no character usable in a label name"))
                elif label in seen:
                    out.append(Issue(key, f"becomes label '{label}', as '{seen[label]}' does: give one of them "
                                          "another label name"))
                else:
                    seen[label] = attribute
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LokiExporterConfig(ExporterConfig):
    """`exporters.loki`."""

    endpoint: str = ""
    tenant_id: str = ""
    headers: dict[str, Secret] = field(default_factory=dict)
    compression: Compression = "gzip"
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    structured_metadata: bool = True
    format: Format = "raw"
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)
    # `authenticator`: an extension that adds credentials to every push (e.g. bearertokenauth).
    auth: AuthConfig | None = None

    def validate(self) -> list[Issue]:
        out = ExporterConfig.validate(self)
        out.extend(self._endpoint_issues())
        out.extend(header_issues(self.headers, _OWN_HEADERS, "from compression"))
        if self.tenant_id:
            if any(name.lower() == TENANT_HEADER.lower() for name in self.headers):
                out.append(Issue("tenant_id", f"is sent as the {TENANT_HEADER} header, which headers sets too: "
                                              "keep only one of them"))
            if not _TENANT_RE.fullmatch(self.tenant_id) or self.tenant_id in (".", ".."):
                out.append(Issue("tenant_id", "a Loki tenant id is 1 to 150 letters, digits and !-_.*'() "
                                              "characters"))
        out.extend(self._label_warnings())
        if not self.structured_metadata and self.format == "raw":
            out.append(Issue("structured_metadata", "is off and format is raw: log lines carry only the body, "
                                                    "so trace ids and attributes are not sent; use format json or "
                                                    "logfmt to keep them in the line", warning=True))
        return out

    def _endpoint_issues(self) -> list[Issue]:
        if not self.endpoint:
            return [Issue("endpoint", f"is required: Loki's push URL, e.g. 'http://loki:3100{PUSH_PATH}'")]
        problem = url_problem(self.endpoint, self.headers)
        if problem:
            return [Issue("endpoint", problem)]
        path = URL(self.endpoint).path.rstrip("/")
        if not path:
            return [Issue("endpoint", f"has no path: Loki takes pushes at {PUSH_PATH}, e.g. "
                                      f"'http://loki:3100{PUSH_PATH}'")]
        if path.endswith("/otlp") or path.endswith("/otlp/v1/logs"):
            return [Issue("endpoint", "is Loki's OTLP endpoint, which takes OTLP, not the push API: send there "
                                      "with the otlphttp exporter (endpoint: http://loki:3100/otlp), or give "
                                      f"this exporter the push URL ({PUSH_PATH})")]
        return []

    def _label_warnings(self) -> list[Issue]:
        out: list[Issue] = []
        for block, attribute, label in self.labels.items():
            if high_cardinality(attribute) or high_cardinality(label):
                out.append(Issue(f"labels.{block}.{attribute}",
                                 f"'{attribute}' is a high-cardinality attribute (a trace, span, session or user "
                                 "id): as a label every value makes a new Loki stream, which slows Loki down and "
                                 "hits its stream limits; leave it out of labels, it is sent as structured metadata",
                                 warning=True))
        names = {label for _, _, label in self.labels.items()} | set(DEFAULT_LABELS)
        if len(names) > LOKI_MAX_LABELS:
            out.append(Issue("labels", f"{len(names)} labels per stream with service_name and level: Loki refuses "
                                       f"streams with more than {LOKI_MAX_LABELS} by default "
                                       "(limits_config.max_label_names_per_series)", warning=True))
        return out

    def tenant_headers(self) -> dict[str, str]:
        return {TENANT_HEADER: self.tenant_id} if self.tenant_id else {}
