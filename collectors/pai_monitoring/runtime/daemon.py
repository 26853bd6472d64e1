"""Building and running a daemon: configuration, collectors, HTTP server, textfile writer, signals."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from pai_monitoring.runtime.collector import CollectorContext
from pai_monitoring.runtime.config import DaemonConfig, build_config, configure_logging
from pai_monitoring.runtime.errors import ConfigError
from pai_monitoring.runtime.exposition import HttpStats, file_exposition, http_exposition
from pai_monitoring.runtime.heap import release_freed_heap
from pai_monitoring.runtime.http import ExporterServer
from pai_monitoring.runtime.loader import CollectorClass, CollectorTable, MissingDependencyError, load_collectors
from pai_monitoring.runtime.scheduler import CollectorRunner
from pai_monitoring.runtime.textfile import TextfileWriter

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def build_runners(config: DaemonConfig, classes: dict[str, CollectorClass]) -> list[CollectorRunner]:
    context = CollectorContext(
        node_name=config.node_name, proc_root=config.proc_root, sys_root=config.sys_root, rootfs=config.rootfs
    )
    return [
        CollectorRunner(name, options, functools.partial(classes[name], options, context))
        for name, options in config.collectors.items()
    ]


def run_once(config: DaemonConfig, runners: Sequence[CollectorRunner]) -> int:
    """Collect every enabled collector once, in parallel, each within its deadline; print the exposition."""
    threads = [threading.Thread(target=r.run_iteration, name=f"once-{r.name}", daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    for thread, runner in zip(threads, runners, strict=True):
        thread.join(runner.options.timeout)
    sys.stdout.buffer.write(file_exposition(config.daemon, runners).render())
    sys.stdout.flush()
    failed = [r.name for r in runners if not r.status().success]
    for runner in runners:
        if runner.name in failed:
            log.error("collector=%s failed: %s", runner.name, runner.status().last_error)
        else:
            runner.stop(wait=0)
    return EXIT_FAILED if failed else EXIT_OK


def serve(config: DaemonConfig, runners: list[CollectorRunner]) -> int:
    writer: TextfileWriter | None = None
    if config.textfile_directory is not None:
        name = config.daemon.replace("-", "_") + ".prom"
        refresh = min((o.interval for o in config.collectors.values()), default=30.0)
        writer = TextfileWriter(
            config.textfile_directory, name, file_exposition(config.daemon, runners).render, refresh
        )
        for runner in runners:
            runner.set_listener(writer.notify)

    stats = HttpStats()
    try:
        server = ExporterServer(
            config.listen,
            config.daemon,
            http_exposition(config.daemon, runners, stats),
            runners,
            config.web,
            config.max_requests,
            config.max_connections,
            stats,
        )
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc.strerror or exc)  # noqa: TRY400
        return EXIT_FAILED

    if writer is not None:
        writer.start()

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for runner in runners:
        runner.start()
    http_thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    http_thread.start()
    release_freed_heap()
    log.info(
        "%s listening on %s (collectors: %s)",
        config.daemon,
        config.listen.__class__(config.listen.host, server.port),
        ", ".join(r.name for r in runners) or "none",
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    if writer is not None:
        writer.stop()
    for runner in runners:
        runner.stop()
    log.info("%s stopped", config.daemon)
    return EXIT_OK


def main(daemon: str, default_port: int, collectors: CollectorTable, argv: Sequence[str] | None = None) -> int:
    """Run a daemon whose collectors are ``collectors`` (name to ``module:Class``, handed in by the command)."""
    try:
        classes = load_collectors(collectors)
        config = build_config(daemon, default_port, classes, argv)
    except (MissingDependencyError, ConfigError) as exc:
        print(f"{daemon}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if config.check_only:
        enabled = ", ".join(config.collectors) or "none"
        print(f"{daemon}: configuration is valid (collectors: {enabled})")
        return EXIT_OK
    configure_logging(config.log_level)
    runners = build_runners(config, classes)
    if config.once:
        return run_once(config, runners)
    return serve(config, runners)
