"""`ldn-app demo --fhir-upstream/--public-url/--app-url`: the sandbox EHR in front of a server it did not start."""

from __future__ import annotations

import re
import subprocess
from types import SimpleNamespace

import pytest
import requests
from forwarder import Forwarder
from processes import LDN_APP, started, stopped, wait_for
from test_app_flow_live import ORDER_SYSTEM, decision, preview, sign

from smart_app.fhir.load import load_bundles
from smart_app.sandbox.fhir_server import free_port, start_fhir_server

pytestmark = pytest.mark.live


def stored(fhir_base: str, rtype: str, patient: str) -> list[dict]:
    bundle = requests.get(f"{fhir_base}/{rtype}", params={"patient": patient, "_count": 100}, timeout=30).json()
    return [e["resource"] for e in bundle.get("entry", [])
            if any(i.get("system") == ORDER_SYSTEM for i in e["resource"].get("identifier", []))]


@pytest.fixture(scope="module")
def topology():
    """sekmet alone; `ldn-app serve`; a forwarder; `ldn-app demo` in front of sekmet, reached through the forwarder."""
    ehr_port, app_port = free_port(), free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    with start_fhir_server() as fhir, Forwarder(f"http://127.0.0.1:{ehr_port}") as proxy:
        app = started([LDN_APP, "serve", "--host", "127.0.0.1", "--port", str(app_port)],
                      {"LDN_ALLOWED_ISSUERS": f"{proxy.url}/fhir", "LDN_PUBLIC_BASE_URL": app_url,
                       "LDN_SECRET_KEY": "s" * 40, "LDN_SESSION_STORE": "memory"})
        demo = started([LDN_APP, "demo", "--fhir-upstream", fhir.base_url, "--load-samples",
                        "--public-url", proxy.url, "--app-url", app_url, "--ehr-port", str(ehr_port)])
        try:
            wait_for(f"{app_url}/.well-known/jwks.json", app)
            wait_for(f"{proxy.url}/fhir/.well-known/smart-configuration", demo)
            yield SimpleNamespace(fhir=fhir, proxy=proxy, app_url=app_url, demo=demo)
        finally:
            output = stopped(demo)
            stopped(app)
    assert "Sandbox stopped." in output


def test_launch_review_and_sign_through_a_forwarding_proxy_write_the_order_to_the_upstream_server(topology):
    public = topology.proxy.url
    browser = requests.Session()

    page = browser.post(f"{public}/launch", data={"patient": "ldn-crps", "need_patient_banner": "true"}, timeout=60)
    assert page.status_code == 200 and page.url.startswith(f"{topology.app_url}/?lid="), page.text[:500]
    assert decision(page.text) == "eligible"
    previewed = preview(browser, topology, page)
    done = sign(browser, topology, previewed)

    assert done.status_code == 200 and "/done/" in done.url
    orders = stored(topology.fhir.base_url, "MedicationRequest", "ldn-crps")
    plans = stored(topology.fhir.base_url, "CarePlan", "ldn-crps")
    assert len(orders) == 1 and len(plans) == 1
    assert [d["doseAndRate"][0]["doseQuantity"]["value"] for d in orders[0]["dosageInstruction"]] == [1.5, 3.0, 4.5]
    assert plans[0]["subject"]["reference"].endswith("Patient/ldn-crps")
    assert re.search(r'id="ref-MedicationRequest">MedicationRequest/' + orders[0]["id"] + "<", done.text)
    went_through = {path for _, path in topology.proxy.seen}
    assert {"/launch", "/authorize", "/token", "/fhir/.well-known/smart-configuration", "/fhir"} <= went_through


def test_discovery_iss_and_launch_links_use_the_public_url(topology):
    public = topology.proxy.url
    config = requests.get(f"{public}/fhir/.well-known/smart-configuration", timeout=10).json()
    launch = requests.post(f"{public}/launch", data={"patient": "ldn-ms"}, allow_redirects=False, timeout=10)

    assert (config["issuer"], config["token_endpoint"], config["authorization_endpoint"]) == (
        f"{public}/fhir", f"{public}/token", f"{public}/authorize")
    assert launch.headers["Location"].startswith(f"{topology.app_url}/launch?iss=http%3A%2F%2F127.0.0.1%3A")
    assert requests.utils.unquote(launch.headers["Location"]).count(f"iss={public}/fhir&launch=") == 1


def test_without_load_samples_the_launch_page_lists_what_the_server_has_and_writes_nothing(fhir_server):
    from smart_app.sandbox.demo import start_sandbox

    patient = {"resourceType": "Patient", "id": "upstream-only", "name": [{"family": "Upstream", "given": ["Ada"]}]}
    load_bundles(fhir_server.base_url, {"one patient": {"resourceType": "Bundle", "entry": [{"resource": patient}]}})
    before = requests.get(f"{fhir_server.base_url}/Patient", params={"_summary": "count"}, timeout=10).json()["total"]
    sandbox = start_sandbox(fhir_upstream=fhir_server.base_url, samples=False, with_app=False)
    try:
        page = requests.get(f"{sandbox.ehr_url}/", timeout=30).text
    finally:
        sandbox.stop()
    after = requests.get(f"{fhir_server.base_url}/Patient", params={"_summary": "count"}, timeout=10).json()["total"]

    assert "Ada Upstream" in page and "upstream-only" in page
    assert page.count(">EHR launch</button>") == before == after


def test_demo_refuses_an_upstream_that_is_not_a_fhir_server():
    done = subprocess.run([LDN_APP, "demo", "--fhir-upstream", f"http://127.0.0.1:{free_port()}/fhir",
                           "--ehr-port", "0", "--app-port", "0"], capture_output=True, text=True, timeout=60)

    assert done.returncode != 0 and "no FHIR server answers at" in done.stderr and "Traceback" not in done.stderr
