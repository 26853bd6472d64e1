"""The exporter attacked on loopback as an unfriendly client on the network would, under its unit's limits.

The exporter runs in a cgroup with the ``TasksMax`` and ``MemoryMax`` of the shipped unit (read from the role) and
its ``LimitNOFILE``; every attack is bounded in connections, bytes and seconds, and targets 127.0.0.1 only. A
Prometheus-like client scrapes all along; every one of its scrapes must be answered.
"""

from __future__ import annotations

import base64
import math
import os
import re
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.support.exporter import Exporter, UnitLimits, get, start_exporter, wait_for
from tests.support.hostile import Scraper, Swarm

pytestmark = pytest.mark.integration

LIMITS = UnitLimits.of_role("job_exporter")
MEMORY_GROWTH_BOUND = 64 * 2**20
"""What an attack may add to the exporter's memory: 256 connections (the default --web.max-connections) at about
100 KiB each at worst (16 KiB of headers, the read buffers, 64 KiB of answer) is 25 MiB; 64 MiB leaves room for the
allocator and still fits a quarter of MemoryMax=256M."""
FLOOD_SECONDS = 6.0
ATTACK_ARGS = ["--no-collector.gpu", "--no-collector.jobs"]
"""node_health only: the attacks are on the HTTP side, and the other collectors would only add noise here."""


def metric(body: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", body, re.MULTILINE)
    assert match, f"{name}{labels} not in the exposition"
    return float(match[1])


def assert_unharmed(exporter: Exporter, pid: int) -> None:
    """Still the same process, never OOM-killed, never refused a thread."""
    assert exporter.process.poll() is None, "the exporter died"
    assert exporter.process.pid == pid
    assert exporter.cgroup is not None
    assert exporter.cgroup.oom_kills() == 0
    assert exporter.cgroup.failed_forks() == 0


@pytest.fixture
def limited() -> Iterator[Exporter]:
    exporter = start_exporter(ATTACK_ARGS, limits=LIMITS)
    try:
        wait_for(lambda: get(f"{exporter.url}/healthz")[0] == 200)
        yield exporter
    finally:
        exporter.stop()
        print(exporter.output[-3000:])


def test_slow_dripping_idle_and_flooding_clients_leave_every_scrape_answered(limited: Exporter) -> None:
    exporter, cgroup = limited, limited.cgroup
    assert cgroup is not None
    pid = exporter.process.pid
    for _ in range(3):  # warm up the scrape path before taking the baseline
        assert get(f"{exporter.url}/metrics")[0] == 200
    baseline = cgroup.memory_bytes()
    cgroup.reset_peak()
    scraper = Scraper(f"{exporter.url}/metrics").start()

    # 1. Fewer clients than the connection cap: each must be cut by the request deadline, however slowly it drips.
    under_cap = Swarm(exporter.port, {"idle": 40, "slow": 40, "drip": 40}, duration=14.0).start()
    wait_for(lambda: metric(get(f"{exporter.url}/metrics")[1], "pai_exporter_http_dropped_connections_total",
                            '{reason="read_timeout"}') >= 100, timeout=14.0, interval=0.5)  # fmt: skip
    under_cap.stop()
    under_cap.join()

    # 2. 1,000 clients, four times the cap: idle, slow and dripping connections and a header flood.
    swarm = Swarm(exporter.port, {"idle": 250, "slow": 250, "drip": 250, "flood": 250}, duration=6.0).start()
    report = swarm.join()
    scrapes = scraper.stop()

    assert_unharmed(exporter, pid)
    assert report.max_open > 900, "the swarm did not get its connections open"
    assert scrapes.statuses, "the scraper never finished a scrape"
    assert all(status == 200 for status in scrapes.statuses), scrapes.statuses
    growth = cgroup.peak_memory_bytes() - baseline
    assert growth < MEMORY_GROWTH_BOUND, f"memory grew by {growth / 2**20:.1f} MiB"
    assert report.statuses[431] > 0, "no header flood was refused with 431"
    body = get(f"{exporter.url}/metrics")[1]
    dropped = "pai_exporter_http_dropped_connections_total"
    assert metric(body, dropped, '{reason="connection_limit"}') > 0
    assert metric(body, dropped, '{reason="headers_too_large"}') > 0
    wait_for(lambda: metric(get(f"{exporter.url}/metrics")[1], "pai_exporter_http_open_connections") <= 2)
    log = exporter.read_output()
    assert "Traceback" not in log
    assert log.count("http client fault") <= 10, "client faults must be logged once a minute per kind, not each"
    print(f"scrapes {len(scrapes.statuses)}, slowest {max(scrapes.seconds):.2f}s, memory growth "
          f"{growth / 2**20:.1f} MiB, swarm {report}")  # fmt: skip


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _status(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


@pytest.fixture(scope="module")
def with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """Basic auth with a cost-6 hash (a few ms, so the suite stays quick; the exporter treats any cost the same
    way) and --web.max-requests=2, the setting under which the old server lost 12 of 16 real scrapes."""
    directory = tmp_path_factory.mktemp("auth")
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=6)).decode()
    web = directory / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    exporter = start_exporter([*ATTACK_ARGS, f"--web.config.file={web}", "--web.max-requests=2"], limits=LIMITS)
    try:
        yield exporter
    finally:
        exporter.stop()
        print(exporter.output[-3000:])


def _rank_sum_z(a: list[float], b: list[float]) -> float:
    """The Mann-Whitney U test's z score (normal approximation, mid-ranks for ties): 0 when the two samples come
    from one distribution; beyond +-3.3 they differ at p < 0.001."""
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(pooled)
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    r_a = sum(rank for rank, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    n_a, n_b = len(a), len(b)
    u = r_a - n_a * (n_a + 1) / 2
    return (u - n_a * n_b / 2) / math.sqrt(n_a * n_b * (n_a + n_b + 1) / 12)


def test_unknown_and_known_users_take_the_same_time_to_reject(with_auth: Exporter) -> None:
    url = f"{with_auth.url}/healthz"
    known: list[float] = []
    unknown: list[float] = []
    for i in range(60):  # interleaved, so that any drift in the machine's load hits both samples alike
        sample, headers = (known, _auth("prometheus", f"wrong{i}")) if i % 2 else (unknown, _auth(f"nobody{i}", "x"))
        start = time.perf_counter()
        assert _status(url, headers) == 401
        sample.append(time.perf_counter() - start)
    z = _rank_sum_z(known, unknown)
    print(f"median known {statistics.median(known) * 1000:.1f} ms, unknown {statistics.median(unknown) * 1000:.1f} ms,"
          f" z {z:.2f}")  # fmt: skip
    assert abs(z) < 3.3, "rejections of known and unknown users have different time distributions"


def test_passwords_over_72_bytes_and_malformed_credentials_are_401(with_auth: Exporter) -> None:
    url = f"{with_auth.url}/metrics"
    for headers in (
        _auth("prometheus", "x" * 100),  # bcrypt refuses more than 72 bytes: the old server dropped the connection
        _auth("prometheus", "right" + "\0"),
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:pw").decode()},
        {"Authorization": "Bearer token"},
    ):
        assert _status(url, headers) == 401, headers


def test_a_wrong_password_flood_leaves_real_scrapes_served_and_cpu_bounded(with_auth: Exporter) -> None:
    exporter = with_auth
    pid = exporter.process.pid
    good = _auth("prometheus", "right")
    assert _status(f"{exporter.url}/metrics", good) == 200  # Prometheus scraped before the attack began
    cpu_start, wall_start = _cpu_seconds(pid), time.monotonic()
    scraper = Scraper(f"{exporter.url}/metrics", every=0.3, headers=good).start()
    answers: list[int] = []
    flood = [
        _Flooder(f"{exporter.url}/metrics", _auth("prometheus", "guess"), answers),
        _Flooder(f"{exporter.url}/metrics", _auth("prometheus", "guess again"), answers),
        _Flooder(f"{exporter.url}/metrics", _auth("admin", "guess"), answers),
    ]
    for flooder in flood:
        flooder.join()
    scrapes = scraper.stop()
    cpu = (_cpu_seconds(pid) - cpu_start) / (time.monotonic() - wall_start)

    assert_unharmed(exporter, pid)
    assert scrapes.statuses, "the scraper never finished a scrape"
    assert all(status == 200 for status in scrapes.statuses), scrapes.statuses
    assert answers, "the flood sent nothing"
    assert set(answers) <= {401, 429}, set(answers)
    # Failed checks may use a quarter of one CPU; the rest is answering. Unthrottled, three clients kept three
    # bcrypt checks running at once.
    assert cpu < 0.5, f"the exporter used {cpu:.2f} CPUs during the flood"
    print(f"{len(answers)} wrong-password requests ({answers.count(429)} throttled), {len(scrapes.statuses)} scrapes"
          f" all 200, exporter CPU {cpu:.2f}")  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Flooder:
    """One client sending wrong credentials back to back for :data:`FLOOD_SECONDS`, each answer awaited (as the
    issue's attack did)."""

    def __init__(self, url: str, headers: dict[str, str], answers: list[int]) -> None:
        self._url, self._headers, self._answers = url, headers, answers
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(FLOOD_SECONDS + 30)

    def _run(self) -> None:
        end = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < end:
            try:
                self._answers.append(_status(self._url, self._headers))
            except OSError:
                self._answers.append(0)
