"""HAPI's behaviours (tests/recordings/hapi/, hand-made in the recorded-file format) replayed through the whole
app and gateway: search cache, opaque `_getpages` paging, OperationOutcome errors, 412 on an ambiguous
conditional create, missing Bundle.total. Each test asserts what the clinician sees."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from fake_ehr import form_fields
from werkzeug.datastructures import MultiDict

from smart_app.open_servers import BANNER
from smart_app.samples import SAMPLE_AS_OF, SAMPLES_DIR
from smart_app.sandbox.demo import create_replay_app

HAPI = "http://hapi.example/fhir"
RECORDINGS = Path(__file__).parent / "recordings" / "hapi"
EXPECTED = json.loads((SAMPLES_DIR / "expected" / "expected.json").read_text())
WROTE = "ldn_wrote"  # the session flag of a browser whose launch wrote (web.views.WROTE)


def client_for(name: str, *, writes: bool = False):
    """A browser on the app replaying one HAPI recording; `writes`: writes are answered from the recording
    too (the app as it runs on a server), instead of replay mode's "show the Bundle, send nothing"."""
    app = create_replay_app([str(RECORDINGS / f"{name}.yaml")], {
        "TODAY": SAMPLE_AS_OF.isoformat(), "SECRET_KEY": "h" * 32, "SESSION_STORE": "memory", "REPLAY": not writes})
    app.extensions["fhir.replay"].writes = writes
    return app, app.test_client()


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def picks(page: str) -> list[str]:
    return re.findall(r'id="pick-([\w.-]+)"', page)


def review(client, patient: str, **query):
    return client.get("/open/review", query_string={"iss": HAPI, "patient": patient, **query}, follow_redirects=True)


def decision(page: str) -> str:
    return re.search(r'id="decision">([a-z-]+)<', page).group(1)


def test_getpages_paging_an_opioid_on_a_later_page_of_the_record_is_found():
    _, client = client_for("getpages-paging")

    page = text(review(client, "ldn-tramadol-5-days"))

    assert decision(page) == EXPECTED["ldn-tramadol-5-days"]["decision"] == "wait-washout"
    assert "tramadol" in page.lower()


def test_getpages_paging_the_patient_search_follows_hapis_cursor_and_keeps_it_server_side():
    app, client = client_for("getpages-paging")

    first = client.get("/launch", follow_redirects=True)
    second = client.get(re.search(r'id="next-page" href="([^"]+)"', text(first)).group(1))

    assert picks(text(first)) == ["ldn-crps"] and picks(text(second)) == ["ldn-tramadol-5-days"]
    assert "_getpages" not in text(first) and "the server did not say how many" in text(first)
    assert any("_getpages=" in url for _, url in app.extensions["fhir.replay"].received)


def test_missing_total_the_search_shows_no_count_and_the_record_is_read_whole():
    _, client = client_for("missing-total")

    search = text(client.get("/launch", follow_redirects=True))
    page = text(review(client, "ldn-fibromyalgia"))

    assert picks(search) == ["ldn-fibromyalgia"] and "patients found" in search.lower()
    assert not re.search(r"\d+ patients? found", search)
    assert decision(page) == EXPECTED["ldn-fibromyalgia"]["decision"]


def test_operation_outcome_a_500_on_a_record_search_is_cannot_determine_with_hapis_words():
    _, client = client_for("operation-outcome")

    page = text(review(client, "ldn-crps"))  # eligible when its record is read whole

    assert decision(page) == "cannot-determine"
    assert "HAPI-0389: Failed to call access method" in page and "Traceback" not in page


def test_operation_outcome_a_400_on_a_record_search_is_cannot_determine_with_hapis_words():
    _, client = client_for("operation-outcome")

    page = text(review(client, "ldn-fibromyalgia"))

    assert decision(page) == "cannot-determine"
    assert 'HAPI-0524: Unknown search parameter "patient" for resource type "MedicationDispense"' in page


def test_operation_outcome_a_failed_patient_search_shows_hapis_words_on_the_search_page():
    _, client = client_for("operation-outcome")

    response = client.get("/open/patients", query_string={"iss": HAPI, "birthdate": "1970-01-01"})

    assert response.status_code == 503 and BANNER in text(response) and 'id="search-form"' in text(response)
    assert "HAPI-0389: Failed to call access method" in text(response)


def test_search_cache_after_a_write_the_app_asks_past_hapis_cache_and_shows_its_order():
    _, client = client_for("search-cache")
    before = review(client, "ldn-crps")
    with client.session_transaction() as session:
        session[WROTE] = True  # what signing leaves in the browser's session

    after = client.get(before.request.full_path + "&assess=1")

    assert decision(text(before)) == "eligible" and "This app's earlier LDN order" not in text(before)
    assert "This app's earlier LDN order" in text(after) and "MedicationRequest/4101" in text(after)
    assert decision(text(after)) == "eligible-with-cautions"  # R5: signing another plan adds a second order


def test_conditional_create_412_the_order_is_not_written_and_hapis_reason_is_shown():
    app, client = client_for("conditional-create-412", writes=True)
    page = review(client, "ldn-crps")
    previewed = client.post("/preview", data=MultiDict(form_fields(page.get_data(as_text=True), "plan-form")))

    signed = client.post("/sign", data=MultiDict(form_fields(previewed.get_data(as_text=True), "sign-form")))

    assert signed.status_code == 409 and "not written" in text(signed).lower()
    assert "Multiple resources match this search" in text(signed) and "/done/" not in signed.headers.get("Location", "")
    assert [m for m, _ in app.extensions["fhir.replay"].received].count("POST") == 1  # never retried
