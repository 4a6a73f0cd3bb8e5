"""The sample patients are valid R4 Bundles, self-contained, uniquely named and matched by expected/expected.json."""

from __future__ import annotations

import json
from datetime import date

import pytest
from fhir.resources.R4B.bundle import Bundle

from smart_app.clinical.model import Decision
from smart_app.samples import SAMPLE_AS_OF, SAMPLES_DIR, load_expected, load_sample, sample_ids, shifted

SAMPLE_IDS = sample_ids()
RULE_IDS = {"R1", "R2", "R3", "R4", "R5", "R6"}
# Required bindings pydantic does not enforce (STYLE.md: check coded values yourself).
ALLOWED_STATUS = {
    "MedicationRequest": set(
        "active on-hold cancelled completed entered-in-error stopped draft unknown".split()
    ),
    "MedicationStatement": set(
        "active completed entered-in-error intended stopped on-hold unknown not-taken".split()
    ),
    "MedicationDispense": set("preparation in-progress cancelled on-hold completed".split())
    | {"entered-in-error", "stopped", "declined", "unknown"},
}
CLINICAL_STATUS = set("active recurrence relapse inactive remission resolved".split())
VERIFICATION_STATUS = set("unconfirmed provisional differential confirmed refuted entered-in-error".split())


def resources(bundle: dict) -> list[dict]:
    return [entry["resource"] for entry in bundle["entry"]]


def references(node) -> list[str]:
    """Every Reference.reference string anywhere inside a resource."""
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in references(item)]
    return []


