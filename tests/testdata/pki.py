"""Throwaway certificate authorities and certificates for TLS tests, made with the openssl CLI.

`Pki(directory)` makes a CA; `issue(name)` signs a leaf certificate valid for `localhost` and
127.0.0.1 (server and client use), with a fresh key, written as `<name>.crt` / `<name>.key`.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


class Pki:
    """A CA in `directory` (`ca.crt`, `ca.key`) that signs leaf certificates."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / f"{name}.crt"
        self._ca_key = directory / f"{name}.key"
        _run("req", "-x509", *_KEY, "-keyout", str(self._ca_key), "-out", str(self.ca), "-days", "2",
             "-subj", f"/CN=otelpipe test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str, common_name: str = "localhost", out: Path | None = None) -> Leaf:
        """A leaf certificate for `localhost`/127.0.0.1 signed by this CA (into `out`, default this directory)."""
        where = out or self.directory
        where.mkdir(parents=True, exist_ok=True)
        key, csr, cert = where / f"{name}.key", where / f"{name}.csr", where / f"{name}.crt"
        ext = where / f"{name}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        _run("req", *_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}")
        _run("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self._ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return Leaf(cert, key)
