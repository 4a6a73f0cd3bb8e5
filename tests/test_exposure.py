"""R2 status and date semantics of MedicationStatement / Request / Dispense."""

from __future__ import annotations

from datetime import date

import pytest

from smart_app.clinical.model import ExposureState
from smart_app.clinical.rules.r2_record_dates import RecordDates, interpret, parse_fhir_date
from smart_app.fhir.parse import exposure_from

D = date.fromisoformat


@pytest.mark.parametrize("rtype, status, state", [
    ("MedicationStatement", "active", ExposureState.CURRENT),
    ("MedicationStatement", "intended", ExposureState.CURRENT),
    ("MedicationStatement", "not-taken", ExposureState.NONE),
    ("MedicationStatement", "entered-in-error", ExposureState.NONE),
    ("MedicationStatement", "unknown", ExposureState.UNKNOWN),
    ("MedicationStatement", None, ExposureState.UNKNOWN),
    ("MedicationRequest", "on-hold", ExposureState.CURRENT),
    ("MedicationRequest", "cancelled", ExposureState.NONE),
    ("MedicationRequest", "bogus", ExposureState.UNKNOWN),
    ("MedicationDispense", "in-progress", ExposureState.CURRENT),
    ("MedicationDispense", "declined", ExposureState.NONE),
])
def test_status_decides_whether_a_record_is_exposure(rtype, status, state):
    assert interpret(rtype, status, RecordDates(start=D("2026-01-01"), end=D("2026-01-02"))).state is state


def test_completed_record_without_any_date_cannot_be_placed_in_time():
    got = interpret("MedicationStatement", "completed", RecordDates())
    assert got.state is ExposureState.UNKNOWN and "no date" in got.problem


def test_record_ending_before_it_starts_is_contradictory():
    got = interpret("MedicationStatement", "completed", RecordDates(start=D("2026-01-10"), end=D("2026-01-01")))
    assert got.state is ExposureState.UNKNOWN and "before it starts" in got.problem


def test_dispense_exposure_lasts_for_its_days_supply():
    r = {"resourceType": "MedicationDispense", "id": "d", "status": "completed",
         "medicationCodeableConcept": {"text": "hydrocodone"}, "whenHandedOver": "2026-01-08T10:00:00Z",
         "daysSupply": {"value": 5, "code": "d"}}
    assert exposure_from(r, {}).last_exposure == D("2026-01-13")


def test_request_exposure_covers_supply_times_fills():
    r = {"resourceType": "MedicationRequest", "id": "r", "status": "completed", "intent": "order",
         "medicationCodeableConcept": {"text": "oxycodone"}, "authoredOn": "2026-01-01",
         "dispenseRequest": {"expectedSupplyDuration": {"value": 7, "code": "d"}, "numberOfRepeatsAllowed": 1}}
    assert exposure_from(r, {}).last_exposure == D("2026-01-15")


def test_statement_reported_as_ended_uses_its_end_not_the_reporting_date():
    r = {"resourceType": "MedicationStatement", "id": "s", "status": "completed",
         "medicationCodeableConcept": {"text": "codeine"}, "effectivePeriod": {"end": "2025-12-20"},
         "dateAsserted": "2026-01-14"}
    assert exposure_from(r, {}).last_exposure == D("2025-12-20")


def test_unreadable_date_makes_an_ended_record_unknown_not_absent():
    r = {"resourceType": "MedicationStatement", "id": "s", "status": "stopped",
         "medicationCodeableConcept": {"text": "codeine"}, "effectiveDateTime": "last tuesday"}
    got = exposure_from(r, {})
    assert got.state is ExposureState.UNKNOWN and "unreadable date" in got.date_problem


def test_partial_dates_widen_to_the_safe_side():
    assert parse_fhir_date("2025-12", end_of_period=True) == D("2025-12-31")
    assert parse_fhir_date("2025", end_of_period=False) == D("2025-01-01")
