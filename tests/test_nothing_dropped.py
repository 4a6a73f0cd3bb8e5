"""Issue 16, CLI side: what cannot be read makes the answer cannot-determine, never eligible (a table per case)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smart_app.cli import main
from smart_app.clinical.terminology import ATC, ICD10CM, RXNORM, default_terminology
from smart_app.fhir.parse import patients_from_bundle
from smart_app.samples import SAMPLE_AS_OF, SAMPLES_DIR, load_sample
from smart_app.services import assess_data

PID = "ldn-fibromyalgia"  # eligible on its own
SAFE = {"eligible", "eligible-with-cautions"}
OXYCODONE = {"coding": [{"system": RXNORM, "code": "7804", "display": "oxycodone"}]}
IBUPROFEN = {"coding": [{"system": RXNORM, "code": "5640", "display": "ibuprofen"}], "text": "Ibuprofen 400 MG"}
ACETAMINOPHEN = {"coding": [{"system": RXNORM, "code": "161", "display": "acetaminophen"}]}


def request(**fields) -> dict:
    """A current MedicationRequest of the test patient; fields override or (value None) remove."""
    r = {"resourceType": "MedicationRequest", "id": "t-1", "status": "active", "intent": "order",
         "subject": {"reference": f"Patient/{PID}"}, "authoredOn": "2026-01-10",
         "medicationCodeableConcept": OXYCODONE}
    r.update(fields)
    return {k: v for k, v in r.items() if v is not None}


def stopped(**fields) -> dict:
    """A stopped order whose supply ran until 2026-01-12 - inside the 10-day washout on 2026-01-15."""
    return request(status="stopped", authoredOn="2025-12-13",
                   dispenseRequest={"expectedSupplyDuration": {"value": 30, "unit": "days", "code": "d"}}, **fields)


def medication(mid: str, code=None, *ingredients) -> dict:
    med = {"resourceType": "Medication", "id": mid}
    if code:
        med["code"] = code
    if ingredients:
        med["ingredient"] = list(ingredients)
    return med


def assess(tmp_path: Path, *resources, bundle: dict | None = None, capsys=None) -> dict:
    """`ldn-app assess --json` on the test patient plus `resources`; the patient's JSON assessment."""
    bundle = bundle or load_sample(PID)
    bundle["entry"] += [{"fullUrl": f"{r['resourceType']}/{r.get('id')}", "resource": r} for r in resources]
    path = tmp_path / "case.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    code = main(["assess", str(path), "--as-of", SAMPLE_AS_OF.isoformat(), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.splitlines()[0])


def texts(result: dict) -> str:
    return " | ".join(f["text"] for f in result["findings"])


def test_the_base_patient_is_eligible(tmp_path, capsys):
    assert assess(tmp_path, capsys=capsys)["decision"] == "eligible"


# --- references in every valid form -------------------------------------------------------------------------

@pytest.mark.parametrize("subject", [
    f"Patient/{PID}/_history/2", f"Patient/{PID}/", f"https://ehr.example/fhir/Patient/{PID}",
    f"https://ehr.example/fhir/Patient/{PID}/_history/1/", f" Patient/{PID}",
])
def test_an_opioid_whose_subject_is_written_in_an_unusual_valid_form_is_found(tmp_path, capsys, subject):
    result = assess(tmp_path, request(subject={"reference": subject}), capsys=capsys)
    assert result["decision"] == "contraindicated" and "opioid-current" in {f["code"] for f in result["findings"]}


def test_an_opioid_whose_subject_is_the_patients_urn_full_url_is_found(tmp_path, capsys):
    bundle = load_sample(PID)
    urn = "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"
    bundle["entry"][0]["fullUrl"] = urn
    result = assess(tmp_path, request(subject={"reference": urn}), bundle=bundle, capsys=capsys)
    assert result["decision"] == "contraindicated"


@pytest.mark.parametrize(("subject", "words"), [
    ({"reference": "Patient/someone-else"}, "Patient/someone-else"),
    ({"reference": "not a reference"}, "not a reference"),
    ({"reference": 12}, "subject"),
    ("Patient/ldn-fibromyalgia", "subject"),
    (None, "names no patient"),
])
def test_an_opioid_record_that_cannot_be_tied_to_a_patient_makes_the_answer_cannot_determine(
        tmp_path, capsys, subject, words):
    result = assess(tmp_path, request(subject=subject), capsys=capsys)
    assert result["decision"] == "cannot-determine" and words in texts(result)


