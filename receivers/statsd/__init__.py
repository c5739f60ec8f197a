"""The `statsd` receiver: config, the line grammar (`parser`), interval aggregation (`aggregator`) and the UDP socket
(`receiver`)."""
