"""The whole app against the sandbox EHR and a live FHIR server: launch, review, preview, sign, write back."""

from __future__ import annotations

import re
import threading
from datetime import date, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fake_ehr import form_fields

pytestmark = pytest.mark.live
ORDER_SYSTEM = "https://fhir.ldn-app.org/identifier/ldn-order"


@pytest.fixture(scope="module")
def sandbox():
    """Our own sandbox: these tests write orders, which other modules' shared sandbox must not see."""
    from smart_app.sandbox.demo import start_sandbox

    running = start_sandbox()
    yield running
    running.stop()


def launch(sandbox, patient: str) -> tuple[requests.Session, requests.Response]:
    """EHR launch from the sandbox launch page, following every redirect to the review page."""
    browser = requests.Session()
    page = browser.post(f"{sandbox.ehr_url}/launch", data={"patient": patient, "need_patient_banner": "true"},
                        timeout=30)
    assert page.status_code == 200 and page.url.startswith(f"{sandbox.app_url}/?lid="), page.text[:500]
    return browser, page


def launch_id(page) -> str:
    return parse_qs(urlsplit(page.url).query)["lid"][0]


def preview(browser, sandbox, page, **changes):
    fields = [(k, v) for k, v in form_fields(page.text, "plan-form") if k not in changes] + list(changes.items())
    return browser.post(f"{sandbox.app_url}/preview", data=fields, timeout=30)


def sign(browser, sandbox, previewed):
    return browser.post(f"{sandbox.app_url}/sign", data=form_fields(previewed.text, "sign-form"), timeout=60)


def our_orders(sandbox, rtype: str, patient: str) -> list[dict]:
    bundle = requests.get(f"{sandbox.fhir_upstream}/{rtype}", params={"patient": patient, "_count": 100},
                          headers={"Cache-Control": "no-cache"}, timeout=30).json()
    return [e["resource"] for e in bundle.get("entry", [])
            if any(i.get("system") == ORDER_SYSTEM for i in e["resource"].get("identifier", []))]


def decision(html: str) -> str:
    return re.search(r'id="decision">([^<]+)<', html).group(1)


def test_eligible_patient_is_launched_reviewed_signed_and_written_back_once(sandbox):
    browser, page = launch(sandbox, "ldn-crps")
    assert decision(page.text) == "eligible" and 'id="patient-name"' in page.text
    previewed = preview(browser, sandbox, page)
    assert previewed.status_code == 200 and 'id="sign-button"' in previewed.text
    done = sign(browser, sandbox, previewed)
    assert done.status_code == 200 and "/done/" in done.url
    assert re.search(r'id="ref-MedicationRequest">MedicationRequest/[^<]+<', done.text)
    again = sign(browser, sandbox, previewed)  # a resubmit of the same signed form
    assert again.status_code == 200 and again.url == done.url
    requests_ = our_orders(sandbox, "MedicationRequest", "ldn-crps")
    plans = our_orders(sandbox, "CarePlan", "ldn-crps")
    assert len(requests_) == 1 and len(plans) == 1
    doses = [d["doseAndRate"][0]["doseQuantity"]["value"] for d in requests_[0]["dosageInstruction"]]
    assert doses == [1.5, 3.0, 4.5]
    start = date.fromisoformat(plans[0]["period"]["start"])
    review = next(a["detail"]["scheduledPeriod"] for a in plans[0]["activity"]
                  if "detail" in a and a["detail"]["kind"] == "Appointment")
    assert date.fromisoformat(review["start"]) == start + timedelta(days=56)
    assert date.fromisoformat(review["end"]) == start + timedelta(days=84)


def test_double_click_on_sign_from_two_tabs_at_once_writes_one_order(sandbox):
    browser, page = launch(sandbox, "ldn-diabetic-neuropathy")
    previewed = preview(browser, sandbox, page)
    results = []
    clicks = [threading.Thread(target=lambda: results.append(sign(browser, sandbox, previewed))) for _ in range(3)]
    for t in clicks:
        t.start()
    for t in clicks:
        t.join()
    assert [r.status_code for r in results] == [200, 200, 200]
    assert len(our_orders(sandbox, "MedicationRequest", "ldn-diabetic-neuropathy")) == 1
    assert len(our_orders(sandbox, "CarePlan", "ldn-diabetic-neuropathy")) == 1


