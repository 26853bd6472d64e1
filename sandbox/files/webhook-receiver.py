"""Sandbox only: an Alertmanager webhook receiver that keeps every notification it gets.

POST /alerts (Alertmanager's webhook payload) appends {"received_at": <unix time>, "payload": ...} to a JSON-lines
file; GET /alerts returns all of them as a JSON list; DELETE /alerts forgets them.
Usage: webhook-receiver.py <address> <port> <file>
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCK = threading.Lock()
STORE = Path(sys.argv[3])


class Handler(BaseHTTPRequestHandler):
    def _reply(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        received_at = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._reply(400, {"error": "not JSON"})
            return
        with LOCK, STORE.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"received_at": received_at, "payload": payload}) + "\n")
        self._reply(200, {"ok": True})

    def do_GET(self) -> None:
        with LOCK:
            lines = STORE.read_text(encoding="utf-8").splitlines() if STORE.exists() else []
        self._reply(200, [json.loads(line) for line in lines if line.strip()])

    def do_DELETE(self) -> None:
        with LOCK:
            STORE.write_text("", encoding="utf-8")
        self._reply(200, {"ok": True})

    def log_message(self, format: str, *args: object) -> None:
        return


ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
