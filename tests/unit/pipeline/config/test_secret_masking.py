"""`otelpipe validate` (and a refused start or reload) never prints a credential (issue 14).

The whole shipped component set is used, so every component's own messages are covered too;
the CLI is run as a real process for the end-to-end case.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otelpipe import components
from pipeline.config.loader import load_text
from pipeline.config.masking import env_values, mask_issue
from pipeline.errors import ConfigError, ConfigIssue

ROOT = Path(__file__).resolve().parents[4]
TOKEN = "tOk3n-from-env-77"
LITERAL = "L1teral-s3cret"


def problems(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_text(textwrap.dedent(text), components.factories(), env or {})
    return "\n".join(str(i) for i in err.value.issues)


BASE = """
receivers:
  otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [otlphttp]}
"""


@pytest.mark.parametrize("exporter", [
    # an environment value under a key of another type is quoted by the decoder
    '{endpoint: "http://h:1", timeout: "${env:TOKEN}"}',
    '{endpoint: "http://h:1", encoding: "${env:TOKEN}"}',
    '{endpoint: "http://h:1", sending_queue: {queue_size: "${env:TOKEN}"}}',
    '{endpoint: "http://h:1", compression: "x${env:TOKEN}"}',
    # inside a URL, as user info and as a query value
    '{endpoint: "http://user:${env:TOKEN}@h:1/?api_key=${env:TOKEN}", headers: {Authorization: {x: 1}}, '
    'compression: bogus}',
])
def test_an_environment_value_is_never_quoted_back(exporter: str) -> None:
    out = problems(f"exporters:\n  otlphttp: {exporter}\n" + BASE, {"TOKEN": TOKEN})
    assert "error" in out and TOKEN not in out


def test_a_literal_value_under_a_credential_key_is_masked() -> None:
    issue = mask_issue(ConfigIssue("exporters.x.headers.Authorization", f"invalid value '{LITERAL}': no"), [])
    assert LITERAL not in issue.message and "[REDACTED]" in issue.message
    untouched = ConfigIssue("exporters.x.compression", "invalid value 'zip': must be one of 'gzip', 'none'")
    assert mask_issue(untouched, []) is untouched


def test_free_text_credentials_in_a_message_are_masked() -> None:
    issue = mask_issue(ConfigIssue("a.b", f"server said: Authorization: Bearer {LITERAL}"), [])
    assert LITERAL not in issue.message


def test_only_referenced_environment_values_are_masked_and_not_ports_or_short_ones() -> None:
    data = {"a": "${env:TOKEN}", "b": ["x ${PORT} y", {"c": "${env:SHORT}"}], "d": "no reference"}
    env = {"TOKEN": TOKEN, "PORT": "4317", "SHORT": "on", "OTHER": "not-referenced"}
    assert env_values(data, env) == [TOKEN]


def test_an_authenticator_must_be_configured_and_enabled() -> None:
    out = problems("""
    extensions:
      bearertokenauth: {token: x}
    receivers:
      otlp:
        protocols:
          grpc: {endpoint: "127.0.0.1:0", auth: {authenticator: bearertokenauth}}
          http: {endpoint: "127.0.0.1:0", auth: {authenticator: bearertokenath}}
    exporters:
      otlphttp: {endpoint: "http://h:1", auth: {authenticator: bearertokenauth}}
      otlp: {endpoint: "h:4317", auth: {authenticator: ""}}
    service:
      pipelines:
        traces: {receivers: [otlp], exporters: [otlphttp, otlp]}
    """)
    assert ("receivers.otlp.protocols.grpc.auth.authenticator: extension 'bearertokenauth' is configured but not "
            "enabled") in out
    assert "receivers.otlp.protocols.http.auth.authenticator: references extension 'bearertokenath' which is not " \
           "configured under 'extensions'; did you mean 'bearertokenauth'?" in out
    assert "exporters.otlphttp.auth.authenticator: extension 'bearertokenauth' is configured but not enabled" in out
    assert "exporters.otlp.auth.authenticator: is required" in out


def test_tls_server_config_is_checked(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    out = problems(f"""
    receivers:
      otlp:
        protocols:
          grpc: {{endpoint: "127.0.0.1:0", tls: {{cert_file: {cert}, key_file: {cert}, max_version: "1.2"}}}}
          http: {{endpoint: "127.0.0.1:0", tls: {{cert_file: {cert}, min_version: 1.3, max_version: 1.2,
                                                   client_ca_file: /nope}}}}
    exporters:
      otlphttp: {{endpoint: "http://h:1"}}
    service:
      pipelines:
        traces: {{receivers: [otlp], exporters: [otlphttp]}}
    """)
    assert "grpc.tls.max_version: the gRPC listener always accepts TLS 1.2 and 1.3" in out
    assert "http.tls.key_file: is required" in out
    assert "http.tls.client_ca_file: file '/nope' does not exist" in out
    assert "http.tls.max_version: 1.2 is lower than min_version 1.3" in out


def test_validate_cli_prints_no_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(f"""
    extensions:
      bearertokenauth: {{token: "${{env:TOKEN}}", scheme: [1]}}
    receivers:
      otlp:
        protocols:
          http: {{endpoint: "127.0.0.1:0", max_connections: "${{env:TOKEN}}"}}
    exporters:
      otlphttp:
        endpoint: "http://u:{LITERAL}@h:1"
        headers: {{Authorization: "Bearer {LITERAL}", X-Api-Key: [1]}}
        timeout: "${{env:TOKEN}}"
    service:
      extensions: [bearertokenauth]
      pipelines:
        traces: {{receivers: [otlp], exporters: [otlphttp]}}
    """))
    run = subprocess.run([sys.executable, "-m", "otelpipe.cli", "validate", "--config", str(cfg)], cwd=ROOT,
                         capture_output=True, text=True, env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert run.returncode == 1
    assert "invalid configuration" in run.stderr
    assert TOKEN not in run.stdout + run.stderr and LITERAL not in run.stdout + run.stderr
