"""One launch, one context - in process, with Flask's test client and a fake EHR gateway.

Two launches in one browser (tabs, EHR iframes), each page and form carrying its launch id, every POST
checked for its launch, CSRF token and patient; the prescriber rule; /logout; sessions under abuse.
"""

from __future__ import annotations

import re
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_ehr import FULL_SCOPE, browser_owner, form_fields, launch
from werkzeug.datastructures import MultiDict

from smart_app.smart.store import COOKIE_NAME, MemoryStore

A, B = "ldn-fibromyalgia", "ldn-crps"
A_LABEL, B_LABEL = "Maria Elena Alvarez (born 1978-04-12)", "James Okafor (born 1985-09-30)"
ISS = "https://ehr.example.org/fhir"


def page(response) -> str:
    return response.get_data(as_text=True)


def review(client, lid):
    response = client.get("/", query_string={"lid": lid})
    assert response.status_code == 200, page(response)[:300]
    return page(response)


def previewed(client, lid) -> str:
    response = post(client, "/preview", form_fields(review(client, lid), "plan-form"))
    assert response.status_code == 200 and 'id="sign-button"' in page(response), page(response)[:2000]
    return page(response)


def post(client, route, fields):
    return client.post(route, data=MultiDict(fields))


def sign(client, form_page, **changes):
    fields = [(k, v) for k, v in form_fields(form_page, "sign-form") if k not in changes] + list(changes.items())
    return post(client, "/sign", fields)


# --- one browser, several launches ---------------------------------------------------------

def test_two_launches_in_one_browser_each_show_their_own_patient(app, client):
    tab_a, tab_b = launch(app, client, A), launch(app, client, B)
    assert tab_a != tab_b
    assert "Maria Elena Alvarez" in review(client, tab_a) and "James Okafor" not in review(client, tab_a)
    assert "James Okafor" in review(client, tab_b) and "Maria Elena Alvarez" not in review(client, tab_b)


def test_signing_in_the_first_tab_after_launching_another_patient_writes_to_the_first_patient_only(
        app, client, ehr):
    tab_a = launch(app, client, A)
    form_a = previewed(client, tab_a)
    launch(app, client, B)  # the second tab: the same browser, the same cookie
    done = sign(client, form_a)
    assert done.status_code == 303 and f"lid={tab_a}" in done.headers["Location"]
    assert len(ehr.written_for(A)) == 3 and ehr.written_for(B) == []
    confirmation = page(client.get(done.headers["Location"]))
    assert "Maria Elena Alvarez" in confirmation and "James Okafor" not in confirmation


def test_every_form_and_link_of_a_launch_carries_its_launch_id_and_patient(app, client):
    lid = launch(app, client, A)
    form_page = previewed(client, lid)
    for form_id in ("plan-form", "sign-form", "logout-form"):
        fields = dict(form_fields(form_page, form_id))
        assert fields["lid"] == lid and fields["patient"] == A and fields["csrf_token"], form_id
    done = client.get(sign(client, form_page).headers["Location"])
    assert f'href="/?lid={lid}"' in page(done)


def test_preview_and_the_sign_button_name_the_patient_with_birth_date(app, client):
    form_page = previewed(client, launch(app, client, A))
    assert re.search(r'id="preview-patient">Maria Elena Alvarez \(born 1978-04-12\)<', form_page)
    assert re.search(r'id="sign-button">Sign and send to the EHR for Maria Elena Alvarez \(born 1978-04-12\)<',
                     form_page)


def test_a_post_naming_another_patient_than_its_launch_is_refused_naming_both_patients(app, client, ehr):
    tab_a, tab_b = launch(app, client, A), launch(app, client, B)
    form_a = previewed(client, tab_a)
    csrf_b = dict(form_fields(review(client, tab_b), "plan-form"))["csrf_token"]
    refused = sign(client, form_a, lid=tab_b, csrf_token=csrf_b)  # A's form, sent under B's launch
    assert refused.status_code == 409
    text = page(refused)
    assert A_LABEL in text and B_LABEL in text and "nothing was written" in text
    assert ehr.written == []


def test_a_launch_id_from_another_browser_is_useless(app, ehr):
    mine, theirs = app.test_client(), app.test_client()
    lid = launch(app, theirs, A)
    form_a = previewed(theirs, lid)
    launch(app, mine, B)
    assert mine.get("/", query_string={"lid": lid}).status_code == 401
    stolen = sign(mine, form_a)
    assert stolen.status_code == 409 and A_LABEL in page(stolen) and ehr.written == []


def test_a_post_without_a_launch_id_is_refused_and_writes_nothing(app, client, ehr):
    form_a = previewed(client, launch(app, client, A))
    fields = [(k, v) for k, v in form_fields(form_a, "sign-form") if k != "lid"]
    refused = post(client, "/sign", fields)
    assert refused.status_code == 409 and ehr.written == []


