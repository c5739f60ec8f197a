"""A throwaway self-signed server certificate for the HTTP client's TLS tests.

The same fixture as tests/unit/conftest.py (fixtures do not cross sibling directories);
hoisting both to tests/unit/conftest.py would leave one copy.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_NAME = "otelpipe.test"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    server_name: str = SERVER_NAME


@pytest.fixture(scope="session")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A self-signed certificate valid only for DNS name `otelpipe.test` (made with the openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "server.crt", d / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={SERVER_NAME}",
         "-addext", f"subjectAltName=DNS:{SERVER_NAME}"],
        check=True, capture_output=True,
    )
    return CertFiles(cert, key)
