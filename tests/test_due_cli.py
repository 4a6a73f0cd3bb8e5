"""`ldn-app due`: who needs the 8-12 week review, from a CarePlan search on a live sekmet (open, and with a token)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from smart_app.cli import main
from smart_app.clinical.model import TitrationRequest
from smart_app.config import Settings
from smart_app.fhir.gateway import FhirGateway
from smart_app.fhir.load import load_bundles
from smart_app.fhir.write import place_order
from smart_app.samples import SAMPLE_AS_OF, load_sample
from smart_app.services import SignRequest, plan_order, read_patient

pytestmark = pytest.mark.live
EARLY, LATE = SAMPLE_AS_OF + timedelta(days=1), SAMPLE_AS_OF + timedelta(days=30)
WEEK_9 = EARLY + timedelta(days=63)


@pytest.fixture(scope="module")
def server():
    """sekmet with two LDN plans: one started 9 weeks before WEEK_9 (due), one a month later (opens later)."""
    from smart_app.sandbox.fhir_server import start_fhir_server

    running = start_fhir_server()
    try:
        sign(running.base_url, "ldn-ms", EARLY)
        sign(running.base_url, "ldn-refuted-crohns", LATE)
        load_bundles(running.base_url, {"no plan": load_sample("ldn-corneal-pain")})
        yield running
    finally:
        running.stop()


def sign(base: str, patient: str, start, as_of=SAMPLE_AS_OF) -> None:
    load_bundles(base, {patient: load_sample(patient)})
    gateway = FhirGateway.from_config(Settings(), base, None)
    data, problems = read_patient(gateway, patient)
    _, bundle = plan_order(data, SignRequest(titration=TitrationRequest(start=start)), as_of=as_of,
                           data_problems=problems)
    place_order(gateway, bundle)


def due(capsys, *argv) -> tuple[int, str, str]:
    code = main(["due", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_due_lists_the_patient_whose_review_window_is_open_and_not_the_one_still_titrating(server, capsys):
    code, out, _ = due(capsys, "--server", server.base_url, "--as-of", WEEK_9.isoformat(), "--json")
    rows = json.loads(out)
    assert code == 0 and [r["patient"] for r in rows] == ["Patient/ldn-ms"]
    assert rows[0]["window"] == "due" and rows[0]["start"] == EARLY.isoformat()
    assert (rows[0]["name"], rows[0]["birth_date"]) == ("Karen Lindqvist", "1980-10-16")  # staff call people
    assert (rows[0]["review_from"], rows[0]["review_to"]) == ((EARLY + timedelta(days=56)).isoformat(),
                                                              (EARLY + timedelta(days=84)).isoformat())


def test_within_days_adds_the_reviews_that_open_soon(server, capsys):
    opens_in = (LATE + timedelta(days=56) - WEEK_9).days
    code, out, _ = due(capsys, "--server", server.base_url, "--as-of", WEEK_9.isoformat(), "--within",
                       str(opens_in), "--json")
    assert [(r["patient"], r["window"]) for r in json.loads(out)] == [
        ("Patient/ldn-ms", "due"), ("Patient/ldn-refuted-crohns", "not yet due")]
    code, out, _ = due(capsys, "--server", server.base_url, "--as-of", WEEK_9.isoformat(), "--within",
                       str(opens_in - 1), "--json")
    assert [r["patient"] for r in json.loads(out)] == ["Patient/ldn-ms"]


def test_a_review_past_its_window_is_overdue_in_the_text_listing(server, capsys):
    late = EARLY + timedelta(days=90)
    code, out, _ = due(capsys, "--server", server.base_url, "--as-of", late.isoformat())
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("Patient/ldn-ms  overdue")
    assert lines[0].endswith("Karen Lindqvist (born 1980-10-16)")
    assert "Patient/ldn-refuted-crohns  due" in lines[1]
    assert lines[-1] == f"2 patient(s) due as of {late}"


def test_due_through_an_authorizing_server_uses_the_token_file_and_is_refused_without_it(sandbox, capsys, tmp_path):
    from smart_app.sandbox.ehr import Context

    sign(sandbox.fhir_upstream, "ldn-spondylosis", date.today() - timedelta(days=60),
         as_of=date.today() - timedelta(days=60))
    state = sandbox.ehr_app.config["SANDBOX_STATE"]
    token, _ = state.issue(Context("ldn-app", ("user/CarePlan.rs",), None, False), 300, refresh=False)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")

    code, out, _ = due(capsys, "--server", sandbox.iss, "--token-file", str(token_file), "--json")
    assert code == 0 and "Patient/ldn-spondylosis" in [r["patient"] for r in json.loads(out)]
    code, out, err = due(capsys, "--server", sandbox.iss)
    assert code == 1 and out == "" and "ldn-app:" in err

