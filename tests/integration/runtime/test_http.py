"""The HTTP endpoint under load and with TLS and basic auth (real process, real sockets)."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from tests.support.exporter import get, start_exporter, wait_for

pytestmark = pytest.mark.integration


def test_concurrent_scrapes_over_the_cap_get_503_and_the_process_stays_healthy() -> None:
    exporter = start_exporter(
        ["--web.max-requests=10", "--no-collector.node_health", "--collector.fat", "--collector.fat.series=40000"]
    )
    try:
        wait_for(lambda: "pai_test_fat{" in get(f"{exporter.url}/metrics", timeout=30)[1], timeout=30)
        barrier = threading.Barrier(200)
        codes: list[int] = []
        lock = threading.Lock()

        def scrape() -> None:
            barrier.wait()
            try:
                code = get(f"{exporter.url}/metrics", timeout=120)[0]
            except (OSError, urllib.error.URLError):
                code = -1
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=scrape) for _ in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(codes) == 200
        assert set(codes) <= {200, 503}, f"unexpected answers: {sorted(set(codes))}"
        assert codes.count(503) > 0
        assert codes.count(200) >= 10
        assert exporter.process.poll() is None
        assert get(f"{exporter.url}/healthz")[0] == 200
        status, body = get(f"{exporter.url}/metrics", timeout=30)
        assert status == 200
        assert f"pai_exporter_http_rejected_requests_total {float(codes.count(503))}" in body
    finally:
        exporter.stop()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate: apt-get install openssl"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_https_with_basic_auth(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    exporter = start_exporter([f"--web.config.file={web}"])
    exporter.scheme = "https"
    ctx = ssl.create_default_context(cafile=str(cert))
    try:

        def fetch(headers: dict[str, str]) -> int:
            request = urllib.request.Request(f"{exporter.url}/metrics", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10, context=ctx) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert fetch({}) == 401
        assert fetch(_auth("prometheus", "wrong")) == 401
        assert fetch(_auth("nobody", "s3cret")) == 401
        assert fetch(_auth("prometheus", "s3cret")) == 200
        with pytest.raises(OSError):  # noqa: PT011 - reset or disconnect, either way refused; plain HTTP on the TLS port is refused
            urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5)
    finally:
        exporter.stop()
