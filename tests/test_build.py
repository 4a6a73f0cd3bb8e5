"""The write-back: one transaction with the MedicationRequest, CarePlan and Provenance, valid R4."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from smart_app.clinical.model import TitrationRequest
from smart_app.errors import InputError, WriteRefused
from smart_app.fhir.build import ORDER_IDENTIFIER_SYSTEM
from smart_app.fhir.models import r4_problems
from smart_app.fhir.parse import patients_from_bundle
from smart_app.samples import SAMPLE_AS_OF, load_expected, load_sample
from smart_app.services import SignRequest, plan_order

START = date(2026, 1, 20)
RECORDED = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


def data(pid):
    return patients_from_bundle(load_sample(pid))[pid]


def plan(pid, **kwargs):
    req = SignRequest(titration=TitrationRequest(start=kwargs.pop("start", START)),
                      requester="Practitioner/dr-1", **kwargs)
    return plan_order(data(pid), req, as_of=SAMPLE_AS_OF, recorded=RECORDED)


def resources(bundle):
    return {e["resource"]["resourceType"]: e for e in bundle["entry"]}


def test_transaction_holds_one_medication_request_care_plan_and_provenance():
    _, bundle = plan("ldn-fibromyalgia")
    assert bundle["type"] == "transaction"
    assert sorted(resources(bundle)) == ["CarePlan", "MedicationRequest", "Provenance"]
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])


def test_medication_request_is_compounded_naltrexone_with_one_bedtime_dosage_per_step():
    mr = resources(plan("ldn-fibromyalgia")[1])["MedicationRequest"]["resource"]
    med = mr["contained"][0]
    assert med["ingredient"][0]["itemCodeableConcept"]["coding"][0]["code"] == "7243"
    assert mr["medicationReference"]["reference"] == "#ldn"
    doses = mr["dosageInstruction"]
    assert [d["sequence"] for d in doses] == [1, 2, 3]
    assert all(d["timing"]["repeat"]["when"] == ["HS"] for d in doses)
    assert [d["doseAndRate"][0]["doseQuantity"] for d in doses][0] == {
        "value": 1.5, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    assert doses[0]["timing"]["repeat"]["boundsPeriod"] == {"start": "2026-01-20", "end": "2026-02-02"}
    assert "compounded" in mr["note"][0]["text"].lower()
    assert mr["requester"] == {"reference": "Practitioner/dr-1"}
    assert mr["reasonReference"] and all(r["reference"].startswith("Condition/") for r in mr["reasonReference"])


def test_care_plan_books_the_efficacy_review_8_to_12_weeks_after_the_start():
    entries = resources(plan("ldn-fibromyalgia")[1])
    cp = entries["CarePlan"]["resource"]
    review = [a["detail"] for a in cp["activity"] if "detail" in a and "efficacy" in a["detail"]["code"]["text"]]
    assert review[0]["scheduledPeriod"] == {"start": "2026-03-17", "end": "2026-04-14"}
    assert cp["activity"][0]["reference"]["reference"] == entries["MedicationRequest"]["fullUrl"]
    assert any("procedure" in a["detail"]["description"] for a in cp["activity"] if "detail" in a)
    assert cp["addresses"] == entries["MedicationRequest"]["resource"]["reasonReference"]


def test_same_decision_built_twice_has_the_same_conditional_create_key():
    one, two = plan("ldn-fibromyalgia")[1], plan("ldn-fibromyalgia")[1]
    assert [e["request"] for e in one["entry"]] == [e["request"] for e in two["entry"]]
    key = resources(one)["MedicationRequest"]["resource"]["identifier"][0]
    assert key["system"] == ORDER_IDENTIFIER_SYSTEM
    assert resources(one)["MedicationRequest"]["request"]["ifNoneExist"] == f"identifier={key['system']}|{key['value']}"
    assert plan("ldn-fibromyalgia", start=date(2026, 1, 21))[1] != one


@pytest.mark.parametrize("pid", [p for p, e in sorted(load_expected().items()) if e["decision"] == "eligible"])
def test_every_resource_built_for_an_eligible_sample_is_valid_r4(pid):
    _, bundle = plan(pid)
    for entry in bundle["entry"]:
        assert r4_problems(entry["resource"]) == []


def test_contraindicated_patient_gets_nothing_built():
    with pytest.raises(WriteRefused):
        plan("ldn-oxycodone-active")


def test_a_start_inside_the_washout_is_refused_as_not_yet_even_with_an_attestation():
    with pytest.raises(WriteRefused) as refused:
        plan("ldn-tramadol-5-days", start=date(2026, 1, 19), attestation="checked")
    assert refused.value.user_message.startswith("Not yet - opioid washout")


def test_a_start_on_the_day_the_washout_ends_is_signable():
    order, bundle = plan("ldn-tramadol-5-days", start=date(2026, 1, 20))
    assert order.assessment.decision.value == "eligible" and bundle["entry"]


def test_cannot_determine_needs_an_attestation():
    with pytest.raises(InputError):
        plan("ldn-unknown-code")
    _, bundle = plan("ldn-unknown-code", attestation="Confirmed with patient: X123 is a vitamin")
    notes = resources(bundle)["MedicationRequest"]["resource"]["note"]
    assert any("vitamin" in n["text"] for n in notes)


def test_start_date_in_the_past_is_refused():
    with pytest.raises(InputError, match="in the past"):
        plan("ldn-fibromyalgia", start=date(2026, 1, 1))


def test_reason_must_be_one_of_the_patients_conditions():
    with pytest.raises(InputError, match="not on this patient"):
        plan("ldn-fibromyalgia", reasons=("Condition/someone-else",))
