"""Processors: what happens to data inside a pipeline."""
