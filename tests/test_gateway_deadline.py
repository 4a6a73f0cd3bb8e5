"""One read deadline per page: a FHIR server that accepts and never answers gives cannot-determine in time."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from smart_app.clinical.model import Decision
from smart_app.errors import FhirUnavailable
from smart_app.fhir.gateway import FhirGateway
from smart_app.samples import SAMPLE_AS_OF
from smart_app.services import assess_data, read_patient


@pytest.fixture
def hung_server():
    """A loopback socket that accepts every connection and never sends a byte; closed after the test."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


def test_a_hung_fhir_server_gives_cannot_determine_within_the_deadline_plus_one_second(hung_server):
    gateway = FhirGateway(hung_server, lambda: "token", read_deadline=1.5, read_timeout=30, retries=3)
    started = time.monotonic()
    data, problems = read_patient(gateway, "p1")
    elapsed = time.monotonic() - started
    assessment = assess_data(data, as_of=SAMPLE_AS_OF, data_problems=problems)
    assert elapsed < 1.5 + 1.0
    assert assessment.decision is Decision.CANNOT_DETERMINE
    assert any("within 1.5 s (LDN_FHIR_READ_DEADLINE)" in f.text for f in assessment.findings)


def test_a_retry_after_longer_than_the_time_left_ends_the_read_at_once(rsps):
    sleeps: list[float] = []
    gateway = FhirGateway("https://fhir.example.org/r4", None, read_deadline=5, sleep=sleeps.append)
    rsps.get("https://fhir.example.org/r4/Patient/p1", status=503, headers={"Retry-After": "8"})
    with pytest.raises(FhirUnavailable) as caught:
        gateway.read("Patient", "p1")
    assert sleeps == [] and "LDN_FHIR_READ_DEADLINE" in caught.value.user_message


def test_retries_and_their_waits_share_one_deadline(rsps):
    clock = {"now": 0.0}
    gateway = FhirGateway("https://fhir.example.org/r4", None, read_deadline=5, retries=5, backoff=1,
                          sleep=lambda s: clock.__setitem__("now", clock["now"] + s))
    rsps.assert_all_requests_are_fired = False
    rsps.get("https://fhir.example.org/r4/Patient/p1", status=503)
    rsps.get("https://fhir.example.org/r4/Patient/p1", status=503)
    rsps.get("https://fhir.example.org/r4/Patient/p1", status=503)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("smart_app.fhir.gateway.time.monotonic", lambda: clock["now"])
        with pytest.raises(FhirUnavailable, match="read deadline"):
            gateway.read("Patient", "p1")
    assert clock["now"] == 3.0  # waited 1 + 2; the next wait (4) would pass the 5 s deadline
