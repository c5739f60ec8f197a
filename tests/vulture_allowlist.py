"""What vulture reports as unused but is used, each with the reason (`make lint` reads this file).

Vulture cannot see calls made through a Protocol, config keys read by name, or
fields a dataclass-driven decoder fills; name them here so every other report
is real dead code.
"""
# ruff: noqa
# mypy: ignore-errors

from pipeline.component import Host, ReceiverCreate, ProcessorCreate, ExporterCreate, ExtensionCreate
from exporters.otlp.http import OTLPHTTPExporterConfig
from processors.sampling.policies import SubPolicyConfig

# Protocol members: implementations are called through the protocol, never by this name.
Host.report_fatal
ReceiverCreate.__call__
ProcessorCreate.__call__
ExporterCreate.__call__
ExtensionCreate.__call__

# Config keys the YAML decoder fills and the code reads by name (`getattr(cfg, _SIGNAL_KEYS[signal])`,
# one sub-block per policy type).
OTLPHTTPExporterConfig.traces_endpoint
OTLPHTTPExporterConfig.metrics_endpoint
OTLPHTTPExporterConfig.logs_endpoint
SubPolicyConfig.always_sample

# OTTL (processors/ottl): lark calls the transformer's rule methods by rule name; the transform context's
# containers are read through attrgetter strings (`schema_url`); config keys read with getattr by signal.
from processors.ottl.grammar import _Build
from processors.ottl.contexts import TransformContext
from processors.ottl.config import ContextStatements
from processors.attributes.match import RegexpConfig
from processors.filter import FilterConfig, MetricFilters, LogFilters
from processors.transform import TransformConfig
from processors.ottl.regex import _OPTIONS
_OPTIONS.log_errors  # an option read by RE2 itself
_Build.int_lit, _Build.float_lit, _Build.bytes_lit, _Build.true, _Build.false, _Build.nil, _Build.segment
_Build.enum, _Build.named_arg, _Build.converter, _Build.list_expr, _Build.pair, _Build.map_expr
_Build.and_op, _Build.or_op, _Build.not_op
TransformContext.resource_container, TransformContext.scope_container
ContextStatements.shared_cache, RegexpConfig.cacheenabled, RegexpConfig.cachemaxnumentries
MetricFilters.datapoint, LogFilters.log_record, FilterConfig.metric_conditions, FilterConfig.log_conditions
TransformConfig.trace_statements, TransformConfig.metric_statements, TransformConfig.log_statements

# requests reads Session.trust_env itself (tests/e2e/test_tls_auth.py turns it off so the SDK's CA file wins).
import requests
requests.Session.trust_env

# The Collector's file_storage `compaction` keys: decoded so Collector configs load (a warning says they do nothing).
from extensions.file_storage import CompactionConfig, FileStorageConfig
CompactionConfig.max_transaction_size, CompactionConfig.rebound_needed_threshold_mib
CompactionConfig.rebound_trigger_threshold_mib, FileStorageConfig.compaction

# The parameter of a Protocol method stub (pipeline/component.py Fuses.fuse), and a protobuf descriptor option
# set by assignment (pipeline/wire.py marks a generated entry type as a map entry).
next_processor
_.map_entry

# pytest fixtures and marks named by string: the pagerduty exporter's two ingest paths (C and Python) in its unit
# tests (tests/unit/exporters/pagerduty/conftest.py) and e2e tests (tests/e2e/conftest.py).
ingest_path
pagerduty_ingest
pytestmark
# Read by the C ingest pass (exporters/pagerduty/_pdwire.c compares a point's bounds to these bytes).
from exporters.pagerduty.store import HistogramSeries
HistogramSeries.layout
