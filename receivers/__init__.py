"""Receivers: where data enters (OTLP gRPC/HTTP, StatsD)."""
