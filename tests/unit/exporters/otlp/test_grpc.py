"""OTLP/gRPC exporter against an in-process grpc.aio server running the real OTLP servicers."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from exporters.otlp import grpc as otlp
from exporters.otlp.grpc import OTLPExporter, OTLPExporterConfig, grpc_target
from pipeline.component import Kind, ReceiverFactory, Stability, make_factory_map
from pipeline.config.loader import load_text
from pipeline.config.types import Duration, Secret, decode_dataclass
from pipeline.errors import (
    ConfigError,
    ConfigIssue,
    PartialSuccessError,
    PermanentError,
    RetryableError,
)
from pipeline.exporterhelper import ExporterHelper
from pipeline.exporterhelper.queue import QueueConfig
from pipeline.exporterhelper.retry import RetryConfig
from pipeline.model import Payload, Signal
from pipeline.net.tls import TLSClientConfig
from pipeline.telemetry import Telemetry
from pipeline.testing import (
    make_logs,
    make_metrics,
    make_traces,
    nop_host,
    nop_settings,
    payload,
)

Action = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


# ---------------------------------------------------------------- fake backend

def fail(code: grpc.StatusCode, message: str = "backend says no", retry_delay: float | None = None) -> Action:
    """An action that aborts the call with `code`, optionally carrying google.rpc.RetryInfo."""
    async def act(ctx: grpc.aio.ServicerContext) -> None:
        trailing: tuple[tuple[str, bytes], ...] = ()
        if retry_delay is not None:
            status = status_pb2.Status(code=code.value[0], message=message)
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromNanoseconds(int(retry_delay * 1e9))
            status.details.add().Pack(info)
            trailing = (("grpc-status-details-bin", status.SerializeToString()),)
        await ctx.abort(code, message, trailing_metadata=trailing)
    return act


@dataclass
class Backend:
    """Records what the OTLP servicers receive; `script` fails the next calls in order."""

    port: int = 0
    received: dict[Signal, list[object]] = field(default_factory=lambda: {s: [] for s in Signal})
    metadata: list[dict[str, str]] = field(default_factory=list)
    script: list[Action] = field(default_factory=list)
    partial: tuple[int, str] | None = None
    calls: int = 0
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, signal: Signal, request: object, ctx: grpc.aio.ServicerContext) -> object:
        self.calls += 1
        self.metadata.append({m.key: m.value for m in ctx.invocation_metadata() or ()})
        if self.script:
            await self.script.pop(0)(ctx)
        async with self.cond:
            self.received[signal].append(request)
            self.cond.notify_all()
        response = signal.response_type()
        if self.partial is not None:
            rejected, message = self.partial
            field_name = {Signal.TRACES: "rejected_spans", Signal.METRICS: "rejected_data_points",
                          Signal.LOGS: "rejected_log_records"}[signal]
            setattr(response.partial_success, field_name, rejected)
            response.partial_success.error_message = message
        return response

    def items(self, signal: Signal) -> int:
        return sum(Payload(signal, message=m).items for m in self.received[signal])  # type: ignore[arg-type]

    async def wait_for_items(self, signal: Signal, n: int) -> None:
        async with asyncio.timeout(5):
            async with self.cond:
                await self.cond.wait_for(lambda: self.items(signal) >= n)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, b: Backend) -> None:
        self.b = b

    async def Export(self, request, context):  # type: ignore[no-untyped-def]
        return await self.b.handle(Signal.TRACES, request, context)


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, b: Backend) -> None:
        self.b = b

    async def Export(self, request, context):  # type: ignore[no-untyped-def]
        return await self.b.handle(Signal.METRICS, request, context)


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, b: Backend) -> None:
        self.b = b

    async def Export(self, request, context):  # type: ignore[no-untyped-def]
        return await self.b.handle(Signal.LOGS, request, context)


async def start_backend(options: list[tuple[str, object]] | None = None,
                        credentials: grpc.ServerCredentials | None = None,
                        address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, Backend]:
    b = Backend()
    server = grpc.aio.server(options=options)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(b), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(b), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(b), server)
    if credentials is None:
        b.port = server.add_insecure_port(address)
    else:
        b.port = server.add_secure_port(address, credentials)
    await server.start()
    return server, b


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server, b = await start_backend()
    yield b
    await server.stop(None)


def config(port: int, **kw: object) -> OTLPExporterConfig:
    kw.setdefault("tls", TLSClientConfig(insecure=True))
    return OTLPExporterConfig(endpoint=f"127.0.0.1:{port}", **kw)  # type: ignore[arg-type]


@pytest.fixture
async def make_exporter() -> AsyncIterator[Callable[..., Awaitable[OTLPExporter]]]:
    started: list[OTLPExporter] = []

    async def make(cfg: OTLPExporterConfig, signal: Signal = Signal.TRACES) -> OTLPExporter:
        exp = otlp.create(nop_settings("otlp", Kind.EXPORTER, signal), cfg)
        await exp.start(nop_host())
        started.append(exp)
        return exp

    yield make
    for exp in started:
        await exp.shutdown()


# ---------------------------------------------------------------- config

def decode(data: object) -> tuple[OTLPExporterConfig, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    cfg = decode_dataclass(OTLPExporterConfig, data, "exporters.otlp", issues)
    return cfg, issues


def test_config_defaults() -> None:
    cfg, issues = decode({"endpoint": "collector:4317"})
    assert issues == []
    assert cfg.compression == "gzip"
    assert cfg.balancer_name is None
    assert cfg.headers == {}
    assert cfg.tls.insecure is False
    assert cfg.timeout == 5.0
    assert cfg.sending_queue.enabled and cfg.retry_on_failure.enabled


def test_config_endpoint_is_required() -> None:
    _, issues = decode({})
    assert [i.path for i in issues] == ["exporters.otlp.endpoint"]
    assert "is required" in issues[0].message and "4317" in issues[0].message


@dataclass(frozen=True, slots=True, kw_only=True)
class NopReceiverConfig:
    pass


def test_config_typo_and_bad_enum_through_loader() -> None:
    nop = ReceiverFactory(type="nop", config_type=NopReceiverConfig,
                  signals={Signal.TRACES: Stability.STABLE}, create=lambda *a: None)
    yaml = """
