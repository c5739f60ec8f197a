"""Authentication through extensions, as the Collector's configauth does it.

A receiver's `auth: {authenticator: bearertokenauth}` (under `protocols.grpc` / `protocols.http`)
names an extension that checks every request's headers; an exporter's
`auth: {authenticator: bearertokenauth/out}` names one that adds headers to every request it
sends. The extension is found at `start()` through `Host.extensions()`; it must be enabled in
`service.extensions` and implement the matching protocol below. Refusals are the transports'
job: 401 with `WWW-Authenticate` on HTTP, UNAUTHENTICATED on gRPC, counted by the receiver
with `reason="unauthenticated"`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pipeline.component import ComponentID, Host, Kind
from pipeline.config.types import Issue, did_you_mean, join
from pipeline.errors import ConfigIssue, StartError

UNAUTHENTICATED = "unauthenticated"  # the refusal reason receivers count

@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """`auth:`: the id of the authenticator extension (the Collector's configauth.Config)."""

    authenticator: str = ""

    def validate(self) -> list[Issue]:
        if not self.authenticator:
            return [Issue("authenticator", "is required: the id of an authenticator extension, e.g. 'bearertokenauth'")]
        try:
            ComponentID.parse(self.authenticator)
        except ValueError as e:
            return [Issue("authenticator", str(e))]
        return []


@runtime_checkable
class ServerAuthenticator(Protocol):
    """An extension that checks incoming requests (the Collector's extensionauth.Server)."""

    def authenticate(self, headers: Mapping[str, str]) -> bool:
        """True when the request's headers (names lower-case) carry valid credentials. Constant time."""
        ...

    @property
    def challenge(self) -> str:
        """The `WWW-Authenticate` value of a 401 (e.g. `Bearer realm="otelpipe"`)."""
        ...


@runtime_checkable
class ClientAuthenticator(Protocol):
    """An extension that adds credentials to outgoing requests (the Collector's extensionauth.HTTPClient)."""

    def headers(self) -> Mapping[str, str]:
        """The headers to add to the next request (read per request: a token file may have rotated)."""
        ...


def _running(host: Host, cfg: AuthConfig) -> tuple[ComponentID, object]:
    cid = ComponentID.parse(cfg.authenticator)
    ext = host.extensions().get(cid)
    if ext is None:
        raise StartError(f"authenticator extension '{cid}' is not running: configure it under 'extensions' "
                         "and list it in service.extensions")
    return cid, ext


def server_authenticator(host: Host, cfg: AuthConfig | None) -> ServerAuthenticator | None:
    """The running extension `cfg` names, for a receiver (None when there is no `auth`)."""
    if cfg is None:
        return None
    cid, ext = _running(host, cfg)
    if not isinstance(ext, ServerAuthenticator):
        raise StartError(f"extension '{cid}' cannot authenticate incoming requests")
    return ext


def client_authenticator(host: Host, cfg: AuthConfig | None) -> ClientAuthenticator | None:
    """The running extension `cfg` names, for an exporter (None when there is no `auth`)."""
    if cfg is None:
        return None
    cid, ext = _running(host, cfg)
    if not isinstance(ext, ClientAuthenticator):
        raise StartError(f"extension '{cid}' cannot add credentials to outgoing requests")
    return ext


def auth_references(cfg: object, path: str = "") -> Iterator[tuple[str, AuthConfig]]:
    """Every `auth:` block inside a component's config, with its key path (`protocols.grpc.auth`)."""
    if isinstance(cfg, AuthConfig):
        yield path, cfg
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            yield from auth_references(getattr(cfg, f.name), join(path, f.name))


def check_authenticators(enabled: Iterable[str], comps: Mapping[Kind, Mapping[ComponentID, Any]],
                         issues: list[ConfigIssue]) -> None:
    """`auth.authenticator` must name an extension that is configured and listed in service.extensions."""
    on = set(enabled)
    configured = comps.get(Kind.EXTENSION, {})
    for kind in (Kind.RECEIVER, Kind.EXPORTER):
        for cid, cfg in comps.get(kind, {}).items():
            for path, auth in auth_references(cfg):
                where = join(join(kind.section, str(cid)), join(path, "authenticator"))
                try:
                    aid = ComponentID.parse(auth.authenticator)
                except ValueError:
                    continue  # AuthConfig.validate() reported it
                if aid not in configured:
                    known = [str(c) for c in configured]
                    issues.append(ConfigIssue(where, f"references extension '{aid}' which is not configured under "
                                                     f"'extensions'{did_you_mean(str(aid), known)}"))
                elif str(aid) not in on:
                    issues.append(ConfigIssue(where, f"extension '{aid}' is configured but not enabled: add it to "
                                                     "service.extensions"))
