"""sekmet-fhir as the sandbox runs it: loading, paging, conditional create and atomic transactions."""

from __future__ import annotations

import json
import socket
import uuid

import pytest
import requests

from smart_app.fhir.load import LoadError, load_bundles
from smart_app.samples import load_sample
from smart_app.sandbox.fhir_server import FhirServerError, start_fhir_server

pytestmark = pytest.mark.live

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ORDER_SYSTEM = "https://fhir.ldn-app.org/identifier/ldn-order"


def post_transaction(base: str, entries: list[dict]) -> requests.Response:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return requests.post(base, data=json.dumps(bundle), headers=FHIR_JSON, timeout=10)


def search(url: str, **params) -> dict:
    response = requests.get(url, params=params or None, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def next_link(bundle: dict) -> str | None:
    return next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


def orders_with(server, key: str) -> int:
    return search(f"{server.base_url}/MedicationRequest", identifier=f"{ORDER_SYSTEM}|{key}")["total"]


def order(key: str, patient: str) -> dict:
    return {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "identifier": [{"system": ORDER_SYSTEM, "value": key}],
            "subject": {"reference": f"Patient/{patient}"},
            "medicationCodeableConcept": {"text": "naltrexone 1.5 mg capsule"}}


@pytest.fixture(scope="module")
def two_samples(fhir_server):
    samples = [load_sample("ldn-diabetic-neuropathy"), load_sample("ldn-medication-reference")]
    load_bundles(fhir_server.base_url, dict(enumerate(samples)))
    return samples


def test_loaded_samples_are_searchable_by_patient_with_their_included_medication(fhir_server, two_samples):
    bundle = search(f"{fhir_server.base_url}/MedicationRequest", patient="ldn-medication-reference",
                    _include="MedicationRequest:medication")

    modes = sorted((e["search"]["mode"], e["resource"]["resourceType"]) for e in bundle["entry"])
    assert modes == [("include", "Medication"), ("match", "MedicationRequest"),
                     ("match", "MedicationRequest")]


def test_medication_requests_page_two_at_a_time_and_next_links_reach_every_match(fhir_server, two_samples):
    expected = {e["resource"]["id"] for e in two_samples[0]["entry"]
                if e["resource"]["resourceType"] == "MedicationRequest"}
    seen, pages = [], 0
    url: str | None = f"{fhir_server.base_url}/MedicationRequest?patient=ldn-diabetic-neuropathy&_count=2"

    while url:
        bundle = search(url)
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        pages += 1
        url = next_link(bundle)
        assert url is None or url.startswith(f"{fhir_server.base_url}/MedicationRequest?")

    assert len(expected) == 3
    assert pages == 2
    assert sorted(seen) == sorted(expected)


def test_conditional_create_posted_twice_creates_one_resource_and_answers_200_the_second_time(fhir_server):
    key = str(uuid.uuid4())
    entry = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": order(key, "ldn-fibromyalgia"),
             "request": {"method": "POST", "url": "MedicationRequest",
                         "ifNoneExist": f"identifier={ORDER_SYSTEM}|{key}"}}

    first = post_transaction(fhir_server.base_url, [entry])
    second = post_transaction(fhir_server.base_url, [entry])

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["entry"][0]["response"]["status"] == "201 Created"
    assert second.json()["entry"][0]["response"]["status"] == "200 OK"
    assert second.json()["entry"][0]["response"]["location"] == first.json()["entry"][0]["response"][
        "location"]
    assert orders_with(fhir_server, key) == 1


def test_urn_uuid_references_inside_a_transaction_are_rewritten_to_the_created_ids(fhir_server):
    key, order_url = str(uuid.uuid4()), f"urn:uuid:{uuid.uuid4()}"
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/ldn-fibromyalgia"},
            "activity": [{"reference": {"reference": order_url}}]}

    response = post_transaction(fhir_server.base_url, [
        {"fullUrl": order_url, "resource": order(key, "ldn-fibromyalgia"),
         "request": {"method": "POST", "url": "MedicationRequest"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": plan,
         "request": {"method": "POST", "url": "CarePlan"}},
    ])

    assert response.status_code == 200, response.text
    order_entry, plan_entry = response.json()["entry"]
    order_id = order_entry["resource"]["id"]
    assert plan_entry["resource"]["activity"][0]["reference"]["reference"] == f"MedicationRequest/{order_id}"


def test_a_transaction_with_a_failing_entry_writes_nothing(fhir_server):
    key = str(uuid.uuid4())

    response = post_transaction(fhir_server.base_url, [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": order(key, "ldn-fibromyalgia"),
         "request": {"method": "POST", "url": "MedicationRequest"}},
        # CarePlan.subject is required: this entry fails validation
        {"resource": {"resourceType": "CarePlan", "status": "active", "intent": "plan"},
         "request": {"method": "POST", "url": "CarePlan"}},
    ])

    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "rolled back" in outcome["issue"][0]["diagnostics"]
    assert orders_with(fhir_server, key) == 0


def test_load_bundles_raises_with_the_operation_outcome_diagnostics(fhir_server):
    broken = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "MedicationRequest", "id": "broken-order", "status": "active",
                      "intent": "order", "medicationCodeableConcept": {"text": "x"}}}]}

    with pytest.raises(LoadError, match=r"MedicationRequest/broken-order.*\(400\).*subject"):
        load_bundles(fhir_server.base_url, {"broken": broken})


def test_a_server_started_with_a_public_base_writes_its_links_there_and_stops_cleanly(tmp_path):
    server = start_fhir_server(public_base_url="http://127.0.0.1:9/", data_dir=tmp_path)
    try:
        settings = json.loads((tmp_path / "settings.yaml").read_text())
        load_bundles(server.base_url, {"sample": load_sample("ldn-diabetic-neuropathy")})
        bundle = search(f"{server.base_url}/MedicationRequest", _count=1)
    finally:
        server.stop()

    assert (settings["host"], settings["simulator"], settings["server_auth"]) == (
        "127.0.0.1", {"enabled": False}, {"types": ["none"]})
    assert server.public_base_url == "http://127.0.0.1:9/fhir"
    assert next_link(bundle).startswith("http://127.0.0.1:9/fhir/MedicationRequest?")
    assert bundle["entry"][0]["fullUrl"].startswith("http://127.0.0.1:9/fhir/MedicationRequest/")
    assert server.process.poll() is not None


def test_a_server_that_cannot_bind_its_port_fails_fast_with_its_output():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(FhirServerError, match="(?s)exited with code .*address already in use"):
            start_fhir_server(port=port, startup_timeout=20)
