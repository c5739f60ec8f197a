"""Seed inputs for the fuzz targets and the byte-level mutations both fuzzers apply to them."""
from __future__ import annotations

import gzip
import random
import zlib

from pipeline import otlpjson
from pipeline.testing import make_logs, make_metrics, make_traces

_REQUESTS = [make_traces(3, attrs={"k": "v", "n": 7}), make_metrics(4), make_logs(2)]
PROTOBUF = [r.SerializeToString() for r in _REQUESTS] + [b"", b"\n\x00", b"\x0a\x80\x80\x80\x80\x10"]
JSON = [otlpjson.encode(r) for r in _REQUESTS] + [b"{}", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{}]}]}]}']
COMPRESSED = ([gzip.compress(b) for b in PROTOBUF[:3]] + [zlib.compress(b) for b in PROTOBUF[:3]]
              + [gzip.compress(b"\0" * 1_000_000), gzip.compress(b"a") * 50])
STATSD = [b"page.views:1|c\nfoo.bar:-2.5|g|@0.5|#env:prod,region:eu", b"t:320|ms|@0.1\nh:1:2:3|h|T1700000000",
          b"users:alice|s|#a\n_e{5,4}:title|text\n_sc|check|0", b"d:1.5|d|c:abc123|#k:v,k2"]
CONFIG = [b"""receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0", tls: {cert_file: a, key_file: b}}, http: {}}}
  statsd: {endpoint: "127.0.0.1:0"}
processors:
  batch: {timeout: 1s}
  memory_limiter: {limit_mib: 100}
exporters:
  otlphttp: {endpoint: "https://u:${env:TOKEN}@h/otlp", headers: {Authorization: "Bearer ${env:TOKEN}"}}
  file: {path: /tmp/x.jsonl}
extensions:
  bearertokenauth: {token: "${env:TOKEN}"}
service:
  extensions: [bearertokenauth]
  pipelines:
    traces: {receivers: [otlp], processors: [memory_limiter, batch], exporters: [otlphttp, file]}
    metrics: {receivers: [statsd], exporters: [file]}
""", b"a: [1, {b: &x c}, *x]\n",
          b"a: [1, {b: &x c}: [1, {b:1e309 &x c}, *x]\n, *x]\n",  # crashed the loader once (unhashable key)
          b"receivers: !!python/object/apply:os.system ['true']\n"]

SEEDS: dict[str, list[bytes]] = {"otlp_protobuf": PROTOBUF, "otlp_json": JSON, "compressed_body": COMPRESSED,
                                 "statsd": STATSD, "config": CONFIG}
_INTERESTING = [b"\x00", b"\xff", b"\x80", b"\x7f", b"{", b"}", b"[", b'"', b"\n", b":", b"|", b"#", b",", b"@",
                b"0x", b"-1", b"1e309", b"NaN", b"\xef\xbb\xbf", b"${env:TOKEN}", b"\\u0000", b"*", b"&"]


def mutate(data: bytes, rng: random.Random, edits: int = 4) -> bytes:
    """`data` with a few random byte flips, insertions, deletions, duplications or truncations."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, edits)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = rng.choice(_INTERESTING)
        elif op == 2:
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 3 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start:start + rng.randint(1, 64)]
        elif op == 4:
            del buf[pos:]
        else:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(buf)