receivers: {nop: {}}
exporters:
  otlp/tempo:
    endpiont: tempo:4317
    compression: zstd
    timeout: 2s
service:
  pipelines:
    traces: {receivers: [nop], exporters: [otlp/tempo]}
"""
    with pytest.raises(ConfigError) as err:
        load_text(yaml, make_factory_map([nop, otlp.FACTORY]))
    text = str(err.value)
    assert "exporters.otlp/tempo.endpiont: unknown key 'endpiont'; did you mean 'endpoint'?" in text
    assert "exporters.otlp/tempo.compression: invalid value 'zstd': must be one of 'gzip', 'none'" in text

    ok = load_text(yaml.replace("endpiont", "endpoint").replace("zstd", "none"), make_factory_map([nop, otlp.FACTORY]))
    cfg = next(iter(ok.exporters.values()))
    assert isinstance(cfg, OTLPExporterConfig)
    assert (cfg.endpoint, cfg.compression, cfg.timeout) == ("tempo:4317", "none", 2.0)


@pytest.mark.parametrize(("endpoint", "insecure_flag", "target", "insecure"), [
    ("collector:4317", False, "collector:4317", False),
    ("collector:4317", True, "collector:4317", True),
    ("http://collector:4317", False, "collector:4317", True),
    ("https://collector:4317", True, "collector:4317", False),
    ("https://collector:4317/", False, "collector:4317", False),
    ("[::1]:4317", True, "[::1]:4317", True),
])
def test_endpoint_schemes_choose_tls(endpoint: str, insecure_flag: bool, target: str, insecure: bool) -> None:
    assert grpc_target(endpoint, TLSClientConfig(insecure=insecure_flag)) == (target, insecure)


@pytest.mark.parametrize(("endpoint", "fragment"), [
    ("collector", "missing ':port'"),
    ("ftp://collector:4317", "unsupported scheme 'ftp'"),
    ("https://collector:4317/v1/traces", "has no path"),
    (":4317", "host is missing"),
    ("collector:99999", "0-65535"),
])
def test_config_rejects_bad_endpoints(endpoint: str, fragment: str) -> None:
    _, issues = decode({"endpoint": endpoint})
    assert [i.path for i in issues] == ["exporters.otlp.endpoint"]
    assert fragment in issues[0].message


@pytest.mark.parametrize(("endpoint", "fragment"), [
    ("http://user:s3cr3tpw@collector:4317", "credentials"),
    ("https://s3cr3tpw@collector:4317", "credentials"),
    ("user:s3cr3tpw@collector:4317", "credentials"),
    ("collector:4317?api_key=K123", "query"),
    ("http://collector:4317?api_key=K123", "query"),
    ("https://collector:4317/otlp?api_key=K123", "query"),
    ("http://user:s3cr3tpw@collector:4317/v1/traces?api_key=K123", "credentials"),
    ("collector:4317#K123", "fragment"),
])
def test_config_endpoint_with_secrets_is_rejected_without_printing_them(endpoint: str, fragment: str) -> None:
    _, issues = decode({"endpoint": endpoint})
    assert [i.path for i in issues] == ["exporters.otlp.endpoint"]
    message = issues[0].message
    assert fragment in message
    assert "s3cr3tpw" not in message and "K123" not in message
    assert "collector:4317" in message  # the operator can still tell which endpoint is meant


def test_config_rejects_bad_headers_and_skip_verify() -> None:
    _, issues = decode({"endpoint": "c:4317", "headers": {"bad key": "x", "grpc-timeout": "1", "ok": "line\nbreak"},
                        "tls": {"insecure_skip_verify": True}})
    assert sorted(i.path for i in issues) == ["exporters.otlp.headers.bad key", "exporters.otlp.headers.grpc-timeout",
                                              "exporters.otlp.headers.ok", "exporters.otlp.tls.insecure_skip_verify"]


def test_config_balancer_name() -> None:
    cfg, issues = decode({"endpoint": "c:4317", "balancer_name": "round_robin"})
    assert issues == [] and cfg.balancer_name == "round_robin"
    _, issues = decode({"endpoint": "c:4317", "balancer_name": "random"})
    assert [i.path for i in issues] == ["exporters.otlp.balancer_name"]
    assert "must be one of 'pick_first', 'round_robin'" in issues[0].message


def test_headers_are_secrets() -> None:
    cfg, _ = decode({"endpoint": "c:4317", "headers": {"Authorization": "Bearer hunter2"}})
    assert "hunter2" not in repr(cfg)
    assert cfg.headers["Authorization"] == Secret("Bearer hunter2")


# ---------------------------------------------------------------- sending

@pytest.mark.parametrize("signal", list(Signal))
async def test_sends_wire_bytes_without_reencoding(backend: Backend, make_exporter, signal: Signal) -> None:
    exp = await make_exporter(config(backend.port), signal)
    builders = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}
    decoded = builders[signal](3)
    wire = builders[signal](7, service="from-the-wire").SerializeToString()
    # A payload whose cached bytes differ from its decoded message: only sending the cached bytes
    # (no re-encode) makes the backend see the 7-item request.
    p = Payload(signal, message=decoded, raw=wire, items=7)
    await exp.push(p)
    [got] = backend.received[signal]
    assert got.SerializeToString() == wire  # type: ignore[attr-defined]


async def test_untouched_payload_arrives_byte_identical(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(config(backend.port))
    wire = make_traces(50, attrs={"http.route": "/a", "n": 3}).SerializeToString()
    await exp.push(Payload(Signal.TRACES, raw=wire))
    assert backend.received[Signal.TRACES][0].SerializeToString() == wire  # type: ignore[attr-defined]


async def test_headers_arrive_as_lowercase_metadata(backend: Backend, make_exporter) -> None:
    cfg = config(backend.port, headers={"X-Scope-OrgID": Secret("tenant-1"), "authorization": Secret("Bearer t")})
    exp = await make_exporter(cfg)
    await exp.push(payload(Signal.TRACES))
    md = backend.metadata[0]
    assert md["x-scope-orgid"] == "tenant-1"
    assert md["authorization"] == "Bearer t"
    assert md["user-agent"].startswith("otelpipe/")


async def test_round_robin_balancer_delivers(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(config(backend.port, balancer_name="round_robin"))
    await exp.push(payload(Signal.LOGS))
    assert backend.items(Signal.LOGS) == 10


async def test_gzip_is_used_and_none_is_not(make_exporter) -> None:
    # A server that only accepts uncompressed messages tells whether the client compressed.
    server, b = await start_backend(options=[("grpc.compression_enabled_algorithms_bitset", 1)])
    try:
        gz = await make_exporter(config(b.port, compression="gzip"))
        with pytest.raises(PermanentError, match="UNIMPLEMENTED.*gzip"):
            await gz.push(payload(Signal.TRACES))
        plain = await make_exporter(config(b.port, compression="none"))
        await plain.push(payload(Signal.TRACES))
        assert len(b.received[Signal.TRACES]) == 1
    finally:
        await server.stop(None)


async def test_gzip_round_trip(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(config(backend.port, compression="gzip"))
    wire = make_metrics(200).SerializeToString()
    await exp.push(Payload(Signal.METRICS, raw=wire))
    assert backend.received[Signal.METRICS][0].SerializeToString() == wire  # type: ignore[attr-defined]


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("code", sorted(otlp.RETRYABLE_CODES, key=lambda c: c.name))
async def test_retryable_codes(backend: Backend, make_exporter, code: grpc.StatusCode) -> None:
    exp = await make_exporter(config(backend.port))
    backend.script = [fail(code)]
    with pytest.raises(RetryableError) as err:
        await exp.push(payload(Signal.TRACES))
    assert err.value.retry_after is None
    assert code.name in str(err.value)


async def test_unavailable_honours_retry_info(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(config(backend.port))
    backend.script = [fail(grpc.StatusCode.UNAVAILABLE, "overloaded", retry_delay=2.5)]
    with pytest.raises(RetryableError) as err:
        await exp.push(payload(Signal.TRACES))
    assert err.value.retry_after == pytest.approx(2.5)


async def test_resource_exhausted_with_retry_info_is_retryable(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(config(backend.port))
    backend.script = [fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_delay=1.25)]
    with pytest.raises(RetryableError) as err:
        await exp.push(payload(Signal.LOGS))
    assert err.value.retry_after == pytest.approx(1.25)
    assert "slow down" in str(err.value)


async def test_resource_exhausted_without_retry_info_is_permanent(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(config(backend.port))
    backend.script = [fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota gone")]
    with pytest.raises(PermanentError, match="RESOURCE_EXHAUSTED: quota gone"):
        await exp.push(payload(Signal.TRACES))


async def test_backend_error_text_never_carries_url_secrets(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(config(backend.port))
    backend.script = [fail(grpc.StatusCode.UNAUTHENTICATED,
                           "token rejected for https://user:s3cr3tpw@auth.example/check?api_key=K123")]
    with pytest.raises(PermanentError, match="token rejected for https://") as err:
        await exp.push(payload(Signal.TRACES))
    assert "auth.example/check" in str(err.value)
    assert "s3cr3tpw" not in str(err.value) and "K123" not in str(err.value)


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED])
async def test_other_codes_are_permanent(backend: Backend, make_exporter, code: grpc.StatusCode) -> None:
    exp = await make_exporter(config(backend.port))
    backend.script = [fail(code, "nope")]
    with pytest.raises(PermanentError, match=f"{code.name}: nope"):
        await exp.push(payload(Signal.TRACES))


@pytest.mark.parametrize("signal", list(Signal))
async def test_partial_success_is_reported(backend: Backend, make_exporter, signal: Signal) -> None:
    exp = await make_exporter(config(backend.port), signal)
    backend.partial = (3, "3 items had no timestamp")
    with pytest.raises(PartialSuccessError) as err:
        await exp.push(payload(signal))
    assert err.value.rejected == 3
    assert "no timestamp" in str(err.value)


async def test_partial_success_warning_without_rejections_is_success(backend: Backend, make_exporter) -> None:
    exp = await make_exporter(config(backend.port))
    backend.partial = (0, "deprecated attribute used")
    await exp.push(payload(Signal.TRACES))
    assert len(backend.received[Signal.TRACES]) == 1


async def test_unreachable_backend_is_retryable(make_exporter) -> None:
    server, b = await start_backend()
    port = b.port
    await server.stop(None)
    exp = await make_exporter(config(port))
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        await exp.push(payload(Signal.TRACES))


async def test_push_before_start_is_retryable() -> None:
    exp = otlp.create(nop_settings("otlp", Kind.EXPORTER, Signal.TRACES), config(4317))
    with pytest.raises(RetryableError, match="not started"):
        await exp.push(payload(Signal.TRACES))


async def test_shutdown_without_start_and_twice() -> None:
    exp = otlp.create(nop_settings("otlp", Kind.EXPORTER, Signal.TRACES), config(4317))
    await exp.shutdown()
    await exp.start(nop_host())
    await exp.shutdown()
    await exp.shutdown()


# ---------------------------------------------------------------- TLS

async def test_tls_with_ca_file_and_server_name_override(server_cert, make_exporter) -> None:
    creds = grpc.ssl_server_credentials([(server_cert.key.read_bytes(), server_cert.cert.read_bytes())])
    server, b = await start_backend(credentials=creds)
    try:
        tls = TLSClientConfig(ca_file=str(server_cert.cert), server_name_override=server_cert.server_name)
        assert config(b.port, tls=tls).validate() == []
        exp = await make_exporter(config(b.port, tls=tls))
        await exp.push(payload(Signal.TRACES))
        assert len(b.received[Signal.TRACES]) == 1

        # Without the CA the handshake fails: a transient error, the data is kept for retry.
        untrusted = await make_exporter(config(b.port, tls=replace(tls, ca_file="")))
        with pytest.raises(RetryableError, match="UNAVAILABLE"):
            await untrusted.push(payload(Signal.TRACES))
        # Plain text to a TLS server fails too.
        plain = await make_exporter(config(b.port, tls=TLSClientConfig(insecure=True)))
        with pytest.raises(RetryableError):
            await plain.push(payload(Signal.TRACES))
        assert len(b.received[Signal.TRACES]) == 1
    finally:
        await server.stop(None)


# ---------------------------------------------------------------- with the exporter helper

async def test_backend_outage_loses_nothing(backend: Backend) -> None:
    tel = Telemetry(process_metrics=False)
    settings = nop_settings("otlp/tempo", Kind.EXPORTER, Signal.TRACES, telemetry=tel)
    cfg = config(backend.port,
                 retry_on_failure=RetryConfig(initial_interval=Duration(0.01), max_interval=Duration(0.02),
                                              max_elapsed_time=Duration(10)),
                 sending_queue=QueueConfig(num_consumers=2, queue_size=100))
    helper = ExporterHelper(settings, otlp.create(settings, cfg), cfg)
    await helper.start(nop_host())
    try:
        backend.script = [fail(grpc.StatusCode.UNAVAILABLE, "restarting") for _ in range(4)]
        backend.script.append(fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", retry_delay=0.01))
        for i in range(6):
            await helper.consume(Payload(Signal.TRACES, message=make_traces(5, name=f"batch{i}")))
        await backend.wait_for_items(Signal.TRACES, 30)
    finally:
        await helper.shutdown()
    names = sorted(s.name for req in backend.received[Signal.TRACES]
                   for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)  # type: ignore[attr-defined]
    assert names == sorted(f"batch{i}-{j}" for i in range(6) for j in range(5))
    assert backend.calls == 6 + 5
    assert tel.value("otelpipe_exporter_sent_spans_total", exporter="otlp/tempo") == 30
    assert tel.value("otelpipe_exporter_send_failed_spans_total", exporter="otlp/tempo") == 0


# ---------------------------------------------------------------- issue 10: the shared Endpoint

async def test_an_unbracketed_ipv6_endpoint_is_dialled_as_host_and_port(make_exporter) -> None:
    """`::1:PORT` passed validation as host `::1` but was dialled as the address `::1:PORT` (port 443)."""
    server, b = await start_backend(address="[::1]:0")
    try:
        exp = await make_exporter(OTLPExporterConfig(endpoint=f"http://::1:{b.port}"))
        await exp.push(payload(Signal.TRACES))
        assert len(b.received[Signal.TRACES]) == 1
    finally:
        await server.stop(None)


async def test_a_push_slower_than_timeout_fails_as_a_retryable_timeout(backend: Backend) -> None:
    """The exporter sets no deadline of its own: the exporter helper's `timeout` cancels the call."""
    release = asyncio.Event()

    async def hang(ctx: grpc.aio.ServicerContext) -> None:
        await release.wait()

    backend.script = [hang]
    tel = Telemetry(process_metrics=False)
    settings = nop_settings("otlp", Kind.EXPORTER, Signal.TRACES, telemetry=tel)
    cfg = config(backend.port, timeout=Duration(0.05), retry_on_failure=RetryConfig(enabled=False),
                 sending_queue=QueueConfig(enabled=False))
    helper = ExporterHelper(settings, otlp.create(settings, cfg), cfg)
    await helper.start(nop_host())
    try:
        with pytest.raises(RetryableError):
            await helper.consume(payload(Signal.TRACES, n=3))
    finally:
        release.set()
        await helper.shutdown()
    assert tel.value("otelpipe_exporter_send_failed_spans_total", exporter="otlp", reason="timeout") == 3
