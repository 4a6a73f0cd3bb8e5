"""What `docker compose up` runs, as processes: sekmet-fhir in HAPI's role, a real redis-server, the `seed`
service (`ldn-app load`), and `ldn-app serve` in open-server mode; a clinician picks, reviews and signs."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import requests
from processes import LDN_APP, started, stopped, wait_for

from smart_app.open_servers import BANNER
from smart_app.sandbox.fhir_server import free_port, start_fhir_server

pytestmark = pytest.mark.live
ORDER_SYSTEM = "https://fhir.ldn-app.org/identifier/ldn-order"
REQUESTER = "Practitioner/ldn-sample-prescriber"


def fields(html: str, form_id: str) -> list[tuple[str, str]]:
    from fake_ehr import form_fields

    return form_fields(html, form_id)


def test_seeded_open_server_app_on_redis_picks_reviews_and_signs_an_order_the_server_then_holds(own_redis, capsys):
    began = time.monotonic()
    with start_fhir_server() as hapi:
        seed = subprocess.run([LDN_APP, "load", "--server", hapi.base_url, "--samples"], capture_output=True,
                              text=True, timeout=120)
        assert seed.returncode == 0 and seed.stdout.splitlines()[-1].startswith("done: "), seed.stderr
        port = free_port()
        app_url = f"http://127.0.0.1:{port}"
        app = started([LDN_APP, "serve", "--host", "127.0.0.1", "--port", str(port)],
                      {"LDN_OPEN_SERVERS": hapi.base_url, "LDN_OPEN_REQUESTER": REQUESTER,
                       "LDN_ALLOWED_ISSUERS": "", "LDN_SESSION_STORE": own_redis.url,
                       "LDN_SECRET_KEY": "t" * 40, "LDN_PUBLIC_BASE_URL": app_url})
        try:
            wait_for(f"{app_url}/healthz", app)
            ready = requests.get(f"{app_url}/readyz", timeout=30)
            up = time.monotonic()
            browser = requests.Session()
            landing = browser.get(f"{app_url}/launch", params={"iss": hapi.base_url}, timeout=30)
            search = browser.get(landing.url, params={"name": "Okafor"}, timeout=30)
            pick = re.search(r'id="pick-ldn-crps" href="([^"]+)"', search.text).group(1).replace("&amp;", "&")
            review = browser.get(app_url + pick, timeout=60)
            previewed = browser.post(f"{app_url}/preview", data=fields(review.text, "plan-form"), timeout=60)
            done = browser.post(f"{app_url}/sign", data=fields(previewed.text, "sign-form"), timeout=60)
            flow = time.monotonic() - up
        finally:
            log = stopped(app)
        stored = {rtype: requests.get(f"{hapi.base_url}/{rtype}", params={"patient": "ldn-crps"}, timeout=30).json()
                  for rtype in ("MedicationRequest", "CarePlan")}

    ours = {rtype: [e["resource"] for e in bundle.get("entry", [])
                    if any(i.get("system") == ORDER_SYSTEM for i in e["resource"].get("identifier", []))]
            for rtype, bundle in stored.items()}
    with capsys.disabled():
        print(f"\ntopology: total {time.monotonic() - began:.1f} s (sekmet + seed + serve start "
              f"{up - began:.1f} s, pick -> review -> sign {flow:.1f} s)")
    assert ready.status_code == 200 and ready.json()["checks"] == {"session-store": "ok", f"fhir {hapi.base_url}": "ok"}
    assert search.status_code == 200 and BANNER in search.text and "James Okafor" in search.text
    assert review.status_code == 200 and "/?lid=" in review.url and BANNER in review.text
    assert re.search(r'id="decision">eligible<', review.text) and 'id="signing-disabled"' not in review.text
    assert done.status_code == 200 and "/done/" in done.url and BANNER in done.text
    assert len(ours["MedicationRequest"]) == 1 and len(ours["CarePlan"]) == 1
    assert ours["MedicationRequest"][0]["requester"]["reference"] == REQUESTER
    assert "Traceback" not in log
