"""Extensions: components outside the pipelines (health endpoints, profiling, status pages, storage)."""