@pytest.mark.parametrize("route", ["/preview", "/sign", "/logout"])
def test_every_post_needs_the_csrf_token_of_its_own_launch(app, client, ehr, route):
    tab_a, tab_b = launch(app, client, A), launch(app, client, B)
    form_a = previewed(client, tab_a)
    csrf_b = dict(form_fields(review(client, tab_b), "plan-form"))["csrf_token"]
    for token in ("", csrf_b, "x" * 43, "é"):
        fields = [(k, v) for k, v in form_fields(form_a, "sign-form") if k != "csrf_token"]
        response = post(client, route, [*fields, ("csrf_token", token)])
        assert response.status_code == 400 and "Traceback" not in page(response)
    assert ehr.written == [] and review(client, tab_a)


def test_a_confirmation_page_belongs_to_its_launch(app, client):
    tab_a, tab_b = launch(app, client, A), launch(app, client, B)
    done = sign(client, previewed(client, tab_a)).headers["Location"]
    key = urlsplit(done).path.rsplit("/", 1)[1]
    assert client.get(done).status_code == 200
    other = client.get(f"/done/{key}", query_string={"lid": tab_b})
    assert other.status_code == 400 and "Maria" not in page(other)


def test_pages_without_a_launch_id_ask_for_a_new_launch(app, client):
    launch(app, client, A)
    for path in ("/", "/api/assessment"):
        response = client.get(path)
        assert response.status_code == 401 and "launch the app again" in page(response).lower()


def test_the_api_returns_the_named_launchs_patient(app, client):
    tab_a, tab_b = launch(app, client, A), launch(app, client, B)
    assert client.get("/api/assessment", query_string={"lid": tab_a}).get_json()["patient"] == A
    assert client.get("/api/assessment", query_string={"lid": tab_b}).get_json()["patient"] == B


def test_each_request_builds_one_gateway_from_the_apps_factory(app, client, ehr):
    lid = launch(app, client, A)
    sign(client, previewed(client, lid))
    assert len(ehr.gateways) == 3  # review, preview, sign: one each, though sign reads and writes


# --- the prescriber --------------------------------------------------------------------------

@pytest.mark.parametrize("fhir_user, reason", [
    (None, "did not identify the signed-in user"),
    ("https://ehr.example.org/fhir/Patient/ldn-fibromyalgia", "is a Patient, not a Practitioner"),
    ("RelatedPerson/rp-1", "is a RelatedPerson, not a Practitioner"),
])
def test_without_a_practitioner_the_assessment_is_shown_and_signing_is_disabled(app, client, ehr,
                                                                                 fhir_user, reason):
    lid = launch(app, client, A, fhir_user=fhir_user)
    shown = review(client, lid)
    assert 'id="decision">eligible<' in shown
    assert re.search(r'id="signing-disabled">Signing is disabled: [^<]*' + re.escape(reason), shown)
    form_page = page(post(client, "/preview", form_fields(shown, "plan-form")))
    assert 'id="sign-button"' not in form_page
    forged = post(client, "/sign", form_fields(shown, "plan-form"))
    assert forged.status_code == 403 and ehr.written == []


def test_a_practitioner_role_may_sign(app, client, ehr):
    lid = launch(app, client, A, fhir_user="PractitionerRole/role-1")
    assert sign(client, previewed(client, lid)).status_code == 303 and len(ehr.written_for(A)) == 3


# --- what the token may read (issue 8 item 1) -------------------------------------------------

def test_a_filtered_medication_request_grant_shows_cannot_determine_naming_the_type(app, client):
    filtered = FULL_SCOPE.replace("patient/MedicationRequest.rs", "patient/MedicationRequest.rs?status=active")
    lid = launch(app, client, A, scope=filtered)
    shown = review(client, lid)
    assert 'id="decision">cannot-determine<' in shown
    assert "did not grant this app a read of every MedicationRequest record" in shown
    api = client.get("/api/assessment", query_string={"lid": lid}).get_json()
    assert api["decision"] == "cannot-determine"


# --- /logout and timeouts --------------------------------------------------------------------

def test_logout_deletes_the_session_and_its_launches(app, client):
    tab_a, tab_b = launch(app, client, A), launch(app, client, B)
    store = app.extensions["smart.store"]
    sid = client.get_cookie(COOKIE_NAME).value
    for lid in (tab_a, tab_b):  # the browser's index of its launches (what /callback records)
        data = store.get("session:" + sid)
        store.set("session:" + sid, {**data, "launch_ids": [*data["launch_ids"], lid]}, 1800)
    out = post(client, "/logout", form_fields(review(client, tab_a), "logout-form"))
    assert out.status_code == 200 and "signed out" in page(out).lower()
    assert store.get("session:" + sid) is None and client.get_cookie(COOKIE_NAME) is None
    assert store.get("launch:" + tab_a) is None and store.get("launch:" + tab_b) is None
    assert client.get("/", query_string={"lid": tab_a}).status_code == 401


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app):
    """One fake clock for the store, the session interface and the launches."""
    fake = Clock()
    store = MemoryStore(clock=fake)
    app.extensions["smart.store"] = app.session_interface.store = store
    app.extensions["settings"] = replace(app.extensions["settings"], clock=fake)
    return fake