# --- ingredients -------------------------------------------------------------------------------------------------

def compounded(*ingredient_meds: dict, item: dict) -> list[dict]:
    """A compounded cream (no code of its own) whose ingredient `item` names the opioid."""
    cream = medication("t-cream", {"text": "Compounded pain cream"}, {"itemCodeableConcept": ACETAMINOPHEN}, item)
    return [cream, *ingredient_meds, request(medicationCodeableConcept=None,
                                             medicationReference={"reference": "Medication/t-cream"})]


@pytest.mark.parametrize(("name", "resources"), [
    ("itemCodeableConcept", compounded(item={"itemCodeableConcept": OXYCODONE})),
    ("itemReference to a Medication in the record",
     compounded(medication("t-oxy", OXYCODONE), item={"itemReference": {"reference": "Medication/t-oxy"}})),
    ("itemReference by its display only",
     compounded(item={"itemReference": {"display": "Oxycodone HCl powder"}})),
    ("nested two levels",
     compounded(medication("t-base", {"text": "Base"}, {"itemReference": {"reference": "Medication/t-oxy"}}),
                medication("t-oxy", OXYCODONE), item={"itemReference": {"reference": "Medication/t-base"}})),
    ("an ingredient cycle",
     compounded(medication("t-base", None, {"itemReference": {"reference": "Medication/t-cream"}},
                           {"itemCodeableConcept": OXYCODONE}),
                item={"itemReference": {"reference": "Medication/t-base"}})),
])
def test_any_opioid_ingredient_makes_the_product_an_opioid(tmp_path, capsys, name, resources):
    result = assess(tmp_path, *resources, capsys=capsys)
    assert result["decision"] == "contraindicated", name
    assert result["medications"][-1]["classification"] == "opioid"


def test_an_opioid_ingredient_in_a_contained_medication_counts(tmp_path, capsys):
    contained = [medication("oxy", OXYCODONE),
                 medication("cream", {"text": "Compounded cream"}, {"itemReference": {"reference": "#oxy"}})]
    result = assess(tmp_path, request(medicationCodeableConcept=None, contained=contained,
                                      medicationReference={"reference": "#cream"}), capsys=capsys)
    assert result["decision"] == "contraindicated"


@pytest.mark.parametrize(("reference", "words"), [
    ({"reference": "Medication/not-in-file"}, "does not resolve"),
    ({"reference": "#missing"}, "does not resolve"),
    ({"reference": 5}, "not a reference"),
    ([{"reference": "Medication/t-oxy"}], "not an object"),
])
def test_a_medication_reference_that_cannot_be_followed_makes_the_answer_cannot_determine(
        tmp_path, capsys, reference, words):
    result = assess(tmp_path, medication("t-oxy", OXYCODONE),
                    request(medicationCodeableConcept=None, medicationReference=reference), capsys=capsys)
    assert result["decision"] == "cannot-determine" and words in texts(result)


def test_nesting_deeper_than_the_limit_is_unreadable_not_a_crash(tmp_path, capsys):
    meds = [medication(f"t-{i}", None, {"itemReference": {"reference": f"Medication/t-{i + 1}"}}) for i in range(40)]
    meds.append(medication("t-40", OXYCODONE))
    result = assess(tmp_path, *meds, request(medicationCodeableConcept=None,
                                             medicationReference={"reference": "Medication/t-0"}), capsys=capsys)
    assert result["decision"] == "cannot-determine" and "nested more than" in texts(result)


# --- both medication[x], code vs name (issue 8 item 7) -----------------------------------------------------------

@pytest.mark.parametrize("concept_first", [True, False])
def test_with_both_medication_forms_the_more_dangerous_wins_and_the_conflict_is_shown(tmp_path, capsys, concept_first):
    safe, dangerous = (IBUPROFEN, OXYCODONE) if concept_first else (OXYCODONE, IBUPROFEN)
    result = assess(tmp_path, medication("t-med", dangerous),
                    request(medicationCodeableConcept=safe, medicationReference={"reference": "Medication/t-med"}),
                    capsys=capsys)
    assert result["decision"] == "contraindicated"
    conflict = next(f for f in result["findings"] if f["code"] == "code-name-conflict")
    assert "Ibuprofen" in conflict["text"] and "opioid" in conflict["text"]


