"""Connectors: components that join pipelines (an exporter of one, a receiver of another)."""
