"""The OTLP exporters: `otlp` (gRPC, `grpc.py`) and `otlphttp` (HTTP, `http.py`), and what they share."""
