"""The OTLP receiver: OTLP/gRPC on 4317 and OTLP/HTTP on 4318, for traces, metrics and logs.

This module holds the component that owns the two transports and its factory;
the configuration is in `config.py`, the transports in `grpc.py` and `http.py`.
The receiver is handed one consumer per signal that some pipeline routes from
it; a signal without a consumer is not served.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping

from pipeline.auth import server_authenticator
from pipeline.component import (
    Consumer,
    Host,
    ReceiverFactory,
    Settings,
    Stability,
)
from pipeline.model import Signal
from receivers.otlp.config import OTLPReceiverConfig
from receivers.otlp.grpc import OTLPGRPCServer
from receivers.otlp.http import OTLPHTTPServer


class OTLPReceiver:
    """Runs the enabled transports; `endpoints` holds the addresses actually bound after start."""

    def __init__(self, settings: Settings, cfg: OTLPReceiverConfig, consumers: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.cfg = cfg
        self.consumers = dict(consumers)
        self.endpoints: dict[str, str] = {}
        self._grpc: OTLPGRPCServer | None = None
        self._http: OTLPHTTPServer | None = None

    async def start(self, host: Host) -> None:
        protocols = self.cfg.protocols
        try:
            if protocols.grpc is not None:
                self._grpc = OTLPGRPCServer(self.settings, protocols.grpc, self.consumers,
                                            server_authenticator(host, protocols.grpc.auth))
                self.endpoints["grpc"] = await self._grpc.start()
            if protocols.http is not None:
                self._http = OTLPHTTPServer(self.settings, protocols.http, self.consumers,
                                            server_authenticator(host, protocols.http.auth))
                self.endpoints["http"] = await self._http.start()
        except BaseException:
            # A transport that did bind must not outlive a failed start (e.g. HTTP port in use).
            await self.shutdown()
            raise

    @property
    def http_connections(self) -> int:
        """Connections the OTLP/HTTP transport holds open now (0 when it is not running)."""
        return self._http.open_connections if self._http is not None else 0

    async def shutdown(self) -> None:
        """Stop accepting on both transports at once; each lets in-flight requests finish briefly."""
        servers = [s for s in (self._grpc, self._http) if s is not None]
        self._grpc = self._http = None
        if servers:
            await asyncio.gather(*(s.stop() for s in servers))


def create(settings: Settings, cfg: OTLPReceiverConfig, consumers: Mapping[Signal, Consumer]) -> OTLPReceiver:
    return OTLPReceiver(settings, cfg, consumers)


FACTORY = ReceiverFactory(
    type="otlp",
    config_type=OTLPReceiverConfig,
    signals={Signal.TRACES: Stability.STABLE, Signal.METRICS: Stability.STABLE, Signal.LOGS: Stability.STABLE},
    create=create,
    description="Receives OTLP over gRPC (4317) and HTTP (4318, protobuf and JSON, gzip).",
)
