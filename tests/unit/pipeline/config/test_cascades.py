"""Validation without cascades: one mistake gives one error, at the place the mistake is (issue 16)."""
from __future__ import annotations

from pathlib import Path

import pytest

from otelpipe import components
from pipeline.config.loader import load, load_text
from pipeline.errors import ConfigError

FMAP = components.factories()


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_text(text, FMAP, env={})
    return [str(i) for i in ei.value.issues if not i.warning]


def test_an_unknown_component_type_is_reported_once_not_again_in_every_pipeline() -> None:
    found = errors("""
receivers: {otlp: {}}
exporters: {otlpp/tempo: {endpoint: "tempo:4317"}}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [otlpp/tempo]}
    logs: {receivers: [otlp], exporters: [otlpp/tempo]}
""")
    assert len(found) == 1, found
    assert "exporters.otlpp/tempo: unknown exporter type 'otlpp'; did you mean 'otlp'?" in found[0]


def test_a_renamed_collector_component_gets_a_renamed_hint_not_did_you_mean() -> None:
    found = errors("""
receivers: {otlp: {}}
exporters: {logging: {verbosity: detailed}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [logging]}}}
""")
    assert found == ["<config>: error: exporters.logging: unknown exporter type 'logging': the Collector renamed it "
                     "'debug' (v0.86); use 'debug'"]
    jaeger = errors("""
receivers: {otlp: {}}
exporters: {jaeger: {endpoint: "jaeger:14250"}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [jaeger]}}}
""")
    assert len(jaeger) == 1 and "Jaeger ingests OTLP, use 'otlp'" in jaeger[0] and "did you mean" not in jaeger[0]


def test_a_misspelt_pipeline_key_still_has_its_contents_checked() -> None:
    found = errors("""
receivers: {otlp: {}}
exporters: {debug: {}}
service: {pipelines: {tracs: {receivers: [otlp], exporters: [debgu]}}}
""")
    assert any("service.pipelines.tracs: unknown pipeline signal 'tracs'; did you mean 'traces'?" in e
               for e in found), found
    assert any("service.pipelines.tracs.exporters[0]: references exporter 'debgu' which is not configured" in e
               for e in found), found


def test_a_yaml_syntax_error_is_reported_alone_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers:\n  otlp: {}\nservice:\n  pipelines: [unclosed\n")
    with pytest.raises(ConfigError) as ei:
        load([str(bad)], FMAP, env={})
    issues = [str(i) for i in ei.value.issues]
    assert len(issues) == 1 and issues[0].startswith(f"{bad}: error: invalid YAML: line "), issues


def test_a_missing_file_is_reported_alone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load([str(tmp_path / "nope.yaml")], FMAP, env={})
    issues = [str(i) for i in ei.value.issues]
    assert len(issues) == 1 and "cannot read config file" in issues[0], issues
