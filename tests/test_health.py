"""`/healthz` (the process answers) and `/readyz` (session store and every FHIR base's /metadata answer)."""

from __future__ import annotations

import requests

from smart_app import create_app
from smart_app.sandbox.fhir_server import free_port

EHR_A, EHR_B = "http://ehr-a.test/fhir", "http://ehr-b.test/fhir"
CAPABILITY = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}


def client(store: str = "memory", issuers: str = f"{EHR_A},{EHR_B}"):
    app = create_app({"ALLOWED_ISSUERS": issuers, "SESSION_STORE": store, "SESSION_STORE_TIMEOUT": 0.5,
                      "TESTING": True})
    return app.test_client()


def dead_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_healthz_says_up_even_when_the_session_store_and_the_ehr_are_down():
    response = client(dead_redis()).get("/healthz")

    assert (response.status_code, response.json) == (200, {"status": "up"})
    assert "Set-Cookie" not in response.headers


def test_readyz_is_ready_when_the_store_and_every_fhir_base_answer(rsps):
    for base in (EHR_A, EHR_B):
        rsps.get(f"{base}/metadata", json=CAPABILITY)

    response = client().get("/readyz")

    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"session-store": "ok", f"fhir {EHR_A}": "ok",
                                                           f"fhir {EHR_B}": "ok"}}


def test_readyz_names_the_fhir_base_that_fails_and_answers_503_without_retrying(rsps):
    rsps.get(f"{EHR_A}/metadata", json=CAPABILITY)
    rsps.get(f"{EHR_B}/metadata", status=503, json={"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "transient", "diagnostics": "down for maintenance"}]})

    response = client().get("/readyz")

    assert response.status_code == 503 and response.json["status"] == "not ready"
    assert response.json["checks"][f"fhir {EHR_A}"] == "ok"
    assert "503" in response.json["checks"][f"fhir {EHR_B}"]
    assert len(rsps.calls) == 2


def test_readyz_reports_an_unreachable_ehr(rsps):
    rsps.get(f"{EHR_A}/metadata", body=requests.ConnectionError("refused"))

    response = client(issuers=EHR_A).get("/readyz")

    assert response.status_code == 503 and response.json["checks"][f"fhir {EHR_A}"] != "ok"


def test_readyz_reports_an_unreachable_session_store(rsps):
    rsps.get(f"{EHR_A}/metadata", json=CAPABILITY)

    response = client(dead_redis(), issuers=EHR_A).get("/readyz")

    assert response.status_code == 503
    assert response.json["checks"] == {"session-store": "unavailable", f"fhir {EHR_A}": "ok"}
