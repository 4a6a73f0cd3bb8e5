"""Issue 12 end to end in a real browser: sign with a baseline, move the app's clock to week 9, relaunch, see
the follow-up, record "continue", then check sekmet directly.

The sandbox's app runs in this process, so the test moves its clock through the app's TODAY setting (the same
one the in-process tests pin); the browser and the EHR keep real time.
"""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# its module-level skip (no chromium, no selenium) skips this module too; its fixtures are this module's own
from test_browser_e2e import (  # noqa: F401  (fixtures)
    WAIT,
    driver,
    ehr_launch,
    ours,
    own_sandbox,
    preview,
    replaced,
    screenshot,
    text_of,
    upstream_search,
    wait_for,
)

pytestmark = pytest.mark.browser
PATIENT = "ldn-corneal-pain"
LOINC_PAIN = ("http://loinc.org", "72514-3")


def relaunch_to_follow_up(browser, sandbox, patient: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{sandbox.ehr_url}/")
    wait_for(browser, f"button[aria-label^='EHR launch for '][aria-label$='({patient})']").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "review-window"))
    assert urlsplit(browser.current_url).path == "/follow-up", browser.current_url


def click_and_wait(browser, button_id: str, then_css: str) -> None:
    old = browser.find_element(By.ID, button_id)
    old.click()
    WebDriverWait(browser, WAIT).until(replaced(old))  # staleness_of, also when Chromium reports the node gone
    wait_for(browser, then_css)


def test_sign_with_a_baseline_then_at_week_9_the_follow_up_records_continue(driver, own_sandbox):  # noqa: F811
    sandbox, today = own_sandbox, date.today()
    ehr_launch(driver, sandbox, PATIENT)
    wait_for(driver, "#baseline_pain").send_keys("7")
    preview(driver)
    assert text_of(driver, "#preview-baseline").startswith("Baseline pain score 7/10")
    click_and_wait(driver, "sign-button", "#written")

    settings = sandbox.app.extensions["settings"]
    sandbox.app.extensions["settings"] = settings.frozen_at(today + timedelta(days=63))  # week 9 for the app
    try:
        relaunch_to_follow_up(driver, sandbox, PATIENT)
        assert text_of(driver, "#plan-start") == today.isoformat()
        assert text_of(driver, "#plan-day") == "64"
        assert "4.5 mg" in text_of(driver, "#plan-today")
        assert text_of(driver, "#review-window") == "due"
        assert text_of(driver, "#baseline") == "7/10"
        assert not driver.find_elements(By.ID, "alerts")
        screenshot(driver, "follow-up")

        driver.find_element(By.ID, "pain").send_keys("3")
        for box in ("benefit-clear", "se-vivid-dreams", "decision-continue"):
            driver.find_element(By.ID, box).click()
        click_and_wait(driver, "review-button", "#review-written")
        assert text_of(driver, "#review-decision") == "continue"
        screenshot(driver, "review-recorded")
    finally:
        sandbox.app.extensions["settings"] = settings

    # straight to sekmet (no proxy, no token): what did the app write?
    orders = {o["status"]: o for o in ours(upstream_search(sandbox, "MedicationRequest", PATIENT))}
    assert set(orders) == {"completed", "active"}, list(orders)
    maintenance, titration = orders["active"], orders["completed"]
    assert maintenance["priorPrescription"]["reference"] == f"MedicationRequest/{titration['id']}"
    assert [d["doseAndRate"][0]["doseQuantity"]["value"] for d in maintenance["dosageInstruction"]] == [4.5]
    [plan] = ours(upstream_search(sandbox, "CarePlan", PATIENT))
    [review] = [a for a in plan["activity"] if a.get("detail", {}).get("code", {}).get("coding", [{}])[0].get("code")
                == "efficacy-review"]
    assert review["detail"]["status"] == "completed"
    assert {c["coding"][0]["code"] for c in review["outcomeCodeableConcept"]} == {"benefit-clear", "continue",
                                                                                  "vivid-dreams"}
    scores = sorted(o["valueInteger"] for o in upstream_search(sandbox, "Observation", PATIENT)
                    if any((c["system"], c["code"]) == LOINC_PAIN for c in o["code"]["coding"]))
    assert scores == [3, 7]
    assert plan["supportingInfo"][0]["reference"].startswith("Observation/")
