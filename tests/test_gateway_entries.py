"""Every search entry is read or counted unreadable with its reason; any unreadable one means cannot-determine."""

from __future__ import annotations

import copy

import pytest

from smart_app.clinical.model import Decision
from smart_app.fhir.gateway import FhirGateway
from smart_app.samples import SAMPLE_AS_OF, load_sample
from smart_app.services import assess_data, read_patient
from tests.recorded_fhir import BASE, searchset, serve_patient

OPIOID_PATIENT = "ldn-oxycodone-active"  # contraindicated by an active oxycodone MedicationRequest
ELIGIBLE_PATIENT = "ldn-fibromyalgia"


def gateway(**limits) -> FhirGateway:
    return FhirGateway(BASE, lambda: "token", sleep=lambda _s: None, **limits)


def assess(rsps, patient: str, mangle=None, **limits):
    pid = serve_patient(rsps, load_sample(patient), mangle)
    data, problems = read_patient(gateway(**limits), pid)
    return assess_data(data, as_of=SAMPLE_AS_OF, data_problems=problems), data


def unreadable_texts(assessment) -> list[str]:
    return [f.text for f in assessment.findings if f.code == "data-unreadable"]


def each_medication_request(change):
    """A mangle that rewrites every entry of the MedicationRequest page with `change(entry)`."""
    def mangle(resource_type: str, page: dict) -> dict:
        if resource_type == "MedicationRequest":
            page = copy.deepcopy(page)
            page["entry"] = [change(e) for e in page["entry"]]
        return page
    return mangle


def with_mode(mode):
    return lambda e: {**e, "search": {"mode": mode}}


def retyped(kind, mode="match"):
    return lambda e: {**e, "resource": {**e["resource"], "resourceType": kind}, "search": {"mode": mode}}


HOSTILE_ENTRIES = {
    "a search mode that is not match, include or outcome": (with_mode("other"), "search mode 'other'"),
    "an opioid order marked as an include": (with_mode("include"), "does not fit a MedicationRequest search"),
    "no search mode and a type that fits neither the search nor its includes":
        (lambda e: {"resource": {**e["resource"], "resourceType": "Observation"}}, "search mode None"),
    "a resource wrapped in a list": (lambda e: {**e, "resource": [e["resource"]]}, "its resource is a list"),
    "a match whose type is not the one searched for":
        (retyped("MedicationStatement"), "MedicationStatement/ldn-oxycodone-active-medreq-1 does not fit"),
    "an entry that is a string": (lambda e: str(e), "the entry is a string"),
    "an entry that is a list": (lambda e: [e], "the entry is a list"),
    "a search element that is a string": (lambda e: {**e, "search": "match"}, "its search element is a string"),
}


@pytest.mark.parametrize("change, named", HOSTILE_ENTRIES.values(), ids=HOSTILE_ENTRIES.keys())
def test_an_opioid_order_the_gateway_cannot_use_makes_the_answer_cannot_determine_naming_the_entry(
        rsps, change, named):
    assessment, _ = assess(rsps, OPIOID_PATIENT, each_medication_request(change))
    assert assessment.decision is Decision.CANNOT_DETERMINE
    texts = unreadable_texts(assessment)
    assert any("search MedicationRequest page 1, entry 1" in t and named in t for t in texts), texts


def test_an_entry_list_given_as_an_object_makes_the_answer_cannot_determine(rsps):
    def mangle(resource_type, page):
        return {**page, "entry": page["entry"][0]} if resource_type == "MedicationRequest" else page
    rsps.assert_all_requests_are_fired = False  # the read stops at the first unreadable page
    assessment, _ = assess(rsps, OPIOID_PATIENT, mangle)
    assert assessment.decision is Decision.CANNOT_DETERMINE
    assert any("entries are an object, not a list" in t for t in unreadable_texts(assessment))


def outcome_entry(severity: str, text: str) -> dict:
    return {"resource": {"resourceType": "OperationOutcome", "issue": [
        {"severity": severity, "code": "processing", "diagnostics": text}]}, "search": {"mode": "outcome"}}


def with_outcome(severity: str, text: str):
    def mangle(resource_type, page):
        if resource_type == "Condition":
            return {**page, "entry": [*page["entry"], outcome_entry(severity, text)]}
        return page
    return mangle


def test_an_error_in_an_outcome_entry_makes_the_answer_cannot_determine_with_the_servers_words(rsps):
    assessment, _ = assess(rsps, ELIGIBLE_PATIENT, with_outcome("error", "Condition index is rebuilding"))
    assert assessment.decision is Decision.CANNOT_DETERMINE
    assert any("Condition index is rebuilding" in t for t in unreadable_texts(assessment))


