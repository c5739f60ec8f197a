"""Networking every component shares, each in its own module:

- `endpoint`: `Endpoint`, one `host:port` parsed once (listeners, gRPC dial targets, the port-clash check);
- `tls`: `TLSClientConfig`, the `tls:` block;
- `http`: `HTTPClient`, the HTTP exporters' connection pool, compression and status classification;
- `urls`: checks of configured endpoint URLs and headers, said without their secrets;
- `useragent`: `otelpipe/<version>`.

Kept import-light on purpose (no re-exports): config parsing imports `endpoint` without pulling in aiohttp.
"""
