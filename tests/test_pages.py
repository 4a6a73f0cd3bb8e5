"""Every clinician page in process (Flask test client, the fake EHR of conftest): milliseconds per page.

The launch landing, review, preview, sign -> confirmation, the open-server search, the follow-up visit and its
recorded review, and the error pages. The two-tab, refusal and form-limit cases are in test_launch_context.py
and test_form_limits.py.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_ehr import FULL_SCOPE, form_fields
from werkzeug.datastructures import MultiDict

from smart_app.samples import SAMPLE_AS_OF
from smart_app.smart.store import COOKIE_NAME

ISS = "https://ehr.example.org/fhir"
PATIENT, LABEL = "ldn-fibromyalgia", "Maria Elena Alvarez"
SMART = {"authorization_endpoint": "https://ehr.example.org/authorize",
         "token_endpoint": "https://ehr.example.org/token", "capabilities": ["launch-ehr", "permission-v2"],
         "code_challenge_methods_supported": ["S256"]}


def text(response) -> str:
    return response.get_data(as_text=True)


def shown(page: str, element_id: str) -> str:
    """The text of the element with this id, tags and surrounding space removed."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:p|span|strong|td|dd|h[1-3]|div|code|li)>', page, re.S)
    assert match, f"no #{element_id} on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def post(client, route: str, page: str, form_id: str, **changes):
    fields = [(k, v) for k, v in form_fields(page, form_id) if k not in changes]
    fields += [(k, v) for k, vs in changes.items() for v in (vs if isinstance(vs, list) else [vs])]
    return client.post(route, data=MultiDict(fields))


def signed(client, lid: str, **changes) -> str:
    """Review -> preview -> sign for the launch; the confirmation page's URL."""
    review = text(client.get("/", query_string={"lid": lid}))
    preview = text(post(client, "/preview", review, "plan-form", **changes))
    done = post(client, "/sign", preview, "sign-form")
    assert done.status_code == 303 and done.headers["Location"].startswith("/done/"), text(done)[:2000]
    return done.headers["Location"]


# --- launch landing and review -----------------------------------------------------------------------------

def test_an_ehr_launch_sends_the_browser_to_the_ehrs_authorize_page_with_pkce(client, rsps):
    rsps.get("https://ehr.example.org/fhir/.well-known/smart-configuration", json=SMART)
    response = client.get("/launch", query_string={"iss": "https://ehr.example.org/fhir", "launch": "abc"})
    location = urlsplit(response.headers["Location"])
    query = parse_qs(location.query)
    assert response.status_code == 302 and location.path == "/authorize"
    assert query["launch"] == ["abc"] and query["code_challenge_method"] == ["S256"] and query["state"]


def test_a_completed_launch_lands_on_the_review_of_its_patient_with_the_decision(client, launched):
    page = text(client.get("/", query_string={"lid": launched(PATIENT)}))
    assert shown(page, "patient-name") == LABEL and shown(page, "patient-birth-date") == "Born 1978-04-12"
    assert shown(page, "decision") == "eligible"
    assert 'id="plan-form"' in page and 'id="sign-form"' not in page


# --- preview, sign, confirmation ---------------------------------------------------------------------------

def test_preview_shows_the_schedule_and_review_window_and_writes_nothing(client, launched, ehr):
    review = text(client.get("/", query_string={"lid": launched(PATIENT)}))
    preview = post(client, "/preview", review, "plan-form", start="2026-02-01")
    page = text(preview)
    assert preview.status_code == 200 and 'id="sign-button"' in page
    assert "1.5 mg" in page and "4.5 mg" in page
    assert "Efficacy review between Sun 29 Mar 2026 and Sun 26 Apr 2026" in page  # 8-12 weeks after 1 February
    assert ehr.written == []


def test_preview_builds_no_fhir_resources(client, launched, monkeypatch):
    def no_bundle(*_args, **_kwargs):
        raise AssertionError("preview built a FHIR write")

    monkeypatch.setattr("smart_app.fhir.build.validated_bundle", no_bundle)
    monkeypatch.setattr("smart_app.fhir.models.validate_r4", no_bundle)
    review = text(client.get("/", query_string={"lid": launched(PATIENT)}))
    assert post(client, "/preview", review, "plan-form").status_code == 200


def test_sign_writes_the_order_once_and_the_confirmation_shows_it(client, launched, ehr):
    lid = launched(PATIENT)
    confirmation = client.get(signed(client, lid))
    page = text(confirmation)
    assert confirmation.status_code == 200 and shown(page, "patient-name").startswith(LABEL)
    assert shown(page, "order-status") == "active"
    assert sorted(ref.split("/")[0] for ref in ehr.written_for(PATIENT)) == [
        "CarePlan", "MedicationRequest", "Provenance"]


def test_a_dose_outside_the_forms_limits_is_refused_naming_the_field_with_the_clinicians_inputs_kept(client, launched):
    review = text(client.get("/", query_string={"lid": launched("ldn-low-back-pain")}))
    refused = post(client, "/preview", review, "plan-form", target="6")
    assert refused.status_code == 400
    assert "Target dose: 6 is outside the form&#39;s limits (0.5 to 4.5)" in text(refused)
    assert 'id="target" name="target" value="6"' in text(refused) and 'id="sign-button"' not in text(refused)


