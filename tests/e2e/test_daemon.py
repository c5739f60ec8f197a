"""The real daemon process: SIGTERM drains everything, validate reports every problem, shipped configs load."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from otelpipe import components
from otelpipe.defaults import load_config
from pipeline.config.loader import load
from pipeline.model import Signal
from pipeline.testing import make_traces

from .backends import GrpcBackend
from .daemon import ROOT, Daemon


async def test_sigterm_delivers_batched_and_queued_data_before_exit(tmp_path: Path) -> None:
    backend = GrpcBackend()
    await backend.start()
    backend.delay = 0.2  # slow backend: data piles up in the sending queue
    cfg = tmp_path / "otelpipe.yaml"
    cfg.write_text(f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}}}
processors:
  batch: {{send_batch_size: 50, timeout: 1h}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{backend.port}", tls: {{insecure: true}}, sending_queue: {{num_consumers: 1}}}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}}}
""")
    d = Daemon("run", "--config", str(cfg))
    try:
        ready = await d.start()
        grpc_ep = ready["endpoints"]["receiver/otlp"]["grpc"]
        async with grpc.aio.insecure_channel(grpc_ep) as ch:
            stub = trace_service_pb2_grpc.TraceServiceStub(ch)
            for _ in range(23):  # 230 spans: 4 full batches queued behind a slow backend, 30 spans held by batch
                await stub.Export(make_traces(10))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{ready['admin']}/readyz") as resp:
                assert resp.status == 200
        assert backend.items[Signal.TRACES] < 230
        code = await d.stop(signal.SIGTERM)
    finally:
        d.kill()
        await backend.stop()
    assert code == 0, "\n".join(d.raw)
    assert backend.items[Signal.TRACES] == 230
    assert any(line.get("msg") == "otelpipe stopped" for line in d.lines)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otelpipe", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_validate_prints_each_problem_with_file_and_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "0.0.0.0:4317", max_recv_msg_size_mib: lots}
processors:
  batch: {send_batch_sise: 10}
exporters:
  otlp/tempo: {endpoint: "tempo:4317", compression: zstd, headers: {X-Scope-OrgID: "${env:TENANT}"}}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [otlp/tmpo]}
""")
    r = run_cli("validate", "--config", str(bad))
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    expected = [
        "receivers.otlp.protocols.grpc.max_recv_msg_size_mib: expected an integer",
        "processors.batch.send_batch_sise: unknown key 'send_batch_sise'; did you mean 'send_batch_size'?",
        "exporters.otlp/tempo.compression: invalid value 'zstd'",
        "exporters.otlp/tempo.headers.X-Scope-OrgID: environment variable TENANT is not set",
        "service.pipelines.traces.exporters[0]: references exporter 'otlp/tmpo' which is not configured",
    ]
    for e in expected:
        assert any(e in line and line.startswith(f"{bad}: error: ") for line in lines), (e, r.stderr)
    assert "did you mean 'otlp/tempo'?" in r.stderr


def test_validate_accepts_good_config_and_run_refuses_bad_one(tmp_path: Path) -> None:
    r = run_cli("validate", "--config", str(ROOT / "config" / "default.yaml"))
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: {pipelines: {}}\n")
    r = run_cli("run", "--config", str(bad))
    assert r.returncode == 1
    assert "service.pipelines: no pipelines are configured" in r.stderr


def test_components_lists_every_type() -> None:
    r = run_cli("components")
    assert r.returncode == 0
    for items in components.factories().values():
        for name in items:
            assert f"  {name} " in r.stdout


# Every otelpipe config shipped under config/ (config/prometheus/ holds Prometheus rule files, checked by promtool
# in tests/e2e/test_genai_agent_kit.py).
SHIPPED = sorted(p for p in (ROOT / "config").rglob("*.yaml") if "prometheus" not in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    env = {"DD_API_KEY": "0123456789abcdef0123456789abcdef", "PAGERDUTY_ROUTING_KEY": "y" * 32}
    cfg = load([str(path)], components.factories(), env=env)
    assert cfg.pipelines


def test_embedded_default_config_has_all_signals() -> None:
    cfg = load_config([], components.factories(), env={})
    assert {p.signal for p in cfg.pipelines} == set(Signal)
