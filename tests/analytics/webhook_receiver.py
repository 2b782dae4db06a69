"""A real webhook receiver for the alert tests: an HTTP server on 127.0.0.1 in a thread of the test.

It records every POST (path and JSON body) as soon as the body is read, then answers with the next
status of `statuses` (200 when none is left), or, while `hang` is set, holds the request unanswered
until the test calls `release()`.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answered = 0
        self.statuses: deque[int] = deque()
        self.hang = False
        self._released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(
                        {"path": self.path, "json": json.loads(body), "content_type": self.headers["Content-Type"]}
                    )
                    status = receiver.statuses.popleft() if receiver.statuses else 200
                    hang = receiver.hang
                if hang:
                    receiver._released.wait(120)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with receiver._lock:
                    receiver.answered += 1

            def log_message(self, format, *args) -> None:  # silence: one line per request otherwise
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self) -> list[dict]:
        with self._lock:
            return [request["json"] for request in self.requests]

    def release(self) -> None:
        """Answer every held request, and every later one at once."""
        with self._lock:
            self.hang = False
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
