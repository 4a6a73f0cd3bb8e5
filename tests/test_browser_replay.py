"""A recording replayed through the web app in a real browser: `ldn-app serve --replay` (no FHIR server),
the launch's patient search, the pick, the review, Sign -> the Bundle it would send and "nothing written"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from processes import LDN_APP, started, stopped, wait_for
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# its module-level skip (no chromium, no selenium) skips this module too; its fixtures are this module's own
from test_browser_e2e import WAIT, driver, preview, replaced, screenshot, text_of  # noqa: F401  (fixtures)
from test_browser_e2e import wait_for as wait_for_element

from smart_app.open_servers import BANNER
from smart_app.sandbox.fhir_server import free_port

pytestmark = pytest.mark.browser
RECORDINGS = sorted((Path(__file__).parent / "recordings").glob("ldn-*.yaml"))


@pytest.fixture(scope="module")
def replay_url():
    """`ldn-app serve --replay` on the recorded sample patients, on a free loopback port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = started([LDN_APP, "serve", "--replay", *map(str, RECORDINGS), "--host", "127.0.0.1", "--port", str(port)],
                  {"LDN_PUBLIC_BASE_URL": url, "LDN_SESSION_STORE": "memory"})
    try:
        wait_for(f"{url}/healthz", app)
        yield url
    finally:
        log = stopped(app)
        assert "Traceback" not in log, log


def test_a_recording_replays_in_the_browser_from_launch_to_sign_showing_the_bundle_and_writing_nothing(
        driver, replay_url):  # noqa: F811
    driver.delete_all_cookies()
    driver.get(f"{replay_url}/launch")
    assert text_of(driver, "#open-server-banner") == BANNER
    wait_for_element(driver, "#pick-ldn-crps").click()
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.ID, "decision"))
    assert text_of(driver, "#decision") == "eligible"
    assert "Patient/ldn-crps" in text_of(driver, "header.banner")

    preview(driver)
    old = driver.find_element(By.ID, "sign-form")
    driver.find_element(By.ID, "sign-button").click()
    WebDriverWait(driver, WAIT).until(replaced(old))
    bundle = json.loads(text_of(driver, "#replay-bundle"))
    screenshot(driver, "replay-sign")

    assert "nothing was sent and nothing was written" in text_of(driver, "#nothing-written")
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    order = bundle["entry"][0]["resource"]
    assert order["resourceType"] == "MedicationRequest" and order["subject"]["reference"] == "Patient/ldn-crps"
    assert text_of(driver, "#order-key") in json.dumps(order["identifier"])
