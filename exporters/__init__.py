"""Exporters: where data leaves (OTLP, Prometheus, debug, file)."""
