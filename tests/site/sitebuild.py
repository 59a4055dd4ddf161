"""Helpers for the site tests: a local HTTP server and the tokens the small site repeats."""

import contextlib
import http.server
import socket
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPEAT_TOKENS = [" a", "\n"]
"""Tokens that are invisible when shown raw: a leading space and a newline."""


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(folder: Path, port: int):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = lambda *a, **k: Quiet(*a, directory=str(folder), **k)  # noqa: E731
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.shutdown()
