"""The `/metrics` HTTP endpoint: content negotiation and rendering off the event loop.

Rendering 100k series costs a good fraction of a second of CPU. Doing it on
the event loop would stall every receiver for that long on each scrape (a
StatsD socket overflows quickly), so a scrape takes the store snapshot and
encodes it in a worker thread; concurrent scrapes of the same format (an HA
pair of Prometheus servers) share one render.

Format: OpenMetrics (with exemplars and `_created`) when `enable_open_metrics`
is set and the scraper's Accept header asks for `application/openmetrics-text`,
otherwise the Prometheus text format 0.0.4. Each exporter owns its registries;
the global prometheus_client REGISTRY is never touched.

One series must never fail a whole scrape: a family the collector cannot build
is left out there, and if the encoder still fails, the scrape is written again
family by family, leaving out (and reporting through `on_skip`) only the
families the encoder refuses. That second pass costs nothing while every
family encodes.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics import exposition as om_exposition

from exporters.prometheus.collector import SkipReporter, StoreCollector, ignore_skip
from exporters.prometheus.store import MetricStore
from pipeline.logutil import RateLimitedLog
from pipeline.net.endpoint import Endpoint

CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_OPENMETRICS = "application/openmetrics-text"


def wants_openmetrics(accept_headers: Iterable[str]) -> bool:
    """Whether any Accept media range is OpenMetrics text with a non-zero quality."""
    for header in accept_headers:
        for item in header.split(","):
            media, *params = item.split(";")
            if media.strip().lower() != _OPENMETRICS:
                continue
            q = 1.0
            for p in params:
                k, _, v = p.strip().partition("=")
                if k.strip().lower() == "q":
                    try:
                        q = float(v)
                    except ValueError:
                        q = 0.0
            if q > 0:
                return True
    return False


# Every metric and label name the store produces is already a valid legacy
# Prometheus name (naming.py sanitizes them), so the encoders' name-escaping
# step can only ever return its input. prometheus_client spends about a third
# of a scrape re-validating each label name on each sample; asking for an
# escaping scheme it does not know makes it hand names through unchanged
# while label values and HELP text are still escaped as usual. (The standard
# for OpenMetrics is `allow-utf-8`, which writes valid legacy names as they
# are; its `underscores` mode rewrites `:` in sample names but not in the
# family name, which would break names like `job:requests`.) Whether the
# installed prometheus_client really behaves so is checked once per server by
# rendering a probe both ways; if not, the standard scheme is used.
PREVALIDATED = "otelpipe-prevalidated-names"


class _Probe:
    """A tiny family with every character class that must still be escaped."""

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily("probe_requests", 'help with "quotes", \\ and\nnewline', labels=["a_b", "route"])
        fam.add_metric(["x", 'say "hi"\\n\n'], 1.5)
        yield fam
        gauge = GaugeMetricFamily("probe:ratio", "help", labels=["le_x"])
        gauge.add_metric(["0.5"], float("nan"))
        yield gauge


def _escaping_for(generate: Callable[..., bytes], standard: str) -> str | None:
    """PREVALIDATED if it yields byte-identical output on the probe, else `standard` (None: no parameter)."""
    probe = _Probe()
    try:
        reference = generate(probe, escaping=standard)
    except TypeError:  # a prometheus_client without the escaping parameter
        return None
    try:
        fast = generate(probe, escaping=PREVALIDATED)
    except Exception:
        return standard
    return PREVALIDATED if fast == reference else standard


def _encode(generate: Callable[..., bytes], registry: CollectorRegistry | _Families, escaping: str | None) -> bytes:
    return generate(registry) if escaping is None else generate(registry, escaping=escaping)


class _Families:
    """Already collected families, for the encoders (which only call `collect`)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


_EOF = b"# EOF\n"
_SERIES_ONLY = ("le", "quantile")  # labels that split one series into several sample lines


def _series_in(family: Metric) -> int:
    return len({frozenset(kv for kv in s.labels.items() if kv[0] not in _SERIES_ONLY) for s in family.samples})


class MetricsServer:
    def __init__(self, endpoint: Endpoint, store: MetricStore, *, open_metrics: bool,
                 logger: logging.LoggerAdapter[logging.Logger] | None = None,
                 on_skip: SkipReporter | None = None) -> None:
        self._endpoint = endpoint
        self._open_metrics = open_metrics
        self._log = RateLimitedLog(logger) if logger is not None else None
        self._on_skip = on_skip or ignore_skip
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(store, openmetrics=False, on_skip=on_skip))
        self.openmetrics_registry = CollectorRegistry(auto_describe=False)
        self.openmetrics_registry.register(StoreCollector(store, openmetrics=True, on_skip=on_skip))
        self._text_escaping = _escaping_for(text_latest, om_exposition.UNDERSCORES)
        self._om_escaping = _escaping_for(om_exposition.generate_latest, om_exposition.ALLOWUTF8)
        self._runner: web.AppRunner | None = None
        self._renders: dict[bool, asyncio.Future[bytes]] = {}
        self.endpoints: dict[str, str] = {}

    def render(self, openmetrics: bool = False) -> bytes:
        """The exposition body (synchronous; any thread); families the encoder refuses are left out."""
        generate: Callable[..., bytes]
        if openmetrics:
            generate, registry, escaping = om_exposition.generate_latest, self.openmetrics_registry, self._om_escaping
        else:
            generate, registry, escaping = text_latest, self.registry, self._text_escaping
        try:
            return _encode(generate, registry, escaping)
        except Exception:
            return self._render_each(generate, registry, escaping, openmetrics)

    def _render_each(self, generate: Callable[..., bytes], registry: CollectorRegistry, escaping: str | None,
                     openmetrics: bool) -> bytes:
        """Encode family by family, leaving out the ones that fail (a collect() failure still raises)."""
        parts: list[bytes] = []
        for family in list(registry.collect()):
            try:
                body = _encode(generate, _Families([family]), escaping)
            except Exception as e:
                self._on_skip(family.name, _series_in(family), e)
                continue
            parts.append(body[:-len(_EOF)] if openmetrics and body.endswith(_EOF) else body)
        if openmetrics:
            parts.append(_EOF)
        return b"".join(parts)

    async def render_async(self, openmetrics: bool = False) -> bytes:
        """Render in a worker thread; callers that arrive while a render of the same format runs share it."""
        fut = self._renders.get(openmetrics)
        if fut is None:
            fut = asyncio.ensure_future(asyncio.to_thread(self.render, openmetrics))
            self._renders[openmetrics] = fut

            def _done(f: asyncio.Future[bytes], om: bool = openmetrics) -> None:
                if self._renders.get(om) is f:
                    del self._renders[om]
                if not f.cancelled():
                    f.exception()  # retrieved here too: every waiter may have gone (scraper disconnected)
            fut.add_done_callback(_done)
        return await asyncio.shield(fut)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        om = self._open_metrics and wants_openmetrics(request.headers.getall("Accept", []))
        try:
            body = await self.render_async(om)
        except Exception as e:
            if self._log is not None:
                self._log.error("rendering /metrics failed", key="render", extra={"error": repr(e)})
            return web.Response(status=500, text="rendering metrics failed; see the otelpipe log\n")
        resp = web.Response(body=body,
                            headers={"Content-Type": CONTENT_TYPE_OPENMETRICS if om else CONTENT_TYPE_PLAIN_0_0_4})
        resp.enable_compression()
        return resp

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        ep = self._endpoint
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, ep.host or None, ep.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.endpoints = {"http": str(ep.with_port(bound[1]).local())}

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        pending = list(self._renders.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
