"""The StatsD / DogStatsD receiver: UDP lines in, one OTLP metrics request per aggregation interval out.

The config (the Collector's `statsdreceiver` shape) is in `config.py`, the
grammar in `parser.py`, the interval aggregation and the mapping to OTLP in
`aggregator.py`; this module owns the socket and the schedule.

Why the socket is read this way: UDP has no back-pressure, so whatever the
process does not read in time the kernel drops. The receive buffer is enlarged
(`socket_buffer_size`; with CAP_NET_ADMIN past `net.core.rmem_max`), the socket
is non-blocking and read from a `loop.add_reader` callback that drains up to
`_MAX_DATAGRAMS_PER_WAKEUP` datagrams per wake-up, and the whole batch is
decoded and parsed in one call. No task or future is created per datagram.
Kernel drops on the socket are read from /proc/net/udp and exposed as
`otelpipe_receiver_statsd_kernel_drops`, so loss is never silent.

Accounting: malformed lines are refused (`otelpipe_receiver_refused_metric_points_total`
with a reason, one per line); events, service checks and unknown `|` fields are
counted in `otelpipe_receiver_statsd_ignored_total{reason}`; the aggregated
points are counted as accepted (or refused) by `deliver()` at each flush.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Callable, Mapping

from pipeline.component import (
    Consumer,
    Host,
    ReceiverFactory,
    Settings,
    Stability,
)
from pipeline.logutil import RateLimitedLog
from pipeline.model import Payload, Signal
from pipeline.receiverhelper import Outcome, deliver
from receivers.statsd.aggregator import StatsDAggregator
from receivers.statsd.config import StatsDReceiverConfig
from receivers.statsd.parser import (
    ParseResult,
    StatsDParser,
)

# Datagrams read per wake-up before yielding to the loop (the flush task and other receivers).
_MAX_DATAGRAMS_PER_WAKEUP = 4096
# Linux's SO_RCVBUFFORCE (not exported by the socket module): may exceed rmem_max with CAP_NET_ADMIN.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
PACKET_TOO_LARGE = "packet_too_large"


def socket_kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on this socket (the `drops` column of /proc/net/udp[6]), None if unknown."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except (OSError, ValueError):
        return None
    wanted = str(inode)
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 12 and cols[9] == wanted:
                        return int(cols[-1])
        except OSError:
            continue
    return None


# -- the receiver --------------------------------------------------------------------------------------
class StatsDReceiver:
    """Owns the UDP socket, the parser, the aggregator and the flush schedule.

    `endpoints["udp"]` is the bound address after start (port 0 picks a free one);
    `lines_received` counts good lines; `wait_for_lines(n)` and `force_flush()`
    let tests and tools synchronise without sleeping.
    """

    def __init__(self, settings: Settings, cfg: StatsDReceiverConfig, consumers: Mapping[Signal, Consumer],
                 *, wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.cfg = cfg
        self._consumer = consumers.get(Signal.METRICS)
        self._wall = wall_clock_ns
        self.endpoints: dict[str, str] = {}
        self.lines_received = 0
        self.socket_buffer_bytes = 0
        self._parser = StatsDParser()
        self._agg = StatsDAggregator(observers=cfg.observers(), enable_metric_type=cfg.enable_metric_type,
                                     start_ns=wall_clock_ns())
        rid = str(settings.id)
        tel = settings.telemetry
        self._obs = tel.receiver(rid, "udp")
        self._ignored = tel.counter("receiver_statsd_ignored")
        self._lines_metric = tel.counter("receiver_statsd_lines").labels(rid)
        self._datagrams_metric = tel.counter("receiver_statsd_datagrams").labels(rid)
        self._drops_gauge = tel.gauge("receiver_statsd_kernel_drops").labels(rid)
        self._buffer_gauge = tel.gauge("receiver_statsd_socket_buffer_bytes").labels(rid)
        self._rid = rid
        self._log = RateLimitedLog(settings.logger, interval=10.0)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._last_drops = 0
        self._max_packet = cfg.max_packet_size

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        sock = self._bind()
        self._sock = sock
        self._drops_gauge.set_function(self._current_drops)
        self._last_drops = socket_kernel_drops(sock) or 0
        loop.add_reader(sock.fileno(), self._on_readable)
        self._stop = asyncio.Event()
        self._flush_task = loop.create_task(self._flush_loop(), name=f"statsd-flush[{self._rid}]")
        self.settings.logger.info("statsd receiver listening", extra={
            "endpoint": self.endpoints["udp"], "socket_buffer_bytes": self.socket_buffer_bytes,
            "socket_buffer_requested": int(self.cfg.socket_buffer_size),
            "aggregation_interval_s": float(self.cfg.aggregation_interval)})

    def _bind(self) -> socket.socket:
        ep = self.cfg.endpoint
        infos = socket.getaddrinfo(ep.bind_host, ep.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        # A name such as `localhost` may resolve to ::1 first; StatsD clients default to IPv4.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            self.socket_buffer_bytes = self._size_buffer(sock)
            sock.bind(addr)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        self.endpoints["udp"] = str(ep.with_port(bound[1]).local())
        self._buffer_gauge.set(self.socket_buffer_bytes)
        return sock

    def _size_buffer(self, sock: socket.socket) -> int:
        """Ask for socket_buffer_size; past net.core.rmem_max only SO_RCVBUFFORCE (CAP_NET_ADMIN) gets it."""
        want = int(self.cfg.socket_buffer_size)
        if want > 0:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, want)
            except OSError:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
                except OSError as e:
                    self.settings.logger.warning("could not set the StatsD socket receive buffer",
                                                 extra={"requested": want, "error": str(e)})
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # Linux doubles the value it stores (half is for its own bookkeeping) and reports that.
        if want > 0 and granted // 2 < want:
            self.settings.logger.warning(
                "the kernel granted a smaller StatsD receive buffer than requested; raise net.core.rmem_max "
                "(or run with CAP_NET_ADMIN) to avoid drops under bursts",
                extra={"requested": want, "granted": granted})
        return granted

    async def shutdown(self) -> None:
        """Stop reading (after draining what the kernel holds), stop the schedule, flush what is aggregated."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._drain_all(sock)
            final_drops = self._read_drops(sock)
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
            self._drops_gauge.set_function(lambda: final_drops)
        self._stop.set()
        task, self._flush_task = self._flush_task, None
        if task is not None:
            await task
        await self._flush()
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    # -- receive path ---------------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        sock = self._sock
        if sock is not None:
            self._drain(sock)

    def _drain(self, sock: socket.socket) -> int:
        """Read up to _MAX_DATAGRAMS_PER_WAKEUP datagrams without blocking, parse them as one batch; return how many."""
        recv = sock.recv
        size = self._max_packet + 1  # one byte more tells an oversized datagram from a full one
        batch: list[bytes] = []
        append = batch.append
        try:
            for _ in range(_MAX_DATAGRAMS_PER_WAKEUP):
                append(recv(size))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
                self._log.warning("statsd socket read failed", key="recv", extra={"error": str(e)})
        if batch:
            self._ingest(batch)
        return len(batch)

    def _drain_all(self, sock: socket.socket) -> None:
        """Read everything the kernel holds now (bounded: a sender faster than us cannot keep this going)."""
        for _ in range(64):
            if self._drain(sock) < _MAX_DATAGRAMS_PER_WAKEUP:
                return

    def _ingest(self, batch: list[bytes]) -> None:
        res = ParseResult()
        oversized = 0
        try:
            limit = self._max_packet
            for i, d in enumerate(batch):
                if len(d) > limit:
                    oversized += 1
                    cut = d.rfind(b"\n", 0, limit)
                    batch[i] = d[:cut] if cut > 0 else b""
            self._parser.parse(batch, res)
            self._agg.add(res)
        except Exception as e:
            self._obs.refused(Signal.METRICS, max(len(batch), 1), "internal_error")
            self._log.error("statsd batch could not be parsed (a bug): its datagrams are lost", key="internal",
                            extra={"error": f"{type(e).__name__}: {e}", "datagrams": len(batch)})
            return
        self._datagrams_metric.inc(len(batch))
        if res.lines:
            self.lines_received += res.lines
            self._lines_metric.inc(res.lines)
        if oversized:
            res.refused[PACKET_TOO_LARGE] = res.refused.get(PACKET_TOO_LARGE, 0) + oversized
        if res.refused:
            for reason, n in res.refused.items():
                self._obs.refused(Signal.METRICS, n, reason)
                example = res.examples.get(reason)
                self._log.warning("malformed statsd line(s) skipped", key=f"refused:{reason}",
                                  extra={"reason": reason, "lines": n,
                                         **({"example": example} if example is not None else {})})
        if res.ignored:
            for reason, n in res.ignored.items():
                self._ignored.labels(self._rid, reason).inc(n)
        if self._waiters:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        still = []
        for n, fut in self._waiters:
            if fut.done():
                continue
            if self.lines_received >= n:
                fut.set_result(None)
            else:
                still.append((n, fut))
        self._waiters = still

    async def wait_for_lines(self, n: int, timeout: float = 5.0) -> None:
        """Wait until `n` good lines in total have been parsed (for tests and tools)."""
        if self.lines_received >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        async with asyncio.timeout(timeout):
            await fut

    # -- flush path ----------------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = float(self.cfg.aggregation_interval)
        next_at = loop.time() + interval
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(max(0.0, next_at - loop.time())):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            next_at += interval
            if next_at <= loop.time():  # fell behind (a long stall): skip, do not burst
                next_at = loop.time() + interval
            try:
                await self._flush()
            except Exception as e:
                self._log.error("statsd flush failed (a bug): the interval's points are lost", key="flush",
                                extra={"error": f"{type(e).__name__}: {e}"})

    async def force_flush(self) -> None:
        """Read what the kernel holds, then flush the interval now (tests and tools)."""
        if self._sock is not None:
            self._drain_all(self._sock)
        await self._flush()

    async def _flush(self) -> None:
        self._check_drops()
        req = self._agg.flush(self._wall())
        if req is None:
            return
        payload = Payload(Signal.METRICS, message=req, receiver=self._rid)
        if self._consumer is None:
            self._obs.refused(Signal.METRICS, payload.items, "no_pipeline")
            return
        result = await deliver(self._consumer, payload, self._obs)
        if result.outcome is not Outcome.OK:
            # UDP cannot push back: the interval's points are lost (and counted as refused by deliver).
            self._log.warning("statsd interval could not be delivered; its points are lost", key="deliver",
                              extra={"outcome": result.outcome.value, "points": payload.items,
                                     "error": result.message})

    # -- kernel drops ----------------------------------------------------------------------------------------
    def _read_drops(self, sock: socket.socket) -> int:
        v = socket_kernel_drops(sock)
        return -1 if v is None else v

    def _current_drops(self) -> float:
        sock = self._sock
        return float(self._read_drops(sock)) if sock is not None else float(self._last_drops)

    def _check_drops(self) -> None:
        sock = self._sock
        if sock is None:
            return
        drops = socket_kernel_drops(sock)
        if drops is None:
            return
        if drops > self._last_drops:
            self._log.warning("the kernel dropped statsd datagrams: the socket receive buffer was full",
                              key="kernel_drops",
                              extra={"dropped": drops - self._last_drops, "total": drops,
                                     "socket_buffer_bytes": self.socket_buffer_bytes})
        self._last_drops = drops


def create(settings: Settings, cfg: StatsDReceiverConfig, consumers: Mapping[Signal, Consumer]) -> StatsDReceiver:
    return StatsDReceiver(settings, cfg, consumers)


FACTORY = ReceiverFactory(
    type="statsd",
    config_type=StatsDReceiverConfig,
    signals={Signal.METRICS: Stability.BETA},
    create=create,
    description="Receives StatsD / DogStatsD lines over UDP (8125) and aggregates them into OTLP metrics.",
)

__all__ = ["FACTORY", "StatsDReceiver", "socket_kernel_drops"]
