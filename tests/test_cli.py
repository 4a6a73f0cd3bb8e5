"""The `ldn-app` command line: the contract developers and our own checks rely on."""

from __future__ import annotations

import json

import pytest

from smart_app.cli import main
from smart_app.samples import SAMPLE_AS_OF, SAMPLES_DIR

AS_OF = SAMPLE_AS_OF.isoformat()


def sample(pid: str) -> str:
    return str(SAMPLES_DIR / f"{pid}.json")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_assess_json_prints_one_line_per_patient_with_the_documented_fields(capsys):
    code, out, _ = run(capsys, "assess", sample("ldn-tramadol-5-days"), sample("ldn-fibromyalgia"),
                       "--as-of", AS_OF, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [x["patient"] for x in lines] == ["ldn-tramadol-5-days", "ldn-fibromyalgia"]
    tramadol = lines[0]
    assert tramadol["decision"] == "wait-washout" and tramadol["earliest_start_date"] == "2026-01-20"
    assert {"rule", "severity", "text", "resources"} <= set(tramadol["findings"][0])
    assert {"resource", "name", "classification", "last_exposure"} <= set(tramadol["medications"][0])


def test_assess_handles_a_bundle_holding_several_patients(capsys, tmp_path):
    a, b = (json.loads((SAMPLES_DIR / f"{p}.json").read_text()) for p in ("ldn-ms", "ldn-oxycodone-active"))
    merged = {"resourceType": "Bundle", "type": "searchset", "entry": a["entry"] + b["entry"]}
    path = tmp_path / "two.json"
    path.write_text(json.dumps(merged))
    _, out, _ = run(capsys, "assess", str(path), "--as-of", AS_OF, "--json")
    decisions = {x["patient"]: x["decision"] for x in map(json.loads, out.splitlines())}
    assert decisions == {"ldn-ms": "eligible-with-cautions", "ldn-oxycodone-active": "contraindicated"}


def test_washout_days_option_changes_the_earliest_start(capsys):
    _, out, _ = run(capsys, "assess", sample("ldn-tramadol-5-days"), "--as-of", AS_OF, "--washout-days", "7",
                    "--json")
    assert json.loads(out)["earliest_start_date"] == "2026-01-17"


def test_washout_outside_7_to_10_days_is_refused(capsys):
    code, _, err = run(capsys, "assess", sample("ldn-fibromyalgia"), "--washout-days", "3")
    assert code == 1 and "7-10" in err


@pytest.mark.parametrize("content, words", [
    ("not json at all", "not JSON"),
    ('{"resourceType": "Patient", "id": "x"}', "not a FHIR Bundle"),
    ('{"resourceType": "Bundle", "type": "collection", "entry": []}', "no Patient"),
])
def test_unreadable_input_exits_2_with_a_one_line_message_naming_the_file(capsys, tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = run(capsys, "assess", str(path))
    assert code == 2 and words in err and str(path) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


def test_missing_file_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "assess", str(tmp_path / "nope.json"))
    assert code == 2 and "nope.json" in err


def test_plan_prints_the_transaction_bundle_for_an_eligible_patient(capsys):
    code, out, _ = run(capsys, "plan", sample("ldn-fibromyalgia"), "--patient", "ldn-fibromyalgia",
                       "--start", "2026-01-20", "--as-of", AS_OF, "--json")
    bundle = json.loads(out)
    assert code == 0 and bundle["type"] == "transaction"
    mr = bundle["entry"][0]["resource"]
    assert [d["doseAndRate"][0]["doseQuantity"]["value"] for d in mr["dosageInstruction"]] == [1.5, 3.0, 4.5]


def test_plan_refuses_a_contraindicated_patient_with_the_reasons(capsys):
    code, out, err = run(capsys, "plan", sample("ldn-oxycodone-active"), "--patient", "ldn-oxycodone-active",
                         "--start", "2026-01-20", "--as-of", AS_OF)
    assert code == 1 and "R2" in err and "opioid" in err.lower() and out == ""


def test_plan_after_the_washout_is_accepted_for_recently_stopped_tramadol(capsys):
    code, _, err = run(capsys, "plan", sample("ldn-tramadol-5-days"), "--patient", "ldn-tramadol-5-days",
                       "--start", "2026-01-20", "--as-of", AS_OF, "--json")
    assert code == 0, err
    code, _, err = run(capsys, "plan", sample("ldn-tramadol-5-days"), "--patient", "ldn-tramadol-5-days",
                       "--start", "2026-01-19", "--as-of", AS_OF, "--json")
    assert code == 1 and "2026-01-20" in err


def test_plan_rejects_a_dose_above_4_5_mg_and_prints_nothing(capsys):
    code, out, err = run(capsys, "plan", sample("ldn-fibromyalgia"), "--patient", "ldn-fibromyalgia",
                         "--start", "2026-01-20", "--as-of", AS_OF, "--target", "6")
    assert code == 1 and "4.5" in err and out == ""


def test_plan_for_crohns_alone_needs_a_typed_reason(capsys):
    args = ["plan", sample("ldn-crohns-alone"), "--patient", "ldn-crohns-alone", "--start", "2026-01-20",
            "--as-of", AS_OF, "--json"]
    code, _, err = run(capsys, *args)
    assert code == 1 and "recommended against" in err
    code, out, _ = run(capsys, *args, "--override-reason", "Failed biologics; patient informed of guideline")
    notes = [n["text"] for n in json.loads(out)["entry"][0]["resource"]["note"]]
    assert code == 0 and any("Failed biologics" in n for n in notes)


def test_plan_for_unknown_patient_id_exits_2(capsys):
    code, _, err = run(capsys, "plan", sample("ldn-fibromyalgia"), "--patient", "nobody", "--start", AS_OF)
    assert code == 2 and "nobody" in err