def test_a_warning_in_an_outcome_entry_is_shown_and_does_not_change_the_answer(rsps):
    assessment, data = assess(rsps, ELIGIBLE_PATIENT, with_outcome("warning", "results limited to 5 years"))
    assert assessment.decision is Decision.ELIGIBLE
    assert data.warnings == ("The EHR noted on the Condition search: results limited to 5 years",)


def test_an_include_of_a_referenced_medication_is_read_as_that_medication(rsps):
    assessment, data = assess(rsps, "ldn-medication-reference")
    assert not unreadable_texts(assessment)
    assert all(m.names for m in data.medications)


def test_a_clean_record_has_no_unreadable_entries(rsps):
    assessment, _ = assess(rsps, OPIOID_PATIENT)
    assert assessment.decision is Decision.CONTRAINDICATED and not unreadable_texts(assessment)


def test_more_entries_than_the_record_cap_make_the_answer_cannot_determine_naming_the_cap(rsps):
    rsps.assert_all_requests_are_fired = False  # the read stops once the cap is passed
    assessment, _ = assess(rsps, OPIOID_PATIENT, max_entries=3)
    assert assessment.decision is Decision.CANNOT_DETERMINE
    assert any("more than 3 search entries (LDN_FHIR_MAX_ENTRIES)" in t for t in unreadable_texts(assessment))


def test_a_page_over_the_per_page_cap_makes_the_answer_cannot_determine_naming_the_cap(rsps):
    rsps.assert_all_requests_are_fired = False
    assessment, _ = assess(rsps, OPIOID_PATIENT, max_page_entries=1)
    assert assessment.decision is Decision.CANNOT_DETERMINE
    assert any("LDN_FHIR_MAX_PAGE_ENTRIES" in t for t in unreadable_texts(assessment))


def test_thousands_of_unreadable_entries_are_all_counted_but_listed_briefly(rsps):
    def mangle(resource_type, page):
        if resource_type == "Condition":
            return {**page, "entry": [*page["entry"], *(["junk"] * 5000)]}
        return page
    assessment, _ = assess(rsps, ELIGIBLE_PATIENT, mangle)
    texts = unreadable_texts(assessment)
    assert assessment.decision is Decision.CANNOT_DETERMINE
    assert len(texts) == 21 and "4,980 more unreadable search entries" in texts[-1]




# --- Medications named only by another Medication's ingredients (web path) ----------------------------------------

OXYCODONE = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7804",
                         "display": "oxycodone"}]}


def compounded_order_bundle(levels: int) -> tuple[dict, list[dict]]:
    """The eligible sample plus an active order for a cream whose opioid sits `levels` Medications down."""
    bundle = load_sample(ELIGIBLE_PATIENT)
    chain = [{"resourceType": "Medication", "id": f"n{i}", "code": {"text": f"Compounding base {i}"},
              "ingredient": [{"itemReference": {"reference": f"Medication/n{i + 1}"}}]} for i in range(levels)]
    chain.append({"resourceType": "Medication", "id": f"n{levels}", "code": OXYCODONE})
    order = {"resourceType": "MedicationRequest", "id": "cream-order", "status": "active", "intent": "order",
             "subject": {"reference": f"Patient/{ELIGIBLE_PATIENT}"}, "authoredOn": "2026-01-10",
             "medicationReference": {"reference": "Medication/n0"}}
    bundle["entry"] += [{"fullUrl": f"Medication/{m['id']}", "resource": m} for m in chain[:1]]
    bundle["entry"].append({"fullUrl": "MedicationRequest/cream-order", "resource": order})
    return bundle, chain[1:]


@pytest.mark.parametrize("levels", [1, 3])
def test_an_opioid_named_only_by_a_referenced_ingredient_medication_is_fetched_and_blocks(rsps, levels):
    bundle, not_included = compounded_order_bundle(levels)
    pid = serve_patient(rsps, bundle)
    for med in not_included:  # one `_id` search per ingredient level
        rsps.get(f"{BASE}/Medication", json=searchset([med], base=BASE))
    data, problems = read_patient(gateway(), pid)
    assessment = assess_data(data, as_of=SAMPLE_AS_OF, data_problems=problems)
    assert assessment.decision is Decision.CONTRAINDICATED, [f.text for f in assessment.findings]
    [cream] = [m for m in assessment.medications if m.resource == "MedicationRequest/cream-order"]
    assert cream.classification.value == "opioid"


def test_an_ingredient_medication_the_server_does_not_have_makes_the_order_unreadable_not_eligible(rsps):
    bundle, _ = compounded_order_bundle(1)
    pid = serve_patient(rsps, bundle)
    rsps.get(f"{BASE}/Medication", json=searchset([], base=BASE))
    data, problems = read_patient(gateway(), pid)
    assessment = assess_data(data, as_of=SAMPLE_AS_OF, data_problems=problems)
    assert assessment.decision is Decision.CANNOT_DETERMINE
    assert any("Medication/n1" in f.text for f in assessment.findings), [f.text for f in assessment.findings]
