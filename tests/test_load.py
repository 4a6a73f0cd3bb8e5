"""`ldn-app load`: one idempotent transaction per patient into any FHIR server."""

from __future__ import annotations

import json

import pytest
import requests

from smart_app.cli import main
from smart_app.fhir.load import patient_groups
from smart_app.samples import SAMPLES_DIR, load_sample, sample_ids


def bundle_of(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def ids(group: list[dict]) -> list[str]:
    return [f"{r['resourceType']}/{r['id']}" for r in group]


def test_a_bundle_with_two_patients_becomes_one_group_each_with_the_medication_each_one_names():
    med = {"resourceType": "Medication", "id": "m1"}
    bundle = bundle_of(
        {"resourceType": "Patient", "id": "a"}, {"resourceType": "Patient", "id": "b"}, med,
        {"resourceType": "MedicationRequest", "id": "ra", "subject": {"reference": "Patient/a"},
         "medicationReference": {"reference": "Medication/m1"}},
        {"resourceType": "MedicationStatement", "id": "sb", "subject": {"reference": "http://x.test/fhir/Patient/b"},
         "medicationReference": {"reference": "Medication/m1"}},
        {"resourceType": "Practitioner", "id": "doc"})

    groups = patient_groups(bundle)

    assert [ids(g) for g in groups] == [["Practitioner/doc"], ["Patient/a", "MedicationRequest/ra", "Medication/m1"],
                                        ["Patient/b", "MedicationStatement/sb", "Medication/m1"]]


def test_a_file_with_a_resource_without_id_is_refused_before_anything_is_sent(tmp_path, capsys, rsps):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(load_sample("ldn-ms")))
    bad.write_text(json.dumps(bundle_of({"resourceType": "Patient"})))

    code = main(["load", "--server", "http://fhir.test/fhir", str(good), str(bad)])

    assert code == 2 and "bad.json: entry 0 has no resource with resourceType and id" in capsys.readouterr().err


@pytest.mark.live
def test_loading_twice_creates_nothing_the_second_time(capsys):
    from smart_app.sandbox.fhir_server import start_fhir_server

    files = [str(SAMPLES_DIR / f"{pid}.json") for pid in ("ldn-medication-reference", "ldn-crohns-fibromyalgia")]
    with start_fhir_server() as server:
        first_code = main(["load", "--server", server.base_url, *files, "--samples"])
        first = capsys.readouterr().out
        count = requests.get(f"{server.base_url}/MedicationStatement", params={"_summary": "count"}, timeout=10)
        second_code = main(["load", "--server", server.base_url, *files, "--samples"])
        second = capsys.readouterr().out
        again = requests.get(f"{server.base_url}/MedicationStatement", params={"_summary": "count"}, timeout=10)

    assert (first_code, second_code) == (0, 0)
    # one line per transaction (2 files, the sample prescriber, each sample patient), one total
    assert len(first.splitlines()) == 2 + 1 + len(sample_ids()) + 1
    assert "Practitioner/ldn-sample-prescriber: 1 created, 0 updated" in first
    entries = len(load_sample("ldn-medication-reference")["entry"])
    assert f"Patient/ldn-medication-reference: {entries} created, 0 updated" in first
    assert second.splitlines()[-1].startswith("done: 0 resources created, ")
    assert count.json()["total"] == again.json()["total"] > 0


@pytest.mark.live
def test_a_refused_transaction_stops_the_load_and_says_which_were_loaded(tmp_path, capsys):
    from smart_app.sandbox.fhir_server import start_fhir_server

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(bundle_of({"resourceType": "Patient", "id": "ok-1"},
                                           {"resourceType": "Patient", "id": "bad", "birthDate": "not a date"},
                                           {"resourceType": "Patient", "id": "ok-2"})))
    with start_fhir_server() as server:
        code = main(["load", "--server", server.base_url, str(broken)])
        out, err = capsys.readouterr()
        status = {pid: requests.get(f"{server.base_url}/Patient/{pid}", timeout=10).status_code
                  for pid in ("ok-1", "bad", "ok-2")}

    assert code == 1 and out == "Patient/ok-1: 1 created, 0 updated\n"
    assert "Patient/bad failed (400)" in err and "the rest were not sent" in err
    assert status == {"ok-1": 200, "bad": 404, "ok-2": 404}


def test_load_with_wait_gives_up_on_a_server_that_never_answers_and_sends_nothing(capsys):
    from smart_app.sandbox.fhir_server import free_port

    code = main(["load", "--server", f"http://127.0.0.1:{free_port()}/fhir", "--samples", "--wait", "1"])

    out, err = capsys.readouterr()
    assert code == 1 and out == "" and "did not answer within 1 s" in err
