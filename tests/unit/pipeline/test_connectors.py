"""Connectors join pipelines; extensions run beside them (the Collector's two extra component kinds)."""
from __future__ import annotations

import pytest

from pipeline.component import ComponentID, Kind
from pipeline.config.loader import load_text
from pipeline.config.schema import PipelineID
from pipeline.errors import ConfigError
from pipeline.graph import Graph
from pipeline.model import Payload, Signal
from pipeline.service import Service
from pipeline.telemetry import Telemetry
from pipeline.testing import NopHost, make_traces
from tests.testdata.fakes import SinkExporter, connector_factories

FAN = """
receivers: {fake: {}}
processors: {tag/b: {value: b}}
exporters: {sink/b: {sending_queue: {enabled: false}}, sink/c: {sending_queue: {enabled: false}},
            sink/m: {sending_queue: {enabled: false}}}
connectors: {forward: {}, spancount: {}}
service:
  pipelines:
    traces/a: {receivers: [fake], exporters: [forward, spancount]}
    traces/b: {receivers: [forward], processors: [tag/b], exporters: [sink/b]}
    traces/c: {receivers: [forward], exporters: [sink/c]}
    metrics: {receivers: [spancount], exporters: [sink/m]}
"""


def names(sink: SinkExporter) -> list[str]:
    return sorted(s.name for p in sink.payloads for rs in p.message.resource_spans for ss in rs.scope_spans
                  for s in ss.spans)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_text(text, connector_factories(), env={})
    return [str(i) for i in ei.value.issues if not i.warning]


async def test_forward_feeds_two_pipelines_each_branch_isolated() -> None:
    reg: dict[str, SinkExporter] = {}
    fmap = connector_factories(reg)
    cfg = load_text(FAN, fmap, env={})
    g = Graph(cfg, fmap, Telemetry(process_metrics=False))
    g.build()
    await g.start(NopHost())
    (recv,) = [n.component for n in g.receivers]
    await recv.consumers[Signal.TRACES].consume(Payload(Signal.TRACES, message=make_traces(2)))
    await g.shutdown()
    assert names(reg["sink/b/traces"]) == ["span-0:b", "span-1:b"]     # pipeline b changed its copy...
    assert names(reg["sink/c/traces"]) == ["span-0", "span-1"]         # ...which pipeline c never sees
    (metrics,) = reg["sink/m/metrics"].payloads                         # traces -> metrics across signals
    assert metrics.message.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].as_int == 2
    assert g.still_running() == []


def test_connector_starts_after_its_downstream_and_before_its_upstream() -> None:
    fmap = connector_factories()
    cfg = load_text(FAN, fmap, env={})
    assert cfg.pipeline_order.index(PipelineID(Signal.TRACES, "a")) < cfg.pipeline_order.index(
        PipelineID(Signal.TRACES, "b"))
    g = Graph(cfg, fmap, Telemetry(process_metrics=False))
    g.build()
    labels = [n.label for n in g.start_order()]
    fwd = labels.index("connector forward (traces -> traces)")
    assert labels.index("processor tag/b in pipeline traces/b") < fwd < labels.index("receiver fake")
    assert labels.index("connector spancount (traces -> metrics)") > labels.index("exporter sink/m (metrics)")


async def test_shutdown_flushes_upstream_through_the_connector_into_downstream() -> None:
    text = """
receivers: {fake: {}}
processors: {batch: {timeout: 1h}, batch/2: {timeout: 1h}}
exporters: {sink: {sending_queue: {enabled: false}}}
connectors: {forward: {}}
service:
  pipelines:
    traces/in: {receivers: [fake], processors: [batch], exporters: [forward]}
    traces/out: {receivers: [forward], processors: [batch/2], exporters: [sink]}
"""
    from pipeline.component import make_factory_map
    from processors import batch

    reg: dict[str, SinkExporter] = {}
    base = connector_factories(reg)
    fmap = make_factory_map([*(f for kinds in base.values() for f in kinds.values()), batch.FACTORY])
    g = Graph(load_text(text, fmap, env={}), fmap, Telemetry(process_metrics=False))
    g.build()
    await g.start(NopHost())
    (recv,) = [n.component for n in g.receivers]
    await recv.consumers[Signal.TRACES].consume(Payload(Signal.TRACES, message=make_traces(5)))
    assert reg["sink/traces"].items == 0        # held by the first batch (1h timeout)
    await g.shutdown()
    assert reg["sink/traces"].items == 5        # upstream flushed into the connector, then downstream flushed


