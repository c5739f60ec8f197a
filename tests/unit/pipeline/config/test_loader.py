from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.component import ComponentID
from pipeline.config.loader import load, load_text
from pipeline.config.schema import PipelineID
from pipeline.config.types import parse_duration, parse_size
from pipeline.errors import ConfigError
from pipeline.model import Signal
from tests.testdata.fakes import factories

GOOD = """
receivers:
  fake: {}
  fake/two: {endpoint: "127.0.0.1:5000"}
processors:
  tag: {value: x}
exporters:
  sink: {api_key: "${env:API_KEY:-dflt}"}
  sink/other: {timeout: 2s}
service:
  pipelines:
    traces: {receivers: [fake], processors: [tag], exporters: [sink, sink/other]}
    metrics/custom: {receivers: [fake, fake/two], exporters: [sink]}
"""


def issues_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_text(text, factories(), env=env or {})
    return [str(i) for i in ei.value.issues if not i.warning]


def test_good_config_decodes_typed() -> None:
    cfg = load_text(GOOD, factories(), env={})
    assert set(cfg.pipelines) == {PipelineID(Signal.TRACES), PipelineID(Signal.METRICS, "custom")}
    assert cfg.exporters[ComponentID("sink", "other")].timeout == 2.0
    assert cfg.exporters[ComponentID("sink")].api_key.reveal() == "dflt"
    assert str(cfg.exporters[ComponentID("sink")].api_key) == "[REDACTED]"
    assert cfg.service.shutdown_timeout == 25.0
    assert cfg.receivers[ComponentID("fake")].nested.size == 1024


def test_env_expansion_forms() -> None:
    text = GOOD.replace('"${env:API_KEY:-dflt}"', '"k-${API_KEY}-$${literal}"')
    cfg = load_text(text, factories(), env={"API_KEY": "secret"})
    assert cfg.exporters[ComponentID("sink")].api_key.reveal() == "k-secret-${literal}"


def test_unset_env_without_default_names_variable_and_path() -> None:
    errs = issues_of(GOOD.replace("${env:API_KEY:-dflt}", "${env:DD_API_KEY}"))
    assert any("exporters.sink.api_key" in e and "DD_API_KEY is not set" in e for e in errs), errs


def test_all_problems_reported_at_once_with_paths_and_suggestions() -> None:
    text = """
receivers:
  fake: {endpont: "x:1", nested: {size: lots}}
  nope: {}
processors:
  tag: {value: 3}
  metricsonly: {}
exporters:
  sink: {timeout: 5, sending_queue: {queue_size: 0}}
service:
  pipelines:
    traces: {receivers: [fake], processors: [tag, metricsonly], exporters: [snk]}
    tracez: {receivers: [fake], exporters: [sink]}
"""
    errs = issues_of(text)
    joined = "\n".join(errs)
    assert "receivers.fake.endpont: unknown key 'endpont'; did you mean 'endpoint'?" in joined
    assert "receivers.fake.nested.size: invalid size 'lots'" in joined
    assert "receivers.nope: unknown receiver type 'nope'" in joined
    assert "exporters.sink.timeout: a duration needs a unit" in joined
    assert "exporters.sink.sending_queue.queue_size: must be at least 1" in joined
    assert "service.pipelines.traces.processors[1]: processor 'metricsonly' does not support traces" in joined
    assert "service.pipelines.traces.exporters[0]: references exporter 'snk' which is not configured" in joined
    assert "did you mean 'sink'?" in joined
    assert "service.pipelines.tracez: unknown pipeline signal 'tracez'; did you mean 'traces'?" in joined
    # value 3 for a str field is accepted as "3" (numbers convert losslessly to strings)
    assert len(errs) >= 8


def test_wrong_types_and_enum_values() -> None:
    errs = issues_of(GOOD.replace("tag: {value: x}", "tag: {value: [1, 2]}"))
    assert any("processors.tag.value: expected a string, got a list" in e for e in errs), errs


def test_no_pipelines_is_an_error() -> None:
    errs = issues_of("receivers: {fake: {}}\nexporters: {sink: {}}\nservice: {}\n")
    assert any("service.pipelines: no pipelines are configured" in e for e in errs)


def test_unused_component_is_a_warning() -> None:
    cfg = load_text(GOOD.replace("exporters:\n", "exporters:\n  sink/unused: {}\n"), factories(), env={})
    assert [w.path for w in cfg.warnings] == ["exporters.sink/unused"]


def test_port_clash_detected() -> None:
    text = GOOD.replace('fake: {}', 'fake: {endpoint: "127.0.0.1:5000"}')
    errs = issues_of(text)
    assert any("tcp port 5000 is already used by receivers.fake.endpoint" in e for e in errs), errs


def test_unknown_top_level_key_and_yaml_syntax() -> None:
    errs = issues_of(GOOD + "servce: {}\n")
    assert any("unknown top-level key 'servce'; did you mean 'service'?" in e for e in errs)
    errs = issues_of("receivers: [unclosed\n")
    assert any("invalid YAML: line" in e for e in errs)


def test_files_merge_in_order_and_errors_name_the_file(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(GOOD)
    b.write_text(textwrap.dedent("""
        exporters:
          sink/other: {timeout: 7s}
          sink: {timeout: bogus}
    """))
    with pytest.raises(ConfigError) as ei:
        load([str(a), str(b)], factories(), env={})
    (issue,) = [i for i in ei.value.issues if not i.warning]
    assert issue.file == str(b) and issue.path == "exporters.sink.timeout"
    b.write_text("exporters:\n  sink/other: {timeout: 7s}\n")
    cfg = load([str(a), str(b)], factories(), env={})
    assert cfg.exporters[ComponentID("sink", "other")].timeout == 7.0
    # merged maps keep keys from the earlier file
    assert cfg.exporters[ComponentID("sink")].api_key.reveal() == "dflt"


@pytest.mark.parametrize("text,seconds", [("200ms", 0.2), ("10s", 10), ("5m", 300), ("1h30m", 5400), ("0", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,n", [("4MiB", 4 << 20), ("512KiB", 512 << 10), ("1GB", 10**9), (1234, 1234),
                                    ("20MiB", 20 << 20)])
def test_sizes(text: object, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["5", "fast", "1x", 5])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)
