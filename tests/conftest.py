"""Shared fixtures. In process (milliseconds): `app`, `client`, `ehr` (a fake EHR behind the gateway Protocol) and
`launched(patient)`, in the Flask tutorial's style. Live: sekmet, the sandbox EHR, redis-servers; all on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests
import responses
from fake_ehr import FakeEhr, launch

from smart_app.samples import SAMPLE_AS_OF

ISS = "https://ehr.example.org/fhir"
APP_CONFIG = {"ALLOWED_ISSUERS": ISS, "PUBLIC_BASE_URL": "http://127.0.0.1:8000", "TODAY": SAMPLE_AS_OF.isoformat(),
              "SESSION_STORE": "memory", "SECRET_KEY": "k" * 32}


@pytest.fixture
def ehr():
    """The fake EHR every in-process page reads from and writes to (sample patients, dated for SAMPLE_AS_OF)."""
    return FakeEhr()


@pytest.fixture
def app(ehr):
    """The app as `create_app` makes it, on SAMPLE_AS_OF, its gateway factory replaced by the fake EHR's."""
    from smart_app import create_app

    flask_app = create_app(APP_CONFIG)
    flask_app.extensions["gateway_factory"] = ehr.factory
    return flask_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def launched(app, client):
    """`launched(patient, **options)`: a completed SMART launch of `patient` in `client`'s browser; its launch id."""
    return lambda patient, **options: launch(app, client, patient, **options)


def app_importable() -> bool:
    """True once the lead's `smart_app.create_app` exists."""
    try:
        from smart_app import create_app  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def fhir_server():
    """A bare sekmet (no proxy in front, links point at itself); stopped at the end of the session."""
    from smart_app.sandbox.fhir_server import start_fhir_server

    server = start_fhir_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sandbox():
    """sekmet with every sample patient + the sandbox EHR (+ the app when it is importable)."""
    from smart_app.sandbox.demo import start_sandbox

    running = start_sandbox(with_app=app_importable())
    yield running
    running.stop()


@pytest.fixture
def rsps():
    """Recorded HTTP: a registered request that is never made fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock
        for thread in threading.enumerate():  # a failed record read's sibling requests end inside this test
            if thread.name.startswith("fhir_"):
                thread.join(10)


@pytest.fixture
def http():
    return requests.Session()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throwaway `redis-server` on a free loopback port, no persistence; stop() kills it."""

    def __init__(self, workdir):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (scripts/test.sh installs Debian's redis-server as root)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the test session (tests use distinct keys)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server for one test (which may kill it)."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()
