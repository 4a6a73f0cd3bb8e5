"""Smoke set: the whole app against the sandbox EHR and a live FHIR server - launch, review, preview, sign, write
back once, and three simultaneous Signs writing one order. Every page's other cases run in process
(tests/test_pages.py, test_launch_context.py, test_form_limits.py)."""

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
