"""Run the Kubernetes API stand-in as a standalone server: ``python -m kube_apiserver --port 6443 --scenario FILE``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from kube_apiserver.control import ControlServer, ScenarioWatcher
from kube_apiserver.server import DEFAULT_BOOKMARK_INTERVAL, KubeApiStandIn
from kube_apiserver.state import DEFAULT_HISTORY, ClusterState
from kube_apiserver.synthetic import SyntheticCluster


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kube_apiserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6443, help="API port (default 6443; 0 picks a free port)")
    parser.add_argument("--scenario", type=Path, help="scenario file (YAML); reloaded when it changes")
    parser.add_argument("--control-port", type=int, help="port of the control endpoint (default: none)")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    parser.add_argument("--synthetic-nodes", type=int, default=0, help="add this many generated nodes")
    parser.add_argument("--synthetic-pods", type=int, default=0, help="add this many generated pods")
    parser.add_argument(
        "--bookmark-interval", type=float, default=DEFAULT_BOOKMARK_INTERVAL, help="seconds between watch bookmarks"
    )
    parser.add_argument(
        "--watch-history", type=int, default=DEFAULT_HISTORY, help="watch events kept; older versions get 410 Gone"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    state = ClusterState(history=args.watch_history)
    watcher: ScenarioWatcher | None = None
    if args.scenario is not None:
        watcher = ScenarioWatcher(args.scenario, state)
        watcher.load()
    if args.synthetic_nodes or args.synthetic_pods:
        state.set_synthetic(SyntheticCluster(nodes=args.synthetic_nodes, pods=args.synthetic_pods))
    server = KubeApiStandIn(
        state,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        bookmark_interval=args.bookmark_interval,
    )
    if state.fault.mode != "down":
        server.start()
    control: ControlServer | None = None
    if args.control_port is not None:
        control = ControlServer((args.host, args.control_port), state, server)
        threading.Thread(target=control.serve_forever, name="control", daemon=True).start()
    if watcher is not None:
        watcher.start()
    # the port line is parsed by the benchmark and by scripts that start the stand-in with --port 0
    print(f"listening {server.url} control={control.server_address[1] if control else '-'}", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    if watcher is not None:
        watcher.stop()
    if control is not None:
        control.shutdown()
        control.server_close()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