def test_an_opioid_code_whose_display_names_another_drug_is_read_as_an_opioid_and_the_conflict_shown(
        tmp_path, capsys):
    concept = {"coding": [{"system": RXNORM, "code": "7804", "display": "Ibuprofen 200 MG Oral Tablet"}]}
    result = assess(tmp_path, request(medicationCodeableConcept=concept), capsys=capsys)
    assert result["decision"] == "contraindicated"
    med = result["medications"][-1]
    assert med["classification"] == "opioid" and "Conflict" in med["evidence"]
    assert "code 7804 reads as opioid" in texts(result) and "'Ibuprofen 200 MG Oral Tablet'" in texts(result)


def test_an_opioid_name_with_an_antagonist_code_is_read_as_an_opioid(tmp_path, capsys):
    concept = {"coding": [{"system": RXNORM, "code": "7242", "display": "Oxycodone 5 MG"}]}  # 7242 = naloxone
    result = assess(tmp_path, request(medicationCodeableConcept=concept), capsys=capsys)
    assert result["decision"] == "contraindicated" and "code-name-conflict" in {f["code"] for f in result["findings"]}


def test_a_combination_product_naming_both_its_ingredients_is_no_conflict(tmp_path, capsys):
    concept = {"text": "Buprenorphine and naloxone sublingual film"}
    result = assess(tmp_path, request(medicationCodeableConcept=concept), capsys=capsys)
    assert "code-name-conflict" not in {f["code"] for f in result["findings"]}


# --- containers of the wrong JSON type, values that are not strings ---------------------------------------------

@pytest.mark.parametrize(("field", "value", "words"), [
    ("medicationCodeableConcept", [OXYCODONE], "medicationCodeableConcept is a list, not an object"),
    ("medicationCodeableConcept", {"coding": OXYCODONE["coding"][0]}, "coding is a object, not a list"),
    ("medicationCodeableConcept", {"coding": [{"system": RXNORM, "code": 7804}]}, "code is a number"),
    ("medicationCodeableConcept", {"coding": [{"code": "7804", "display": ["oxycodone"]}]}, "display is a list"),
    ("medicationCodeableConcept", {"text": {"value": "oxycodone"}}, "text is a object"),
    ("medicationCodeableConcept", {"coding": ["7804"]}, "coding[0] is a string"),
    ("medicationCodeableConcept", {}, "no code and no name"),
    ("note", {"text": "oxycodone at night"}, "note is a object, not a list"),
    ("dosageInstruction", [{"text": 5}], "dosageInstruction[0].text is a number"),
])
def test_a_medication_record_with_a_container_of_the_wrong_type_makes_the_answer_cannot_determine(
        tmp_path, capsys, field, value, words):
    concept = IBUPROFEN if field in ("note", "dosageInstruction") else None
    fields = {field: value, **({"medicationCodeableConcept": concept} if concept else {})}
    result = assess(tmp_path, request(**fields), capsys=capsys)
    assert result["decision"] == "cannot-determine" and words in texts(result)


@pytest.mark.parametrize(("entry", "words"), [
    ([{"resourceType": "MedicationRequest"}], "holds no resource object"),
    ({"resource": [request()]}, "holds no resource object"),
    ({"resource": request(resourceType=7)}, "resourceType 7"),
    ({"resource": request(resourceType=None)}, "resourceType None"),
    ({"resource": request(resourceType="medicationrequest")}, "resourceType 'medicationrequest'"),
])
def test_a_bundle_entry_that_cannot_be_read_makes_the_answer_cannot_determine(tmp_path, capsys, entry, words):
    bundle = load_sample(PID)
    bundle["entry"].append(entry)
    result = assess(tmp_path, bundle=bundle, capsys=capsys)
    assert result["decision"] == "cannot-determine" and words in texts(result)


@pytest.mark.parametrize(("field", "value"), [
    ("code", [{"text": "Hepatitis"}]), ("code", {"coding": {"code": "B15"}}), ("clinicalStatus", "active"),
    ("onsetDateTime", 2024), ("code", {"coding": [{"system": ICD10CM, "code": None}]}),
])
def test_an_unreadable_condition_makes_the_answer_cannot_determine(tmp_path, capsys, field, value):
    condition = {"resourceType": "Condition", "id": "t-c", "subject": {"reference": f"Patient/{PID}"},
                 "code": {"text": "Acute hepatitis"}, field: value}
    result = assess(tmp_path, condition, capsys=capsys)
    assert result["decision"] == "cannot-determine" and "Condition/t-c could not be read" in texts(result)


