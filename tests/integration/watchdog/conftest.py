"""Fixtures for the watchdog's integration tests: the unit tests' API stand-in, plus TLS material from openssl."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.watchdog.conftest import apiserver, cluster, make_collector, token_file

__all__ = ["apiserver", "cluster", "make_collector", "tls", "token_file"]


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1 (it is also its own CA), made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed (apt-get install openssl)")
    directory = tmp_path_factory.mktemp("watchdog-tls")
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=kube-apiserver-standin",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return Tls(cert, key)