def test_a_launch_idle_for_longer_than_the_idle_timeout_ends(app, client, clock):
    lid = launch(app, client, A)
    clock.now += 29 * 60
    assert client.get("/", query_string={"lid": lid}).status_code == 200
    clock.now += 29 * 60  # used 29 minutes ago: still alive
    assert client.get("/", query_string={"lid": lid}).status_code == 200
    clock.now += 31 * 60
    assert client.get("/", query_string={"lid": lid}).status_code == 401


def test_a_launch_in_constant_use_still_ends_after_the_absolute_timeout(app, client, clock):
    app.extensions["settings"] = replace(app.extensions["settings"], session_max_hours=1)
    lid = launch(app, client, A)
    for _ in range(3):
        clock.now += 20 * 60 - 1
        assert client.get("/", query_string={"lid": lid}).status_code == 200
    clock.now += 20 * 60
    assert client.get("/", query_string={"lid": lid}).status_code == 401


# --- no session without a valid state --------------------------------------------------------

def test_a_bare_callback_creates_no_session_and_no_cookie(app, client):
    for args in ({}, {"code": "c", "state": "forged"}, {"error": "access_denied", "state": "x"}):
        response = client.get("/callback", query_string=args)
        assert response.status_code == 400 and "Set-Cookie" not in response.headers
    assert len(app.extensions["smart.store"]) == 0


def test_a_launch_with_a_disallowed_iss_creates_no_session_and_no_cookie(app, client):
    response = client.get("/launch", query_string={"iss": "https://evil.example.com/fhir", "launch": "x"})
    assert response.status_code == 400 and "Set-Cookie" not in response.headers
    assert len(app.extensions["smart.store"]) == 0


def smart_configuration(token_endpoint="https://ehr.example.org/auth/token"):
    return {"issuer": ISS, "authorization_endpoint": "https://ehr.example.org/auth/authorize",
            "token_endpoint": token_endpoint, "capabilities": ["launch-ehr", "permission-v2"],
            "code_challenge_methods_supported": ["S256"]}


def test_launches_over_the_pending_cap_get_a_clear_503_and_store_nothing(app, rsps):
    app.extensions["settings"] = replace(app.extensions["settings"], max_pending_launches=2)
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=smart_configuration())
    for _ in range(2):
        assert app.test_client().get("/launch", query_string={"iss": ISS, "launch": "x"}).status_code == 302
    store = app.extensions["smart.store"]
    before = len(store)
    flood = app.test_client().get("/launch", query_string={"iss": ISS, "launch": "x"})
    assert flood.status_code == 503 and "too many launches" in page(flood).lower()
    assert "Set-Cookie" not in flood.headers and len(store) == before


def test_a_launch_stops_before_authorizing_when_the_token_endpoint_is_on_another_origin(app, client, rsps):
    rsps.get(f"{ISS}/.well-known/smart-configuration",
             json=smart_configuration(token_endpoint="https://tokens.elsewhere.example/token"))
    response = client.get("/launch", query_string={"iss": ISS, "launch": "x"})
    assert response.status_code == 400 and "token endpoint" in page(response)
    assert "Set-Cookie" not in response.headers and len(app.extensions["smart.store"]) == 0


def test_a_launch_records_its_state_for_this_browser_only(app, client, rsps):
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=smart_configuration())
    started = client.get("/launch", query_string={"iss": ISS, "launch": "x"})
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    pending = app.extensions["smart.store"].get("pending:" + state)
    assert pending["owner"] == browser_owner(app, client)
    stranger = app.test_client()
    launch(app, stranger, B)  # a browser with its own session
    for browser in (app.test_client(), stranger):
        other = browser.get("/callback", query_string={"code": "c", "state": state})
        assert other.status_code == 400 and "Set-Cookie" not in other.headers
    assert app.extensions["smart.store"].get("pending:" + state) == pending  # still this browser's to use


def test_a_confirmation_opened_from_another_launch_of_the_patient_finds_the_careplan_on_the_server(app, client, ehr):
    done = sign(client, previewed(client, launch(app, client, A))).headers["Location"]
    key = urlsplit(done).path.rsplit("/", 1)[1]
    care_plan = next(ref for ref in ehr.written_for(A) if ref.startswith("CarePlan/"))
    later = client.get(f"/done/{key}", query_string={"lid": launch(app, client, A)})  # no refs saved in this launch
    assert later.status_code == 200 and f'id="ref-CarePlan">{care_plan}<' in page(later)
