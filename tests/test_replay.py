"""`ldn-app serve --replay` / `ldn-app demo --replay`: the whole web app on recorded FHIR responses, no server.

The replay base is an open server: /launch lists the recorded patients, a pick opens the normal review,
Sign shows the transaction Bundle it would send and sends nothing."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import requests
import yaml
from fake_ehr import form_fields
from processes import LDN_APP, started, stopped, wait_for
from werkzeug.datastructures import MultiDict

from smart_app.cli import main
from smart_app.open_servers import BANNER
from smart_app.samples import SAMPLE_AS_OF, SAMPLES_DIR
from smart_app.sandbox.demo import create_replay_app
from smart_app.sandbox.fhir_server import free_port

RECORDINGS = sorted((Path(__file__).parent / "recordings").glob("ldn-*.yaml"))
BASE = "http://127.0.0.1:18002/fhir"  # where the sample recordings were made
EXPECTED = json.loads((SAMPLES_DIR / "expected" / "expected.json").read_text())
ORDER_SYSTEM = "https://fhir.ldn-app.org/identifier/ldn-order"


def replay_app(paths=RECORDINGS, **config):
    return create_replay_app([str(p) for p in paths], {"TODAY": SAMPLE_AS_OF.isoformat(), "SECRET_KEY": "r" * 32,
                                                       "SESSION_STORE": "memory", **config})


def text(response) -> str:
    return response.get_data(as_text=True)


def pick(client, patient: str):
    """The launch, the patient search it lands on, the pick: the review page."""
    search = client.get("/launch", follow_redirects=True)
    link = re.search(rf'id="pick-{patient}" href="([^"]+)"', text(search)).group(1)
    return client.get(html.unescape(link), follow_redirects=True)


def decision(page: str) -> str:
    return re.search(r'id="decision">([a-z-]+)<', page).group(1)


def signed(client, review):
    previewed = client.post("/preview", data=MultiDict(form_fields(text(review), "plan-form")))
    return client.post("/sign", data=MultiDict(form_fields(text(previewed), "sign-form")), follow_redirects=True)


def test_launch_without_iss_opens_the_search_of_the_replayed_server_listing_every_recorded_patient():
    search = replay_app().test_client().get("/launch", follow_redirects=True)

    listed = re.findall(r'id="pick-([\w.-]+)"', text(search))
    assert search.status_code == 200 and BANNER in text(search) and BASE in text(search)
    assert listed == sorted(p.stem for p in RECORDINGS)


def test_the_replayed_patient_search_finds_by_name_and_by_birth_date():
    client = replay_app().test_client()

    by_name = client.get("/open/patients", query_string={"iss": BASE, "name": "okafor"})
    by_birth = client.get("/open/patients", query_string={"iss": BASE, "birthdate": "1985-09-30"})

    assert re.findall(r'id="pick-([\w.-]+)"', text(by_name)) == ["ldn-crps"]
    assert re.findall(r'id="pick-([\w.-]+)"', text(by_birth)) == ["ldn-crps"]


@pytest.mark.parametrize("recording", RECORDINGS, ids=[r.stem for r in RECORDINGS])
def test_each_recorded_patient_picked_in_replay_gets_the_decision_of_its_sample_file(recording):
    review = pick(replay_app().test_client(), recording.stem)

    assert review.status_code == 200 and "/?lid=" in review.request.url and BANNER in text(review)
    assert decision(text(review)) == EXPECTED[recording.stem]["decision"]


def test_sign_in_replay_shows_the_transaction_bundle_says_nothing_was_written_and_sends_no_write():
    app = replay_app()
    client = app.test_client()
    review = pick(client, "ldn-crps")

    done = signed(client, review)
    shown = json.loads(html.unescape(re.search(r'<pre id="replay-bundle">(.*?)</pre>', text(done), re.S).group(1)))
    key = re.search(r'id="order-key">([0-9a-f]{32})<', text(done)).group(1)
    order = shown["entry"][0]["resource"]

    assert done.status_code == 200 and "nothing was written" in text(done) and BANNER in text(done)
    assert shown["type"] == "transaction" and order["resourceType"] == "MedicationRequest"
    assert order["subject"]["reference"] == "Patient/ldn-crps"
    assert order["requester"]["reference"] == "Practitioner/ldn-sample-prescriber"
    assert {"system": ORDER_SYSTEM, "value": key} in order["identifier"]
    assert {e["request"]["method"] for e in shown["entry"]} == {"POST"}
    assert {m for m, _ in app.extensions["fhir.replay"].received} == {"GET"}


def test_signing_the_same_plan_twice_in_replay_shows_it_twice_and_still_sends_nothing():
    app = replay_app()
    client = app.test_client()
    review = pick(client, "ldn-crps")

    first, second = signed(client, review), signed(client, review)

    assert "nothing was written" in text(first) and "nothing was written" in text(second)
    assert {m for m, _ in app.extensions["fhir.replay"].received} == {"GET"}


def without(recording: Path, dropped: str, tmp_path: Path) -> Path:
    """A copy of `recording` without the exchanges whose URL contains `dropped`."""
    data = yaml.safe_load(recording.read_text())
    data["responses"] = [r for r in data["responses"] if dropped not in r["response"]["url"]]
    out = tmp_path / recording.name
    out.write_text(yaml.safe_dump(data))
    return out


def test_a_request_missing_from_the_recording_is_named_and_the_assessment_is_cannot_determine(tmp_path):
    crps = next(r for r in RECORDINGS if r.stem == "ldn-crps")  # eligible when read whole
    client = replay_app([without(crps, "/Condition?", tmp_path)]).test_client()

    review = pick(client, "ldn-crps")

    assert review.status_code == 200 and decision(text(review)) == "cannot-determine"
    assert f"not in the recording: GET {BASE}/Condition?patient=ldn-crps" in html.unescape(text(review))
    assert "Traceback" not in text(review)


def test_a_base_that_was_not_recorded_is_refused_like_any_unregistered_server():
    refused = replay_app().test_client().get("/launch", query_string={"iss": "http://127.0.0.1:18002/other"})

    assert refused.status_code == 400 and "not registered" in text(refused) and "Traceback" not in text(refused)


def test_a_file_that_is_not_a_recording_is_refused_naming_it(tmp_path, capsys):
    bad = tmp_path / "notes.yaml"
    bad.write_text("just: notes\n")
    no_base = without(RECORDINGS[0], "/metadata", tmp_path)

    assert main(["serve", "--replay", str(bad)]) == 2
    assert f"{bad}: not a recorded-responses file" in capsys.readouterr().err
    assert main(["demo", "--replay", str(no_base)]) == 2
    assert "no /metadata request" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_ldn_app_replay_serves_the_recorded_patients_with_no_fhir_server_until_stopped(command):
    port = free_port()
    ports = ["--host", "127.0.0.1", "--port", str(port)] if command == "serve" else ["--app-port", str(port)]
    app = started([LDN_APP, command, "--replay", *map(str, RECORDINGS), *ports],
                  {"LDN_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "LDN_SESSION_STORE": "memory"})
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", app)
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        search = requests.get(f"http://127.0.0.1:{port}/launch", timeout=30)
    finally:
        log = stopped(app)

    assert ready.status_code == 200 and ready.json()["checks"][f"fhir {BASE}"] == "ok"
    assert search.status_code == 200 and BANNER in search.text
    assert re.findall(r'id="pick-([\w.-]+)"', search.text) == sorted(p.stem for p in RECORDINGS)
    assert "Traceback" not in log


def test_concurrent_reviews_of_different_recorded_patients_each_get_their_own_record():
    from concurrent.futures import ThreadPoolExecutor

    app = replay_app()
    patients = [r.stem for r in RECORDINGS] * 3

    with ThreadPoolExecutor(max_workers=8) as pool:
        decisions = list(pool.map(lambda pid: decision(text(pick(app.test_client(), pid))), patients))

    assert decisions == [EXPECTED[pid]["decision"] for pid in patients]
