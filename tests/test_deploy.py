"""What docker-compose starts, tested without Docker: `ldn-app serve` under waitress, configured by env only."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from smart_app.config import PREFIX, setting_names

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_variable_compose_sets_is_one_the_app_reads():
    compose = (ROOT / "docker-compose.yml").read_text()
    names = set(re.findall(r"^\s+(LDN_[A-Z_]+):", compose, re.M))
    assert names and {n[len(PREFIX):] for n in names} <= setting_names()


def test_every_variable_the_readme_lists_is_one_the_app_reads():
    readme = (ROOT / "README.md").read_text()
    names = set(re.findall(r"`(LDN_[A-Z_]+)`", readme))
    assert {n[len(PREFIX):] for n in names} <= setting_names()


@pytest.fixture(scope="module")
def served():
    port = free_port()
    env = {**os.environ, "LDN_ALLOWED_ISSUERS": "https://ehr.example.org/fhir", "LDN_SECRET_KEY": "x" * 40,
           "LDN_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, "-m", "smart_app.cli", "serve", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(base + "/.well-known/jwks.json", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_served_app_refuses_a_launch_from_an_issuer_not_on_the_allowlist(served):
    response = requests.get(served + "/launch", params={"iss": "https://other.example/fhir", "launch": "abc"},
                            allow_redirects=False, timeout=5)
    assert response.status_code == 400 and "not registered" in response.text


def test_served_app_without_a_launch_asks_the_user_to_launch_from_the_ehr(served):
    response = requests.get(served + "/", timeout=5)
    assert response.status_code == 401 and "launch" in response.text.lower()
    assert "frame-ancestors" in response.headers["Content-Security-Policy"]


def test_serve_without_allowed_issuers_stops_with_a_clear_message():
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    done = subprocess.run([sys.executable, "-m", "smart_app.cli", "serve", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "LDN_ALLOWED_ISSUERS" in done.stderr
