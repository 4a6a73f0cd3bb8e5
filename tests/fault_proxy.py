"""A fault-injecting HTTP proxy for tests: forwards to a FHIR server, except where a fault says otherwise."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests

HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "accept-encoding"}


@dataclass
class Fault:
    """What to do with the next `times` requests matching method + path (a regex on the path, no query).

    refuse: answer `status` with an OperationOutcome, never forwarded.
    lose: forward (the server commits), then close the connection without an answer.
    hold: never forward; keep the connection open until released (or `hold_seconds`), then close it.
    """

    method: str
    path: str
    action: str
    status: int = 422
    times: int = 1
    hold_seconds: float = 15.0

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and method == self.method and re.fullmatch(self.path, path) is not None


class FaultProxy:
    """Threads on 127.0.0.1, port 0. `start(target_base)` returns the proxy's base URL (same path)."""

    def __init__(self, *, no_transaction: bool = False):
        self.no_transaction = no_transaction  # the CapabilityStatement loses its `transaction` interaction
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, int | None]] = []  # (method, path, status sent or None)
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._target = ""

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)
        self.released.clear()

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def count(self, method: str, pattern: str = ".*") -> int:
        return sum(1 for m, p, _ in self.seen if m == method and re.fullmatch(pattern, p))

    def start(self, target_base: str) -> str:
        target = urlsplit(target_base)
        self._target = f"{target.scheme}://{target.netloc}"
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_port}{target.path}"

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def forward(self, method: str, path_and_query: str, headers: dict, body: bytes) -> requests.Response:
        return requests.request(method, self._target + path_and_query, headers=headers, data=body or None,
                                timeout=30, allow_redirects=False)

    def rewrite(self, path: str, content: bytes) -> bytes:
        """Without transactions: drop `transaction` from the CapabilityStatement's server interactions."""
        if not (self.no_transaction and path.endswith("/metadata")):
            return content
        statement = json.loads(content)
        for rest in statement.get("rest") or []:
            rest["interaction"] = [i for i in rest.get("interaction") or [] if i.get("code") != "transaction"]
        return json.dumps(statement).encode()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args) -> None:  # quiet
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urlsplit(self.path).path
            fault = proxy.take(self.command, path)
            action = fault.action if fault else "forward"
            if action == "refuse":
                return self._answer(fault.status, _outcome(f"fault proxy: refused ({fault.status})"), path)
            if action == "hold":
                proxy.seen.append((self.command, path, None))
                proxy.released.wait(fault.hold_seconds)
                self.close_connection = True
                return None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            answer = proxy.forward(self.command, self.path, headers, body)
            if action == "lose":
                proxy.seen.append((self.command, path, None))
                self.close_connection = True
                return None
            content = proxy.rewrite(path, answer.content) if answer.ok else answer.content
            return self._answer(answer.status_code, content, path, answer.headers)

        def _answer(self, status: int, content: bytes, path: str, headers=None) -> None:
            proxy.seen.append((self.command, path, status))
            self.send_response(status)
            for name in ("Content-Type", "Location", "Content-Location", "ETag", "Last-Modified"):
                if headers is not None and name in headers:
                    self.send_header(name, headers[name])
            if headers is None:
                self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    return Handler


def _outcome(text: str) -> bytes:
    return json.dumps({"resourceType": "OperationOutcome",
                       "issue": [{"severity": "error", "code": "processing", "diagnostics": text}]}).encode()
