"""Open-server mode (LDN_OPEN_SERVERS): patient search instead of a SMART launch, a banner on every page,
the requester from LDN_OPEN_REQUESTER, and HAPI's paging / missing total / OperationOutcome errors."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fake_ehr import form_fields
from werkzeug.datastructures import MultiDict

from smart_app import create_app
from smart_app.fhir.load import load_bundles
from smart_app.open_servers import BANNER
from smart_app.samples import SAMPLE_AS_OF, load_sample

OPEN = "http://hapi.test/fhir"
ORDER_SYSTEM = "https://fhir.ldn-app.org/identifier/ldn-order"


def app_for(open_base: str, **config):
    return create_app({"OPEN_SERVERS": open_base, "ALLOWED_ISSUERS": "https://ehr.example.org/fhir",
                       "SESSION_STORE": "memory", "SECRET_KEY": "k" * 32, "TODAY": SAMPLE_AS_OF.isoformat(),
                       "FHIR_RETRIES": 0, **config})


def text(response) -> str:
    return response.get_data(as_text=True)


def patient(pid: str, family: str, birth: str) -> dict:
    return {"fullUrl": f"{OPEN}/Patient/{pid}", "search": {"mode": "match"},
            "resource": {"resourceType": "Patient", "id": pid, "birthDate": birth,
                         "name": [{"family": family, "given": ["Ann"]}]}}


# --- in process, the open server replayed ---------------------------------------------------------------

def test_launch_with_an_open_server_as_iss_and_no_launch_goes_to_the_patient_search():
    response = app_for(OPEN).test_client().get("/launch", query_string={"iss": OPEN + "/"})

    location = urlsplit(response.headers["Location"])
    assert response.status_code == 302
    assert (location.path, parse_qs(location.query)) == ("/open/patients", {"iss": [OPEN]})


def test_a_base_on_neither_list_is_refused_by_launch_and_by_the_search_page():
    client = app_for(OPEN).test_client()

    launch = client.get("/launch", query_string={"iss": "http://other.test/fhir"})
    search = client.get("/open/patients", query_string={"iss": "http://other.test/fhir"})

    assert launch.status_code == 400 and "not registered" in text(launch)
    assert search.status_code == 400 and "not registered" in text(search) and BANNER not in text(search)


def test_search_pages_through_hapis_opaque_getpages_links_without_a_total(rsps):
    first = {"resourceType": "Bundle", "type": "searchset", "entry": [patient("p1", "Smith", "1970-01-02")],
             "link": [{"relation": "next", "url": f"{OPEN}?_getpages=abc-123&_getpagesoffset=20&_count=20"}]}
    second = {"resourceType": "Bundle", "type": "searchset", "entry": [patient("p2", "Smithers", "1980-03-04")],
              "link": [{"relation": "previous", "url": f"{OPEN}?_getpages=abc-123&_getpagesoffset=0&_count=20"}]}
    rsps.get(f"{OPEN}/Patient?_count=20&name=smith", json=first)
    rsps.get(f"{OPEN}?_getpages=abc-123&_getpagesoffset=20&_count=20", json=second)
    client = app_for(OPEN).test_client()

    page1 = client.get("/open/patients", query_string={"iss": OPEN, "name": "smith"})
    next_href = re.search(r'id="next-page" href="([^"]+)"', text(page1)).group(1).replace("&amp;", "&")
    page2 = client.get(next_href)

    assert page1.status_code == 200 and BANNER in text(page1)
    assert "Ann Smith" in text(page1) and "the server did not say how many" in text(page1)
    assert "_getpages" not in text(page1)  # the server's cursor stays server-side
    assert parse_qs(urlsplit(next_href).query)["name"] == ["smith"]
    assert page2.status_code == 200 and "Ann Smithers" in text(page2) and 'id="previous-page"' in text(page2)
    assert 'id="next-page"' not in text(page2)


def test_a_search_the_server_refuses_shows_its_reason_on_the_search_page(rsps):
    rsps.get(f"{OPEN}/Patient?_count=20&birthdate=1970-01-01", status=400, json={
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "HAPI-1234: search refused"}]})

    response = app_for(OPEN).test_client().get("/open/patients", query_string={"iss": OPEN, "birthdate": "1970-01-01"})

    assert response.status_code == 502 and BANNER in text(response) and 'id="search-form"' in text(response)
    assert "Traceback" not in text(response)


def test_a_malformed_birth_date_is_refused_before_any_request(rsps):
    response = app_for(OPEN).test_client().get("/open/patients", query_string={"iss": OPEN, "birthdate": "2 May"})

    assert response.status_code == 400 and "is not a date (YYYY-MM-DD)" in text(response)
    assert 'value="2 May"' in text(response)


def test_an_expired_results_page_asks_for_a_new_search(rsps):
    response = app_for(OPEN).test_client().get("/open/patients", query_string={"iss": OPEN, "page": "gone"})

    assert response.status_code == 400 and "expired" in text(response)


# --- against a live FHIR server without authorization -----------------------------------------------

@pytest.fixture(scope="module")
def open_server():
    from smart_app.sandbox.fhir_server import start_fhir_server

    with start_fhir_server() as server:
        doctor = {"resourceType": "Practitioner", "id": "open-doc", "name": [{"family": "Open", "given": ["Dana"]}]}
        load_bundles(server.base_url, {pid: load_sample(pid) for pid in ("ldn-crps", "ldn-fibromyalgia")}
                     | {"doctor": {"resourceType": "Bundle", "entry": [{"resource": doctor}]}})
        yield server.base_url


def pick(client, base: str, pid: str):
    found = client.get("/open/patients", query_string={"iss": base, "id": pid})
    href = re.search(rf'id="pick-{pid}" href="([^"]+)"', text(found)).group(1).replace("&amp;", "&")
    return client.get(href, follow_redirects=True)


@pytest.mark.live
def test_picking_a_patient_opens_the_review_with_the_banner_and_without_a_requester_signing_is_disabled(
        open_server):
    client = app_for(open_server).test_client()

    review = pick(client, open_server, "ldn-fibromyalgia")

    assert review.status_code == 200 and BANNER in text(review)
    assert re.search(r'id="decision">eligible<', text(review))
    assert 'id="signing-disabled"' in text(review) and "LDN_OPEN_REQUESTER" in text(review)


@pytest.mark.live
def test_with_a_requester_the_picked_patient_is_reviewed_signed_and_written_to_the_open_server(open_server):
    client = app_for(open_server, OPEN_REQUESTER="Practitioner/open-doc").test_client()

    review = pick(client, open_server, "ldn-crps")
    previewed = client.post("/preview", data=MultiDict(form_fields(text(review), "plan-form")))
    done = client.post("/sign", data=MultiDict(form_fields(text(previewed), "sign-form")), follow_redirects=True)

    assert done.status_code == 200 and BANNER in text(done) and BANNER in text(previewed)
    orders = requests.get(f"{open_server}/MedicationRequest", params={"patient": "ldn-crps"}, timeout=10).json()
    ours = [e["resource"] for e in orders.get("entry", [])
            if any(i.get("system") == ORDER_SYSTEM for i in e["resource"].get("identifier", []))]
    assert len(ours) == 1 and ours[0]["requester"]["reference"] == "Practitioner/open-doc"


@pytest.mark.live
def test_picking_an_id_the_server_does_not_have_says_so(open_server):
    response = app_for(open_server).test_client().get("/open/review", query_string={"iss": open_server,
                                                                                   "patient": "nobody-here"})

    assert response.status_code == 400 and "There is no Patient/nobody-here on this server" in text(response)
