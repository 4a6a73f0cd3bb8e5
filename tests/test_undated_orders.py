"""Issue 8 item 6: a stopped order with no end is bounded by what it says, else by the controlled-substance limits."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smart_app.clinical.model import ExposureState
from smart_app.fhir.parse import exposure_from, patient_data
from smart_app.services import assess_data

AS_OF = date(2026, 1, 15)
OXY = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1049621",
                   "display": "oxycodone hydrochloride 5 MG Oral Tablet"}]}


def order(authored: date, status: str = "stopped", **extra) -> dict:
    return {"resourceType": "MedicationRequest", "id": "o1", "status": status, "intent": "order",
            "subject": {"reference": "Patient/p"}, "medicationCodeableConcept": OXY,
            "authoredOn": authored.isoformat(), **extra}


def days_ago(n: int) -> date:
    return AS_OF - timedelta(days=n)


def assess(*resources: dict):
    return assess_data(patient_data("p", {"resourceType": "Patient", "id": "p"}, list(resources), {}), as_of=AS_OF)


def finding(assessment, code: str):
    return next(f for f in assessment.findings if f.code == code)


@pytest.mark.parametrize("age_days", [283, 400, 4 * 365, 60 * 365])
def test_a_stopped_order_with_only_authored_on_that_certainly_ended_no_longer_blocks(age_days):
    a = assess(order(days_ago(age_days)))
    assert a.decision.value != "cannot-determine"
    past = finding(a, "opioid-past")
    assert "no later than" in past.text and "21 CFR 1306.22" in past.text


@pytest.mark.parametrize("age_days", [0, 30, 180, 272])
def test_a_stopped_order_that_may_still_be_in_use_still_blocks_with_its_latest_possible_day(age_days):
    a = assess(order(days_ago(age_days)))
    assert a.decision.value == "cannot-determine"
    latest = days_ago(age_days) + timedelta(days=273)
    assert f"until {latest} at the latest" in finding(a, "opioid-undated").text
    assert a.earliest_start_date == latest + timedelta(days=10)


@pytest.mark.parametrize("dispense, last", [
    ({"expectedSupplyDuration": {"value": 7, "code": "d"}, "numberOfRepeatsAllowed": 1}, 14),
    ({"quantity": {"value": 60, "unit": "TAB"}}, 15),
    ({"validityPeriod": {"start": "2025-01-01", "end": "2025-03-01"},
      "expectedSupplyDuration": {"value": 30, "code": "d"}}, None),
])
def test_what_the_order_says_sets_the_last_day(dispense, last):
    dosage = [{"timing": {"repeat": {"frequency": 1, "period": 6, "periodUnit": "h"}},
               "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "TAB"}}]}]
    got = exposure_from(order(date(2025, 1, 1), dispenseRequest=dispense, dosageInstruction=dosage), {})
    expected = date(2025, 3, 31) if last is None else date(2025, 1, 1) + timedelta(days=last)
    assert (got.state, got.last_exposure, got.bound) == (ExposureState.ENDED, expected, None)


@pytest.mark.parametrize("resource, last, bound_words", [
    (order(date(2025, 1, 1), dispenseRequest={"validityPeriod": {"end": "2025-02-01"}}), date(2025, 5, 2),
     "end of the order's validity period"),
    (order(date(2025, 1, 1), dispenseRequest={"numberOfRepeatsAllowed": 1}), date(2025, 6, 30), "2 fill(s)"),
    (order(date(2025, 1, 1), status="completed"), date(2025, 10, 1), "21 CFR 1306.12(b)"),
    ({"resourceType": "MedicationDispense", "id": "d", "status": "completed", "medicationCodeableConcept": OXY,
      "whenHandedOver": "2025-01-01"}, date(2025, 4, 1), "one dispense"),
])
def test_where_the_record_leaves_the_end_open_it_is_bounded_and_says_why(resource, last, bound_words):
    got = exposure_from(resource, {})
    assert got.state is ExposureState.ENDED and got.last_exposure == last
    assert bound_words in got.bound


def test_as_needed_dosing_does_not_turn_a_quantity_into_a_supply():
    dosage = [{"asNeededBoolean": True, "timing": {"repeat": {"frequency": 4, "period": 1, "periodUnit": "d"}},
               "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "TAB"}}]}]
    got = exposure_from(order(date(2025, 1, 1), dispenseRequest={"quantity": {"value": 20, "unit": "TAB"}},
                              dosageInstruction=dosage), {})
    assert got.last_exposure == date(2025, 10, 1) and got.bound


def test_a_statement_with_no_date_at_all_is_still_cannot_determine():
    s = {"resourceType": "MedicationStatement", "id": "s", "status": "stopped", "medicationCodeableConcept": OXY,
         "subject": {"reference": "Patient/p"}}
    assert assess(s).decision.value == "cannot-determine"


@settings(max_examples=200, deadline=None)
@given(age=st.integers(0, 3000), used=st.integers(1, 273), washout=st.integers(7, 10))
def test_no_exposure_inside_the_washout_is_missed_when_use_stayed_within_the_federal_limits(age, used, washout):
    authored = days_ago(age)
    a = assess_data(patient_data("p", {"resourceType": "Patient", "id": "p"}, [order(authored)], {}),
                    as_of=AS_OF, washout_days=washout)
    really_exposed = AS_OF < authored + timedelta(days=used + washout)
    if really_exposed:
        assert a.decision.value not in {"eligible", "eligible-with-cautions"}
