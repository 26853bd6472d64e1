"""The HTTP endpoint under load and with TLS and basic auth (real process, real sockets)."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.support.exporter import Exporter, get, self_signed_certificate, start_exporter, wait_for

pytestmark = pytest.mark.integration


def _stalled_scrape(port: int) -> socket.socket:
    """A scrape whose client reads the status line and then stops reading: the body (tens of MB, far more than
    the socket buffers hold) keeps the server's thread blocked in write, holding one request slot."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
    assert sock.recv(12) in (b"HTTP/1.0 200", b"HTTP/1.1 200")
    return sock


def test_concurrent_scrapes_over_the_cap_get_503_and_the_process_stays_healthy() -> None:
    exporter = start_exporter(
        ["--web.max-requests=10", "--collector.fat", "--collector.fat.series=40000", "--collector.fat.padding=1000"]
    )
    stalled: list[socket.socket] = []
    try:
        wait_for(lambda: "<td>fat</td><td>ok</td>" in _small_status(exporter.url), timeout=60)
        stalled = [_stalled_scrape(exporter.port) for _ in range(10)]  # 10 scrapes in flight: the cap is reached
        barrier = threading.Barrier(190)
        codes: list[int] = []
        lock = threading.Lock()

        def scrape() -> None:
            barrier.wait()
            code = get(f"{exporter.url}/metrics", timeout=60)[0]
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=scrape) for _ in range(190)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert codes == [503] * 190  # answered at once, none queued behind the 10 in flight
        for sock in stalled:
            sock.close()  # the blocked writes fail, the slots come back
        wait_for(lambda: get(f"{exporter.url}/healthz")[0] == 200)
        assert exporter.process.poll() is None
        # the 190, plus any /healthz poll that came before a slot was free
        assert _rejected_requests(exporter.url) >= 190
    finally:
        for sock in stalled:
            sock.close()
        exporter.stop()


def _rejected_requests(url: str) -> float:
    """pai_exporter_http_rejected_requests_total from a whole /metrics answer (tens of MB here). A client on a
    loaded machine may not take it all within the server's write deadline, which then cuts it short, as it must
    for any slow client: such a read is retried, a bounded number of times."""
    name = "pai_exporter_http_rejected_requests_total"
    for _ in range(3):
        try:
            body = get(f"{url}/metrics", timeout=60)[1]
        except (http.client.IncompleteRead, ConnectionError):
            continue
        return float(next(line for line in body.splitlines() if line.startswith(name)).split()[1])
    raise AssertionError(f"three /metrics answers from {url} were cut short")


def _small_status(url: str) -> str:
    """The landing page is small, unlike /metrics here."""
    status, page = get(f"{url}/")
    return page if status == 200 else ""


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


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


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    web = tmp_path_factory.mktemp("web") / "web.yml"
    web.write_text("http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n")
    exporter = start_exporter([f"--web.config.file={web}", "--no-collector.gpu", "--no-collector.jobs"])
    try:
        yield exporter
    finally:
        exporter.stop()


def _exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes (or 10 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_keep_alive_pipelining_and_closing(plain: Exporter) -> None:
    two = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    answer = _exchange(plain.port, two)
    assert answer.count(b"HTTP/1.1 200 ") == 2  # both on one connection, then closed as asked
    assert b"X-Content-Type-Options: nosniff" in answer  # http_server_config.headers
    answer = _exchange(plain.port, b"GET /healthz HTTP/1.0\r\n\r\n")  # HTTP/1.0: closed after one answer
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"ok\n")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd", b"405"),
        (b"GET /nowhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"404"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"b" * 20_000 + b"\r\n\r\n", b"431"),
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
    ],
)
def test_bad_requests_get_a_short_answer_and_a_close(plain: Exporter, request_bytes: bytes, status: bytes) -> None:
    answer = _exchange(plain.port, request_bytes)
    assert answer.split(b" ", 2)[1] == status
    assert get(f"{plain.url}/healthz")[0] == 200
    assert "Traceback" not in plain.read_output()


def test_head_answers_without_a_body(plain: Exporter) -> None:
    answer = _exchange(plain.port, b"HEAD /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: " in head
    assert body == b""