# --- dates and amounts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "words"), [
    ({"authoredOn": 2025}, "unreadable date 2025"),
    ({"authoredOn": "2025-01-15 morning"}, "not a FHIR date"),
    ({"authoredOn": "١٠١٠-01-01"}, "not a FHIR date"),
    ({"dispenseRequest": {"expectedSupplyDuration": {"value": -30, "unit": "days"}}}, "not a plausible supply"),
    ({"dispenseRequest": {"expectedSupplyDuration": {"value": 0, "unit": "days"}}}, "not a plausible supply"),
    ({"dispenseRequest": {"expectedSupplyDuration": {"value": 1e308, "unit": "a"}}}, "not a plausible supply"),
    ({"dispenseRequest": {"expectedSupplyDuration": {"value": 10**400, "unit": "d"}}}, "not a number of days"),
    ({"dispenseRequest": {"expectedSupplyDuration": {"value": "30", "unit": "d"}}}, "not a number of days"),
    ({"dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "d"}, "numberOfRepeatsAllowed": -2}},
     "not a plausible repeat count"),
    ({"dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "d"}, "numberOfRepeatsAllowed": 10**9}},
     "not a plausible repeat count"),
    ({"dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "d"}, "numberOfRepeatsAllowed": True}},
     "not a plausible repeat count"),
    ({"dispenseRequest": []}, "dispenseRequest is a list"),
])
def test_a_stopped_opioid_with_an_unreadable_date_or_implausible_amount_is_undated_not_old(
        tmp_path, capsys, fields, words):
    base = stopped()
    base["authoredOn"] = "2010-01-01"  # long ago: an unreadable amount must not make it look old
    base.update(fields)
    result = assess(tmp_path, base, capsys=capsys)
    assert result["decision"] == "cannot-determine" and words in texts(result)
    assert result["medications"][-1]["state"] == "unknown"


def test_a_dispensed_opioid_with_a_negative_days_supply_is_undated(tmp_path, capsys):
    dispense = {"resourceType": "MedicationDispense", "id": "t-d", "status": "completed",
                "subject": {"reference": f"Patient/{PID}"}, "medicationCodeableConcept": OXYCODONE,
                "whenHandedOver": "2025-06-01", "daysSupply": {"value": -30, "unit": "day"}}
    result = assess(tmp_path, dispense, capsys=capsys)
    assert result["decision"] == "cannot-determine" and "not a plausible supply" in texts(result)


def test_a_plausible_supply_still_dates_the_record(tmp_path, capsys):
    result = assess(tmp_path, stopped(), capsys=capsys)
    assert result["decision"] == "wait-washout" and result["medications"][-1]["last_exposure"] == "2026-01-12"


# --- names as people type them -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "oxy\u200bcodone 5 mg", "oxy\u00adcodone", "ＯＸＹＣＯＤＯＮＥ", "\u043exycodone",  # Cyrillic о
    "trama\u200ddol", "ΟXYCODONE", "oxycodone\u2060", "Oxycоdone HCl",  # Greek Ο; word joiner; Cyrillic о
    "ﬁ oxycodone", "𝐨𝐱𝐲𝐜𝐨𝐝𝐨𝐧𝐞",
])
def test_an_opioid_name_typed_with_invisible_or_look_alike_characters_is_still_an_opioid(tmp_path, capsys, name):
    result = assess(tmp_path, request(medicationCodeableConcept={"text": name}), capsys=capsys)
    assert result["decision"] == "contraindicated", name


@pytest.mark.parametrize(("where", "record"), [
    ("note", request(medicationCodeableConcept=IBUPROFEN, note=[{"text": "also takes oxycodone at night"}])),
    ("dosage text", request(medicationCodeableConcept=IBUPROFEN,
                            dosageInstruction=[{"text": "1 tab with her Percocet"}])),
    ("statement dosage", {"resourceType": "MedicationStatement", "id": "t-s", "status": "active",
                          "subject": {"reference": f"Patient/{PID}"}, "medicationCodeableConcept": IBUPROFEN,
                          "dosage": [{"text": "alternates with tramadol"}]}),
])
def test_an_opioid_named_only_in_free_text_of_a_current_record_is_shown_and_cannot_be_ruled_out(
        tmp_path, capsys, where, record):
    result = assess(tmp_path, record, capsys=capsys)
    finding = next(f for f in result["findings"] if f["code"] == "opioid-named-in-text")
    assert result["decision"] == "cannot-determine" and finding["severity"] == "cannot-determine", where
    assert "not proof" in finding["text"]


