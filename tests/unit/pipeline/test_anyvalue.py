"""Attribute values as text, as the Collector's AsString writes them (loki labels, datadog tags)."""
from __future__ import annotations

import math

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from pipeline.anyvalue import as_string


@pytest.mark.parametrize(("value", "text"), [
    (AnyValue(string_value="a b"), "a b"),
    (AnyValue(), ""),
    (AnyValue(bool_value=True), "true"),
    (AnyValue(int_value=-7), "-7"),
    (AnyValue(double_value=3.0), "3"),
    (AnyValue(double_value=0.25), "0.25"),
    (AnyValue(double_value=1e20), "100000000000000000000"),
    (AnyValue(double_value=math.nan), "NaN"),
    (AnyValue(double_value=-math.inf), "-Inf"),
    (AnyValue(bytes_value=b"\x00\xff"), "AP8="),
    (AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(double_value=math.inf)])), '[1,"+Inf"]'),
    (AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(bytes_value=b"x"))])), '{"k":"eA=="}'),
])
def test_values_render_as_the_collector_renders_them(value: AnyValue, text: str) -> None:
    assert as_string(value) == text
