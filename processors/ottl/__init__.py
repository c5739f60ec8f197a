"""A subset of the OpenTelemetry Transformation Language (OTTL), for the `transform` and `filter` processors.

* `grammar`: the OTTL grammar (lark, LALR) and the syntax tree it yields, with positions;
* `values`: OTTL values over OTLP protobuf (attribute maps, AnyValue, comparisons, string forms);
* `contexts`: the paths of the resource, scope, span, spanevent, metric, datapoint and log contexts;
* `functions`: the editors and converters otelpipe implements;
* `compiler`: statements and conditions compiled to Python closures, with the byte-level prefilter
  (what a request's wire bytes must contain for a statement to have any effect);
* `runner`: statement groups (context inference, group conditions, error_mode) run over a request.
"""