def test_an_opioid_named_in_the_note_of_a_record_ended_long_ago_is_shown_without_blocking(tmp_path, capsys):
    old = request(medicationCodeableConcept=IBUPROFEN, status="completed", authoredOn="2019-01-01",
                  dispenseRequest={"validityPeriod": {"end": "2019-02-01"}},
                  note=[{"text": "switched from tramadol"}])
    result = assess(tmp_path, old, capsys=capsys)
    finding = next(f for f in result["findings"] if f["code"] == "opioid-named-in-text")
    assert result["decision"] == "eligible" and finding["severity"] == "info" and "tramadol" in finding["text"]


# --- bounded work ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "words"), [
    ("medicationCodeableConcept", {"coding": [{"system": ICD10CM, "code": "K" + "5" * 40_000}]}, "characters long"),
    ("medicationCodeableConcept", {"text": "oxycodone " * 10_000}, "characters long"),
    ("medicationCodeableConcept", {"coding": [{"code": str(i)} for i in range(100)]}, "more than 50"),
    ("note", [{"text": "x"}] * 1_000, "more than 200"),
])
def test_codes_names_and_lists_over_the_limits_are_unreadable_before_any_matching(tmp_path, capsys, field, value,
                                                                                  words):
    result = assess(tmp_path, request(**{"medicationCodeableConcept": IBUPROFEN, field: value}), capsys=capsys)
    assert result["decision"] == "cannot-determine" and words in texts(result)


def test_prefix_matching_of_a_40_kb_code_looks_at_no_more_prefixes_than_listed_codes_are_long():
    terminology = default_terminology()
    for system, code in ((ICD10CM, "K50" + "9" * 40_000), (ATC, "N02AA" + "1" * 40_000)):
        start = time.perf_counter()
        matches = terminology.code_matches(system, code)
        assert matches and time.perf_counter() - start < 0.5  # generous: ~0.1 ms measured (bench/bench_matching.py)


def test_the_classification_caches_keep_only_the_most_recent_entries():
    terminology = default_terminology()
    for i in range(terminology.memo.size + 10):
        terminology.memo[("test", i)] = i
    assert len(terminology.memo) == terminology.memo.size and terminology.memo.get(("test", 0)) is None


def test_json_nested_deeper_than_the_decoder_reads_is_one_clear_line_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"resourceType": "Bundle", "type": "collection", "entry": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code = main(["assess", str(path), "--as-of", SAMPLE_AS_OF.isoformat()])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "nested too deeply" in err


@pytest.mark.parametrize("field", ["extension", "medicationCodeableConcept", "note", "subject"])
def test_a_value_nested_thousands_of_levels_deep_is_no_crash_and_never_eligible(field):
    deep: object = OXYCODONE
    for _ in range(5_000):
        deep = [deep]
    bundle = load_sample(PID)
    bundle["entry"].append({"resource": request(**{field: deep})})
    (data,) = patients_from_bundle(bundle).values()
    assert assess_data(data, as_of=SAMPLE_AS_OF).decision.value not in SAFE


# --- the command line keeps going ----------------------------------------------------------------------------

def test_an_unreadable_file_gets_one_line_and_exit_2_while_the_other_files_are_still_assessed(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    files = [str(SAMPLES_DIR / "ldn-fibromyalgia.json"), str(bad), str(SAMPLES_DIR / "ldn-oxycodone-active.json")]
    code = main(["assess", *files, "--as-of", SAMPLE_AS_OF.isoformat(), "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and str(bad) in err
    assert [json.loads(line)["patient"] for line in out.splitlines()] == ["ldn-fibromyalgia", "ldn-oxycodone-active"]


def test_the_readme_assess_command_works_as_written():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    command = "ldn-app assess smart_app/samples/*.json --as-of 2026-01-15"
    assert command in readme
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", command], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\nPatient ") + done.stdout.startswith("Patient ") == len(list(SAMPLES_DIR.glob("*.json")))


def test_parsing_leaves_the_input_unchanged(tmp_path, capsys):
    bundle = load_sample(PID)
    bundle["entry"].append({"resource": request(note={"text": "x"})})
    before = copy.deepcopy(bundle)
    patients_from_bundle(bundle)
    assert bundle == before
