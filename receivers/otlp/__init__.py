"""The `otlp` receiver: config, the gRPC and HTTP transports, and the component that runs them."""
