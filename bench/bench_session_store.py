"""Benchmark: MemoryStore write cost with 1k / 10k / 100k live sessions (issue 7 item 8: O(1) writes),
and the time the review page takes to answer when Redis dies or hangs mid-session (issue 7 item 9).

For each size: fill the store with that many sessions, then time 2,000 writes of new session-sized
values (median and p99 per write), and 2,000 writes while a quarter of the table has just expired
(the incremental sweep at work). Then, when Debian's redis-server is installed: one launched session
on a Redis-backed app, Redis stopped (SIGSTOP: hung) then killed, and the page timed each way.
Run: .venv/bin/python bench/bench_session_store.py
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

from smart_app import create_app
from smart_app.smart.launches import Launches
from smart_app.smart.store import COOKIE_NAME, MemoryStore, new_session_id

SIZES = (1_000, 10_000, 100_000)
WRITES = 2_000
VALUE = {"bid": new_session_id(), "created": 0.0, "launch_ids": [new_session_id()]}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed_writes(store: MemoryStore, prefix: str) -> list[float]:
    costs = []
    for i in range(WRITES):
        started = time.perf_counter()
        store.set(f"session:{prefix}{i}", VALUE, 1800)
        costs.append(time.perf_counter() - started)
    return costs


def figures(costs: list[float]) -> str:
    ordered = sorted(costs)
    return (f"median {statistics.median(ordered) * 1e6:6.1f} us   "
            f"p99 {ordered[int(len(ordered) * 0.99)] * 1e6:6.1f} us   max {ordered[-1] * 1e6:7.1f} us")


def main() -> None:
    print(f"MemoryStore.set, {WRITES} timed writes per row (session-sized JSON values)")
    for size in SIZES:
        clock = Clock()
        store = MemoryStore(clock=clock)
        for i in range(size // 4):
            store.set(f"session:old{i}", VALUE, 1800)
        clock.now += 600
        for i in range(size - size // 4):
            store.set(f"session:live{i}", VALUE, 1800)
        print(f"  {size:>7,} live sessions:                 {figures(timed_writes(store, 'new'))}")
        clock.now += 1201  # the oldest quarter expires: each write sweeps a few of them
        print(f"  {size:>7,} sessions, 1/4 just expired:    {figures(timed_writes(store, 'after'))}")


def start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", workdir],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


def page_seconds(client, lid: str) -> tuple[int, float]:
    started = time.perf_counter()
    response = client.get("/", query_string={"lid": lid})
    return response.status_code, time.perf_counter() - started


def outage() -> None:
    if shutil.which("redis-server") is None:
        print("redis-server not installed: outage timing skipped")
        return
    with tempfile.TemporaryDirectory() as workdir:
        process, url = start_redis(workdir)
        try:
            app = create_app({"ALLOWED_ISSUERS": "https://ehr.example.org/fhir", "SESSION_STORE": url})
            store, sid, owner = app.extensions["smart.store"], new_session_id(), new_session_id()
            store.set("session:" + sid, {"bid": owner, "created": time.time()}, 1800)
            lid = Launches(store, owner, app.extensions["settings"]).create({"iss": "https://ehr.example.org/fhir"})
            client = app.test_client()
            client.set_cookie(COOKIE_NAME, sid)
            timeout = app.extensions["settings"].session_store_timeout
            os.kill(process.pid, signal.SIGSTOP)
            status, seconds = page_seconds(client, lid)
            print(f"Redis hung (SIGSTOP), LDN_SESSION_STORE_TIMEOUT={timeout:g}: HTTP {status} in {seconds:.2f} s")
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait()
            status, seconds = page_seconds(client, lid)
            print(f"Redis killed:                                 HTTP {status} in {seconds:.3f} s")
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
    outage()
