"""Session fixtures: a live sekmet FHIR server and a running sandbox EHR, both on loopback, started once."""

from __future__ import annotations

import pytest
import requests
import responses


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


@pytest.fixture
def http():
    return requests.Session()