@pytest.mark.parametrize("text, expected", [
    ("""
receivers: {fake: {}}
exporters: {sink: {}}
connectors: {forward: {}}
service: {pipelines: {traces: {receivers: [fake], exporters: [forward]}}}
""", "service.pipelines.traces.exporters[0]: connector 'forward' is used as an exporter here but is not a receiver "
     "of any pipeline"),
    ("""
receivers: {fake: {}}
exporters: {sink: {}}
connectors: {forward: {}}
service:
  pipelines:
    traces: {receivers: [fake], exporters: [sink]}
    traces/2: {receivers: [forward], exporters: [sink]}
""", "service.pipelines.traces/2.receivers[0]: connector 'forward' is used as a receiver here but is not an "
     "exporter of any pipeline"),
    ("""
receivers: {fake: {}}
exporters: {sink: {}}
connectors: {forward: {}}
service:
  pipelines:
    traces: {receivers: [fake], exporters: [forward]}
    metrics: {receivers: [forward], exporters: [sink]}
""", "service.pipelines.traces.exporters[0]: connector 'forward' cannot take traces to the pipelines it feeds "
     "(metrics); it connects: traces -> traces, metrics -> metrics, logs -> logs"),
    ("""
receivers: {fake: {}}
exporters: {sink: {}}
connectors: {spancount: {}}
service:
  pipelines:
    logs: {receivers: [fake], exporters: [spancount]}
    metrics: {receivers: [spancount], exporters: [sink]}
""", "service.pipelines.metrics.receivers[0]: connector 'spancount' cannot emit metrics from the pipelines that feed "
     "it (logs); it connects: traces -> metrics"),
    ("""
receivers: {fake: {}}
exporters: {sink: {}}
connectors: {forward: {}}
service: {pipelines: {traces: {receivers: [fake], exporters: [fowrard]}}}
""", "service.pipelines.traces.exporters[0]: references exporter 'fowrard' which is not configured under "
     "'exporters' or 'connectors'; did you mean 'forward'?"),
    ("""
receivers: {fake: {}}
exporters: {sink: {}}
connectors: {forward: {}}
service: {pipelines: {traces: {receivers: [fake], processors: [forward], exporters: [sink]}}}
""", "service.pipelines.traces.processors[0]: references processor 'forward' which is not configured under "
     "'processors'"),
])
def test_connector_validation_errors_name_the_key_path(text: str, expected: str) -> None:
    found = errors_of(text)
    assert any(expected in e for e in found), found


def test_a_connector_id_that_is_also_an_exporter_id_is_an_error() -> None:
    from pipeline.component import ExporterFactory, make_factory_map
    from tests.testdata.fakes import ALL, SinkExporterConfig

    base = connector_factories()
    fmap = make_factory_map([*(f for kinds in base.values() for f in kinds.values()),
                             ExporterFactory(type="forward", config_type=SinkExporterConfig, signals=ALL,
                                             create=lambda s, c: None)])
    with pytest.raises(ConfigError) as ei:
        load_text("""
receivers: {fake: {}}
exporters: {sink: {}, forward: {}}
connectors: {forward: {}}
service: {pipelines: {traces: {receivers: [fake], exporters: [sink]}}}
""", fmap, env={})
    assert any("connectors.forward: connector 'forward' is also defined as an exporter under 'exporters'" in str(i)
               for i in ei.value.issues), ei.value.issues


def test_a_cycle_between_pipelines_is_an_error_that_names_the_loop() -> None:
    found = errors_of("""
receivers: {fake: {}}
exporters: {sink: {}}
connectors: {forward/ab: {}, forward/bc: {}, forward/ca: {}}
service:
  pipelines:
    traces/a: {receivers: [fake, forward/ca], exporters: [forward/ab]}
    traces/b: {receivers: [forward/ab], exporters: [forward/bc]}
    traces/c: {receivers: [forward/bc], exporters: [forward/ca, sink]}
""")
    cycles = [e for e in found if "cycle" in e]
    assert cycles == ["<config>: error: service.pipelines: pipelines are connected in a cycle: "
                      "traces/a -> [forward/ab] -> traces/b -> [forward/bc] -> traces/c -> [forward/ca] -> traces/a; "
                      "data would flow around it forever"], found


def test_a_pipeline_feeding_itself_is_a_cycle() -> None:
    found = errors_of("""
receivers: {fake: {}}
exporters: {sink: {}}
connectors: {forward: {}}
service: {pipelines: {traces: {receivers: [fake, forward], exporters: [forward, sink]}}}
""")
    assert any("cycle: traces -> [forward] -> traces" in e for e in found), found


EXT = """
receivers: {fake: {}}
exporters: {sink: {sending_queue: {enabled: false}}}
extensions: {recorder: {}, recorder/two: {}, recorder/unused: {}}
service:
  extensions: [recorder/two, recorder]
  pipelines: {traces: {receivers: [fake], exporters: [sink]}}
  telemetry: {metrics: {address: "127.0.0.1:0"}}
"""


async def test_extensions_start_before_and_stop_after_the_pipelines_and_the_host_finds_them() -> None:
    log: list[str] = []
    fmap = connector_factories(log=log)
    cfg = load_text(EXT, fmap, env={})
    assert [str(w) for w in cfg.warnings] == [
        "<config>: warning: extensions.recorder/unused: extension 'recorder/unused' is configured but not used "
        "(add it to service.extensions)"]
    svc = Service(cfg, fmap, telemetry=Telemetry(process_metrics=False))
    await svc.start()
    exts = svc.extensions()
    assert list(exts) == [ComponentID("recorder", "two"), ComponentID("recorder")]
    assert exts[ComponentID("recorder")].host is svc                              # type: ignore[attr-defined]
    assert svc.component("extension", "recorder/two") is exts[ComponentID("recorder", "two")]
    assert [c["id"] for c in svc.status()["extensions"]] == ["recorder/two", "recorder"]
    log.append("pipelines running")
    await svc.shutdown()
    assert log == ["start extension recorder/two", "start extension recorder", "pipelines running",
                   "stop extension recorder", "stop extension recorder/two"]


@pytest.mark.parametrize("service, expected", [
    ("extensions: [recorder/nope]", "service.extensions[0]: references extension 'recorder/nope' which is not "
                                    "configured under 'extensions'"),
    ("extensions: [recorder, recorder]", "service.extensions[1]: extension 'recorder' is listed twice"),
])
def test_extension_validation_errors(service: str, expected: str) -> None:
    found = errors_of(f"""
receivers: {{fake: {{}}}}
exporters: {{sink: {{}}}}
extensions: {{recorder: {{}}}}
service:
  {service}
  pipelines: {{traces: {{receivers: [fake], exporters: [sink]}}}}
""")
    assert any(expected in e for e in found), found


def test_kinds_have_their_config_sections() -> None:
    assert Kind.CONNECTOR.section == "connectors" and Kind.EXTENSION.section == "extensions"
