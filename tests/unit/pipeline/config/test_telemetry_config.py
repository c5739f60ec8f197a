"""`service.telemetry.metrics`: the admin address from `address` or from the Collector's current `readers` form."""
from __future__ import annotations

import pytest

from pipeline.config.loader import load_text
from pipeline.errors import ConfigError
from pipeline.net.endpoint import Endpoint
from tests.testdata.fakes import factories

BASE = """
receivers: {fake: {}}
exporters: {sink: {}}
service:
  pipelines:
    traces: {receivers: [fake], exporters: [sink]}
  telemetry:
    metrics:
"""


def admin(metrics_yaml: str) -> Endpoint:
    cfg = load_text(BASE + metrics_yaml, factories(), env={})
    return cfg.service.telemetry.metrics.address


def test_the_collectors_pull_reader_sets_the_admin_address() -> None:
    readers = """      level: detailed
      readers:
        - pull:
            exporter:
              prometheus:
                host: 0.0.0.0
                port: 9464
"""
    assert admin(readers) == Endpoint.listen("0.0.0.0:9464")
    pull = "      readers: [{{pull: {{exporter: {{prometheus: {{{}}}}}}}}}]\n"
    assert admin(pull.format("port: 9465")) == Endpoint.listen("localhost:9465")
    assert admin(pull.format("host: '::1', port: 1")) == Endpoint.listen("[::1]:1")
    assert admin("      address: 127.0.0.1:7000\n") == Endpoint.listen("127.0.0.1:7000")
    assert admin("      level: basic\n") == Endpoint.listen("0.0.0.0:8888")


@pytest.mark.parametrize(("metrics_yaml", "message"), [
    ("      readers: [{periodic: {exporter: {otlp: {protocol: grpc}}}}]\n", "it does not push them"),
    ("      readers: [{pull: {exporter: {}}}]\n", "only `pull: {exporter: {prometheus"),
    ("      readers: [{pull: {exporter: {prometheus: {port: 1}}}}, {pull: {exporter: {prometheus: {port: 2}}}}]\n",
     "one pull reader"),
    ("      address: 127.0.0.1:7000\n      readers: [{pull: {exporter: {prometheus: {port: 2}}}}]\n",
     "both `address` and `readers`"),
])
def test_readers_otelpipe_cannot_honour_are_refused_with_the_reason(metrics_yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(BASE + metrics_yaml, factories(), env={})
    assert message in str(err.value) and "service.telemetry.metrics" in str(err.value)
