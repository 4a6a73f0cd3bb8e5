"""Benchmark: bounded work on a bad FHIR server (issues 7 and 16). Prints figures; no pass/fail.

- a hung server (accepts, never answers) with the default configuration: time until the record
  read gives up (target: the read deadline, LDN_FHIR_READ_DEADLINE = 20 s, + at most 1 s);
- one 200,000-entry search page: time until the record read ends, with the default caps (refused
  whole: more than LDN_FHIR_MAX_PAGE_ENTRIES) and with the caps raised so every entry is sorted.

Run: .venv/bin/python bench/bench_bounds.py [--skip-hung]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smart_app.config import Settings  # noqa: E402
from smart_app.fhir.gateway import FhirGateway  # noqa: E402
from smart_app.services import read_patient  # noqa: E402

CAPABILITIES = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": []}]}


def hung_read_seconds() -> float:
    """A socket that accepts and never answers; the default config's record read against it."""
    listener = socket.create_server(("127.0.0.1", 0))
    held, stop = [], threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        gateway = FhirGateway.from_config(Settings(), f"http://127.0.0.1:{listener.getsockname()[1]}/fhir", None)
        started = time.monotonic()
        _, problems = read_patient(gateway, "p1")
        elapsed = time.monotonic() - started
        print(f"  problem shown: {problems[0]}")
        return elapsed
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


def huge_page(entries: int) -> bytes:
    resource = {"resourceType": "MedicationStatement", "status": "completed", "subject": {"reference": "Patient/p1"},
                "medicationCodeableConcept": {"text": "atorvastatin"}, "effectiveDateTime": "2020-01-01"}
    page = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {**resource, "id": f"ms{i}"}, "search": {"mode": "match"}} for i in range(entries)]}
    return json.dumps(page).encode()


def serve(pages: dict[str, bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = pages.get(self.path.split("?")[0].rsplit("/", 1)[-1], pages["empty"])
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def huge_page_seconds(body: bytes, **limits) -> tuple[float, tuple[str, ...]]:
    empty = json.dumps({"resourceType": "Bundle", "type": "searchset"}).encode()
    server = serve({"MedicationStatement": body, "metadata": json.dumps(CAPABILITIES).encode(),
                    "p1": json.dumps({"resourceType": "Patient", "id": "p1"}).encode(), "empty": empty})
    try:
        gateway = FhirGateway.from_config(Settings.from_env({}, limits), f"http://127.0.0.1:{server.server_port}/fhir",
                                          None)
        started = time.monotonic()
        data, problems = read_patient(gateway, "p1")
        return time.monotonic() - started, problems or (f"{len(data.medications):,} records read",)
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-hung", action="store_true", help="skip the 20 s hung-server read")
    args = parser.parse_args(argv)
    if not args.skip_hung:
        print(f"hung FHIR server, default configuration (read deadline {Settings().fhir_read_deadline} s):")
        print(f"  the record read gave up after {hung_read_seconds():.2f} s")
    body = huge_page(200_000)
    print(f"one 200,000-entry MedicationStatement page ({len(body) / 1e6:.0f} MB):")
    seconds, problems = huge_page_seconds(body)
    print(f"  default caps: {seconds:.2f} s -> {problems[0]}")
    seconds, problems = huge_page_seconds(body, FHIR_MAX_PAGE_ENTRIES=300_000, FHIR_MAX_ENTRIES=300_000)
    print(f"  caps raised to 300,000 (every entry sorted and parsed): {seconds:.2f} s -> {problems[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
