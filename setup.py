"""Build hook for the C extensions; everything else is declared in pyproject.toml.

* `processors.privacy._wirewalk`: the privacy processors' wire walker (see the comment at the top of
  processors/privacy/_wirewalk.c). Needs only a C compiler.
* `processors.privacy._hsscan`: secret_mask's anchor scan calling libhyperscan directly (see
  processors/privacy/_hsscan.c). Needs the system library too (Debian: libhyperscan-dev; `make test`
  installs it on x86_64).

* `connectors.genai_metrics._genaiwire`: genai_metrics' span reader (see
  connectors/genai_metrics/_genaiwire.c). Needs only a C compiler.
* `exporters.datadog._ddwire`: the datadog exporter's metrics renderer (exporters/datadog/_ddwire.c).
* `exporters.pagerduty._pdwire`: the pagerduty exporter's ingest pass (exporters/pagerduty/_pdwire.c).
* `exporters.loki._lokiwire`: the loki exporter's push-body renderer (exporters/loki/_lokiwire.c).

All are optional: where they cannot be built the install still succeeds and the Python code
they replace does the same work, with the same results, slower. `make test` checks that they
were built on the machines it sets up (tests/unit/processors/privacy/test_wirewalk_native.py).
"""
from setuptools import Extension, setup

# The protobuf wire primitives the newer extensions share (included by a path relative to each source).
_WIRE_H = "pipeline/_otlpwire.h"
_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Wno-unused-parameter",
          "-Wno-cast-function-type"]

setup(
    ext_modules=[
        Extension("processors.privacy._wirewalk", ["processors/privacy/_wirewalk.c"],
                  depends=["processors/privacy/_matches.h"], optional=True, extra_compile_args=_FLAGS),
        Extension("processors.privacy._hsscan", ["processors/privacy/_hsscan.c"],
                  depends=["processors/privacy/_matches.h"], libraries=["hs"], optional=True,
                  extra_compile_args=_FLAGS),
        Extension("connectors.genai_metrics._genaiwire", ["connectors/genai_metrics/_genaiwire.c"], optional=True,
                  depends=[_WIRE_H], extra_compile_args=_FLAGS),
        Extension("exporters.pagerduty._pdwire", ["exporters/pagerduty/_pdwire.c"], optional=True,
                  depends=[_WIRE_H], extra_compile_args=_FLAGS),
        Extension("exporters.datadog._ddwire", ["exporters/datadog/_ddwire.c"], optional=True,
                  depends=[_WIRE_H], extra_compile_args=_FLAGS),
        Extension("exporters.loki._lokiwire", ["exporters/loki/_lokiwire.c"], optional=True,
                  depends=[_WIRE_H], extra_compile_args=_FLAGS),
    ],
)
