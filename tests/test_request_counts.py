"""FHIR requests per flow, counted against recorded responses: launch to review <= 6 (+ pages), Sign <= 7."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
import responses
from werkzeug.datastructures import MultiDict

from smart_app import create_app
from smart_app.samples import SAMPLE_AS_OF, load_sample
from tests.fake_ehr import ISS, form_fields, launch
from tests.recorded_fhir import searchset, serve_patient

LAUNCH_TO_REVIEW_MAX = 6  # plus extra pages of a long search
SIGN_MAX = 7
PATIENT = "ldn-fibromyalgia"  # eligible: signable
SMART = {"authorization_endpoint": "https://ehr.example.org/authorize", "token_endpoint": "https://ehr.example.org/token",
         "capabilities": ["launch-ehr", "permission-v2", "openid", "fhirUser"],
         "code_challenge_methods_supported": ["S256"], "issuer": ISS}


@pytest.fixture
def app():
    return create_app({"ALLOWED_ISSUERS": ISS, "PUBLIC_BASE_URL": "http://127.0.0.1:8000", "SECRET_KEY": "k" * 32,
                       "TODAY": SAMPLE_AS_OF.isoformat(), "SESSION_STORE": "memory"})


@pytest.fixture
def ehr(rsps):
    """The recorded EHR: discovery, metadata and the patient's reads; calls counted."""
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=SMART)
    serve_patient(rsps, load_sample(PATIENT), base=ISS)
    return rsps


def transaction_response(request):
    entries = json.loads(request.body)["entry"]
    return 200, {}, json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": "201 Created", "location": f"{e['resource']['resourceType']}/w{n}/_history/1"}}
        for n, e in enumerate(entries)]})


def fhir_calls(rsps, start: int) -> list[str]:
    """Method and path of each FHIR request since call number `start`."""
    return [f"{c.request.method} {urlsplit(c.request.url).path.removeprefix('/fhir')}" for c in rsps.calls[start:]
            if c.request.url.startswith(ISS)]


def launch_to_review(app, rsps) -> list[str]:
    """One clinician's launch (discovery, then the launch context) and the review page; its FHIR requests."""
    client, start = app.test_client(), len(rsps.calls)
    assert client.get("/launch", query_string={"iss": ISS, "launch": "xyz"}).status_code in (302, 303)
    lid = launch(app, client, PATIENT)
    page = client.get("/", query_string={"lid": lid})
    assert page.status_code == 200 and 'id="decision">eligible<' in page.get_data(as_text=True)
    return fhir_calls(rsps, start)


def test_launch_to_review_stays_within_six_fhir_requests_with_per_issuer_documents_fetched_once(app, ehr):
    first, second, third = (launch_to_review(app, ehr) for _ in range(3))
    assert len(second) <= LAUNCH_TO_REVIEW_MAX and len(third) <= LAUNCH_TO_REVIEW_MAX, second
    assert sorted(second) == sorted(["GET /Patient/ldn-fibromyalgia", "GET /MedicationStatement",
                                     "GET /MedicationRequest", "GET /MedicationDispense", "GET /Condition"])
    assert sorted(first) == sorted([*second, "GET /.well-known/smart-configuration", "GET /metadata"])


def test_sign_reads_the_record_once_and_writes_once_within_seven_fhir_requests(app, ehr):
    ehr.add_callback("POST", ISS, callback=transaction_response, content_type="application/fhir+json")
    launch_to_review(app, ehr)  # an earlier clinician: the issuer's documents are cached
    client = app.test_client()
    lid = launch(app, client, PATIENT)
    review = client.get("/", query_string={"lid": lid}).get_data(as_text=True)
    preview = client.post("/preview", data=MultiDict(form_fields(review, "plan-form"))).get_data(as_text=True)
    start = len(ehr.calls)
    signed = client.post("/sign", data=MultiDict(form_fields(preview, "sign-form")))
    calls = fhir_calls(ehr, start)
    assert signed.status_code == 303 and "/done/" in signed.headers["Location"], signed.get_data(as_text=True)
    assert len(calls) <= SIGN_MAX, calls
    assert calls.count("GET /Patient/ldn-fibromyalgia") == 1 and calls.count("POST ") == 1, calls
    assert "GET /metadata" not in calls
    written = json.loads(next(c.request.body for c in ehr.calls[start:] if c.request.method == "POST"))
    order = {**written["entry"][0]["resource"], "id": "w0"}  # the server now holds the order it confirmed
    ehr.replace(responses.GET, f"{ISS}/MedicationRequest", json=searchset([order], base=ISS))
    confirmation = client.get(signed.headers["Location"])  # the clinician lands here: part of Sign
    calls = fhir_calls(ehr, start)
    assert confirmation.status_code == 200 and len(calls) <= SIGN_MAX, calls
    assert calls.count("GET /Patient/ldn-fibromyalgia") == 1, calls