def codes(bundle: dict) -> list[tuple[str, str]]:
    """Every (system, code) pair in a bundle, in document order."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "system" in node and "code" in node:
                found.append((node["system"], node["code"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(bundle)
    return found


def test_there_are_at_least_twenty_two_sample_patients():
    assert len(SAMPLE_IDS) >= 22


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_every_sample_parses_as_an_r4_collection_bundle(pid):
    bundle = Bundle.model_validate(load_sample(pid))
    assert bundle.type == "collection"
    assert bundle.entry[0].resource.get_resource_type() == "Patient"


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_each_file_holds_one_patient_named_after_the_file(pid):
    patients = [r for r in resources(load_sample(pid)) if r["resourceType"] == "Patient"]
    assert [p["id"] for p in patients] == [pid]
    assert pid.startswith("ldn-") and pid == pid.lower()


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_full_urls_are_type_slash_id_and_ids_carry_the_patient_prefix(pid):
    for entry in load_sample(pid)["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"{resource['resourceType']}/{resource['id']}"
        assert resource["id"].startswith(pid)


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_every_reference_resolves_to_an_entry_or_a_contained_resource(pid):
    bundle = load_sample(pid)
    full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
    for resource in resources(bundle):
        contained = {f"#{c['id']}" for c in resource.get("contained", [])}
        for ref in references(resource):
            assert ref in full_urls | contained, f"{resource['id']}: dangling reference {ref}"


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_every_subject_is_the_bundles_patient(pid):
    for resource in resources(load_sample(pid)):
        if "subject" in resource:
            assert resource["subject"] == {"reference": f"Patient/{pid}"}


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_status_and_condition_codes_are_legal_r4_values(pid):
    for resource in resources(load_sample(pid)):
        kind = resource["resourceType"]
        if kind in ALLOWED_STATUS:
            assert resource["status"] in ALLOWED_STATUS[kind], resource["id"]
        if kind == "MedicationRequest":
            assert resource["intent"] == "order"
        if kind == "Condition":
            assert resource["clinicalStatus"]["coding"][0]["code"] in CLINICAL_STATUS
            assert resource["verificationStatus"]["coding"][0]["code"] in VERIFICATION_STATUS
        if kind == "Patient":
            assert resource["gender"] in {"male", "female", "other", "unknown"}


def test_resource_ids_are_unique_across_all_sample_files():
    seen: dict[str, str] = {}
    for pid in SAMPLE_IDS:
        for resource in resources(load_sample(pid)):
            key = f"{resource['resourceType']}/{resource['id']}"
            assert key not in seen, f"{key} in both {seen.get(key)} and {pid}"
            seen[key] = pid


def test_every_sample_has_an_expected_outcome_and_every_outcome_has_a_sample():
    assert sorted(load_expected()) == SAMPLE_IDS


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_expected_outcome_is_well_formed(pid):
    outcome = load_expected()[pid]
    assert set(outcome) == {"decision", "rules", "earliest_start_date", "why"}
    assert outcome["decision"] in {d.value for d in Decision}
    assert set(outcome["rules"]) <= RULE_IDS
    assert outcome["why"].strip()
    if outcome["earliest_start_date"] is not None:
        date.fromisoformat(outcome["earliest_start_date"])


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_only_a_clean_eligible_outcome_has_no_rules(pid):
    outcome = load_expected()[pid]
    assert (outcome["decision"] == Decision.ELIGIBLE) == (outcome["rules"] == [])


def test_an_earliest_start_after_as_of_always_means_waiting_out_the_washout():
    for pid, outcome in load_expected().items():
        earliest = outcome["earliest_start_date"]
        if earliest and date.fromisoformat(earliest) > SAMPLE_AS_OF:
            assert outcome["decision"] == Decision.WAIT_WASHOUT, pid


def test_the_samples_glob_matches_only_patient_bundles_so_the_readme_command_reads_no_expected_results():
    names = {p.name for p in SAMPLES_DIR.glob("*.json")}
    assert names == {f"{pid}.json" for pid in SAMPLE_IDS}
    assert all(json.loads((SAMPLES_DIR / n).read_text(encoding="utf-8"))["resourceType"] == "Bundle" for n in names)


def test_load_sample_rejects_an_unknown_id_instead_of_reading_any_path():
    with pytest.raises(KeyError):
        load_sample("../expected")


def test_shifting_by_30_days_moves_birth_date_and_authored_on_by_30_days():
    bundle = load_sample("ldn-oxycodone-active")
    moved = shifted(bundle, 30)
    patient, moved_patient = resources(bundle)[0], resources(moved)[0]
    assert moved_patient["birthDate"] == "1966-04-27"
    assert patient["birthDate"] == "1966-03-28"
    request = next(r for r in resources(moved) if r["resourceType"] == "MedicationRequest")
    assert request["authoredOn"] == "2026-02-01"
    assert request["dispenseRequest"]["validityPeriod"] == {"start": "2026-02-01", "end": "2026-03-03"}


def test_shifting_keeps_the_time_and_zone_of_a_date_time():
    moved = shifted(load_sample("ldn-dispense-only-hydrocodone"), 30)
    dispense = next(r for r in resources(moved) if r["resourceType"] == "MedicationDispense")
    assert dispense["whenHandedOver"] == "2026-02-07T15:30:00-05:00"
    assert moved["timestamp"] == "2026-02-14T08:00:00Z"


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_shifting_changes_no_id_code_reference_or_quantity(pid):
    bundle = load_sample(pid)
    moved = shifted(bundle, 30)
    assert [r["id"] for r in resources(moved)] == [r["id"] for r in resources(bundle)]
    assert codes(moved) == codes(bundle)
    assert [references(r) for r in resources(moved)] == [references(r) for r in resources(bundle)]
    assert [e["fullUrl"] for e in moved["entry"]] == [e["fullUrl"] for e in bundle["entry"]]
    assert moved != bundle


@pytest.mark.parametrize("pid", SAMPLE_IDS)
def test_shifting_there_and_back_is_the_identity_and_leaves_the_original_alone(pid):
    bundle = load_sample(pid)
    original = json.dumps(bundle, sort_keys=True)
    assert shifted(shifted(bundle, 400), -400) == bundle
    assert json.dumps(bundle, sort_keys=True) == original


def test_shifting_ignores_partial_dates_and_impossible_days():
    bundle = {"a": "2025", "b": "2025-06", "c": "2025-02-30", "d": "not-2025-01-01", "e": 20250101}
    assert shifted(bundle, 5) == bundle


def test_shifted_samples_still_parse_as_r4_bundles():
    for pid in SAMPLE_IDS:
        Bundle.model_validate(shifted(load_sample(pid), -3650))
