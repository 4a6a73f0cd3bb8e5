"""Test helpers for the command line as deployers run it: the venv's `ldn-app` in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

LDN_APP = str(Path(sys.executable).with_name("ldn-app"))


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if requests.get(url, timeout=5).status_code < 500:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or bound but still loading (the socket accepts before it serves)
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def started(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def stopped(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        return process.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]