def test_a_recently_stopped_opioid_defaults_the_start_to_the_earliest_safe_date_which_previews_signable(
        client, launched):
    review = text(client.get("/", query_string={"lid": launched("ldn-tramadol-5-days")}))
    earliest = re.search(r'id="earliest-start" datetime="([^"]+)"', review).group(1)
    assert shown(review, "decision") == "wait-washout" and earliest > SAMPLE_AS_OF.isoformat()
    assert f'id="start" name="start" value="{earliest}"' in review
    preview = text(post(client, "/preview", review, "plan-form"))
    assert shown(preview, "preview-decision") == "eligible" and 'id="sign-button"' in preview


def test_a_read_only_grant_shows_the_assessment_with_signing_disabled_and_a_forged_sign_writes_nothing(
        client, launched, ehr):
    read_only = " ".join(s for s in FULL_SCOPE.split() if not s.endswith(".c"))
    review = text(client.get("/", query_string={"lid": launched(PATIENT, scope=read_only)}))
    assert shown(review, "decision") == "eligible" and "MedicationRequest" in shown(review, "signing-disabled")
    assert 'id="sign-button"' not in text(post(client, "/preview", review, "plan-form"))
    forged = post(client, "/sign", review, "plan-form")
    assert forged.status_code == 403 and ehr.written == []


def test_a_refused_sign_shows_the_reasons_on_the_form_and_writes_nothing(client, launched, ehr):
    review = text(client.get("/", query_string={"lid": launched("ldn-oxycodone-active")}))
    refused = post(client, "/sign", review, "plan-form")
    assert refused.status_code == 409 and "Contraindicated - cannot be signed" in text(refused)
    assert 'id="plan-form"' in text(refused) and ehr.written == []


# --- an open server (LDN_OPEN_SERVERS): patient search, pick, review --------------------------------------

def test_an_open_server_search_finds_the_patient_and_the_pick_opens_the_review_under_the_banner(app, client):
    app.extensions["settings"] = replace(app.extensions["settings"], open_servers=(ISS,),
                                         open_requester="Practitioner/ldn-sample-prescriber")
    found = text(client.get("/open/patients", query_string={"iss": ISS, "id": PATIENT}))
    assert "1 patient found" in found and f'id="pick-{PATIENT}"' in found and 'id="open-server-banner"' in found
    picked = client.get("/open/review", query_string={"iss": ISS, "patient": PATIENT})
    review = text(client.get(picked.headers["Location"]))
    assert shown(review, "patient-name") == LABEL and shown(review, "decision") == "eligible"
    assert 'id="open-server-banner"' in review
    missing = client.get("/open/review", query_string={"iss": ISS, "patient": "no-such-patient"})
    assert missing.status_code == 400 and "There is no Patient/no-such-patient on this server." in text(missing)


# --- the follow-up visit -----------------------------------------------------------------------------------

@pytest.fixture
def at_week_9(app, client, launched):
    """A plan signed on SAMPLE_AS_OF (baseline pain 7), then the app's clock moved 9 weeks on: that day's
    session has long ended, so the browser starts a new one."""
    signed(client, launched(PATIENT), baseline_pain="7")
    app.extensions["settings"] = app.extensions["settings"].frozen_at(SAMPLE_AS_OF + timedelta(weeks=9))
    client.delete_cookie(COOKIE_NAME)


def test_a_launch_after_signing_opens_on_the_follow_up_with_the_plan_and_the_review_due(client, launched, at_week_9):
    lid = launched(PATIENT)
    landing = client.get("/", query_string={"lid": lid})
    assert landing.status_code == 303 and landing.headers["Location"].startswith("/follow-up?")
    page = text(client.get(landing.headers["Location"]))
    assert shown(page, "patient-name") == LABEL and shown(page, "baseline") == "7/10"
    assert shown(page, "plan-day") == "64" and shown(page, "review-window") == "due"


def test_recording_the_review_completes_it_and_a_refused_review_writes_nothing(client, launched, ehr, at_week_9):
    lid = launched(PATIENT)
    page = text(client.get("/follow-up", query_string={"lid": lid}))
    before = list(ehr.written)
    refused = post(client, "/follow-up/review", page, "review-form", pain="4", benefit="partial", decision="stop")
    assert refused.status_code == 400 and "reason" in text(refused).lower() and ehr.written == before
    done = post(client, "/follow-up/review", page, "review-form", pain="4", benefit="partial", decision="continue")
    assert done.status_code == 200, text(done)[:2000]
    assert shown(text(done), "review-decision").lower().startswith("continue")
    assert len(ehr.written) > len(before)


# --- error pages -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "route", "status", "words"), [
    ("get", "/no-such-page", 404, "There is no such page."),
    ("get", "/", 401, "launch the app again"),
    ("get", "/done/" + "0" * 32, 401, "launch the app again"),
    ("put", "/sign", 405, "That action is not available here."),
])
def test_error_pages_say_what_happened_in_plain_words_without_a_trace(client, method, route, status, words):
    response = getattr(client, method)(route)
    assert response.status_code == status and words in text(response)
    assert "Traceback" not in text(response) and "<title>" in text(response)


def test_an_unknown_order_key_is_a_clear_page_for_this_patient(client, launched):
    response = client.get("/done/" + "0" * 32, query_string={"lid": launched(PATIENT)})
    assert response.status_code == 400 and "No order with that reference for this patient." in text(response)