def test_contraindicated_patient_cannot_be_signed_even_by_posting_the_form(sandbox):
    browser, page = launch(sandbox, "ldn-oxycodone-active")
    assert decision(page.text) == "contraindicated"
    previewed = preview(browser, sandbox, page)
    assert 'id="sign-button"' not in previewed.text
    forged = browser.post(f"{sandbox.app_url}/sign", data=form_fields(page.text, "plan-form"), timeout=30)
    assert forged.status_code == 409 and "nothing was written" in forged.text.lower()
    assert our_orders(sandbox, "MedicationRequest", "ldn-oxycodone-active") == []


def test_invalid_dose_is_rejected_with_the_clinicians_inputs_kept(sandbox):
    browser, page = launch(sandbox, "ldn-low-back-pain")
    rejected = preview(browser, sandbox, page, target="6")
    assert rejected.status_code == 400 and "Target dose: 6 is outside the form&#39;s limits (0.5 to 4.5)" in \
        rejected.text
    assert 'id="target" name="target" value="6"' in rejected.text and 'id="sign-button"' not in rejected.text


def test_sign_without_the_csrf_token_is_rejected(sandbox):
    browser, page = launch(sandbox, "ldn-corneal-pain")
    fields = [(k, v) for k, v in form_fields(page.text, "plan-form") if k != "csrf_token"]
    response = browser.post(f"{sandbox.app_url}/sign", data=fields, timeout=30)
    assert response.status_code == 400 and our_orders(sandbox, "MedicationRequest", "ldn-corneal-pain") == []


def test_recently_stopped_tramadol_defaults_the_start_to_the_earliest_safe_date(sandbox):
    browser, page = launch(sandbox, "ldn-tramadol-5-days")
    earliest = re.search(r'id="earliest-start" datetime="([^"]+)"', page.text).group(1)
    assert decision(page.text) == "wait-washout"
    assert f'id="start" name="start" value="{earliest}"' in page.text
    previewed = preview(browser, sandbox, page)
    assert re.search(r'id="preview-decision">eligible<', previewed.text)


def test_api_assessment_returns_the_launched_patients_assessment_as_json(sandbox):
    browser, page = launch(sandbox, "ldn-ms")
    body = browser.get(f"{sandbox.app_url}/api/assessment", params={"lid": launch_id(page)}, timeout=30).json()
    assert body["patient"] == "ldn-ms" and body["decision"] == "eligible-with-cautions"
    assert {"rule", "severity", "text", "resources"} <= set(body["findings"][0])


def test_pages_need_a_launch_first(sandbox):
    response = requests.get(f"{sandbox.app_url}/api/assessment", timeout=30)
    assert response.status_code == 401 and "launch" in response.text.lower()


def test_unknown_issuer_gets_a_clear_page(sandbox):
    response = requests.get(f"{sandbox.app_url}/launch", params={"iss": "https://evil.example/fhir", "launch": "x"},
                            timeout=30, allow_redirects=False)
    assert response.status_code == 400 and "Traceback" not in response.text


@pytest.fixture(scope="module")
def readonly_sandbox():
    from smart_app.sandbox.demo import start_sandbox

    running = start_sandbox(app_config={"CLIENT_ID": "ldn-app-readonly"})
    yield running
    running.stop()


def test_without_write_scopes_the_assessment_is_shown_and_signing_is_disabled_with_the_reason(readonly_sandbox):
    browser, page = launch(readonly_sandbox, "ldn-fibromyalgia")
    assert decision(page.text) == "eligible"
    assert 'id="signing-disabled"' in page.text and "MedicationRequest" in page.text
    previewed = preview(browser, readonly_sandbox, page)
    assert 'id="sign-button"' not in previewed.text
    forged = browser.post(f"{readonly_sandbox.app_url}/sign", data=form_fields(page.text, "plan-form"), timeout=30)
    assert forged.status_code == 403
    assert our_orders(readonly_sandbox, "MedicationRequest", "ldn-fibromyalgia") == []
