"""TLS client settings shared by every exporter (the `tls:` block, as the Collector's configtls).

`insecure` means plain text, and only a gRPC exporter dialling `host:port` reads it (an `http://`
or `https://` endpoint says it itself); `insecure_skip_verify` keeps TLS but trusts any certificate.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config.types import Issue

FileKey = Literal["ca_file", "cert_file", "key_file"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSClientConfig:
    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name_override: str = ""

    def validate(self) -> list[Issue]:
        out: list[Issue] = []
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, key)
            if value and not Path(value).is_file():
                out.append(Issue(key, f"file {value!r} does not exist or is not a file"))
        if bool(self.cert_file) != bool(self.key_file):
            out.append(Issue("cert_file", "cert_file and key_file must be given together (client certificate)"))
        return out

    def read(self, name: FileKey) -> bytes | None:
        """The bytes of `ca_file`, `cert_file` or `key_file` (gRPC takes PEM bytes, not paths), or None."""
        value: str = getattr(self, name)
        return Path(value).read_bytes() if value else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSLContext for HTTP clients, or None for plain text (`insecure: true`). Reads files: call it once."""
        if self.insecure:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx
