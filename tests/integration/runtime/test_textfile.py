"""Textfile mode against the real node_exporter, and a writer killed mid-write."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter import REPO, free_port, get, start_exporter, wait_for

pytestmark = pytest.mark.integration

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    assert NODE_EXPORTER, "the real node_exporter is needed: apt-get install prometheus-node-exporter"
    directory = tmp_path / "textfile"
    directory.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={directory}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: _answers(url))
    yield url, directory
    process.terminate()
    process.wait(10)


def _answers(url: str) -> bool:
    try:
        return get(url, timeout=2)[0] == 200
    except OSError:
        return False


def test_node_exporter_serves_our_metrics_from_the_textfile(node_exporter: tuple[str, Path]) -> None:
    url, directory = node_exporter
    exporter = start_exporter(
        [f"--textfile.directory={directory}", "--collector.steady", "--collector.steady.interval=0.5"]
    )
    try:
        wait_for(lambda: (directory / "pai_job_exporter.prom").exists())
        wait_for(lambda: "pai_test_steady 1" in get(url)[1])
        body = get(url)[1]
        assert 'collector_iteration_count_total{name="node_health"}' in body
        assert "node_textfile_scrape_error 0" in body
        assert "process_resident_memory_bytes" not in (directory / "pai_job_exporter.prom").read_text()
    finally:
        exporter.stop()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pai_monitoring.runtime.textfile import atomic_write
    target = Path(sys.argv[1])
    atomic_write(target, b"# TYPE pai_test_version gauge\\npai_test_version 1\\n")
    print("first written", flush=True)
    big = b"# TYPE pai_test_version gauge\\npai_test_version 2\\n" + b"# filler\\n" * 50_000_000
    atomic_write(target, big)
    print("second written", flush=True)
    """
)


def test_writer_killed_mid_write_leaves_the_previous_file(node_exporter: tuple[str, Path]) -> None:
    url, directory = node_exporter
    target = directory / "pai_job_exporter.prom"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "first written"
    # wait until the second, large write is under way in its temporary file, then kill the writer
    wait_for(lambda: any(p.stat().st_size > 0 for p in directory.glob(".*.tmp")), interval=0.001)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    writer.stdout.close()
    assert target.read_bytes() == b"# TYPE pai_test_version gauge\npai_test_version 1\n"
    assert "pai_test_version 1" in get(url)[1]
    assert "node_textfile_scrape_error 0" in get(url)[1]

    # the next writer removes the dead one's temporary file, at the latest by the time its own first file is there
    exporter = start_exporter([f"--textfile.directory={directory}", "--collector.steady"])
    try:
        wait_for(lambda: "pai_test_steady 1" in target.read_text())
        assert not list(directory.glob(".*.tmp"))
        wait_for(lambda: "pai_test_steady 1" in get(url)[1])
    finally:
        exporter.stop()
