"""place_order and read failures, with a fake gateway (fakes over mocks at the service boundary)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from smart_app.clinical.model import TitrationRequest
from smart_app.errors import FhirServerError, FhirUnavailable
from smart_app.fhir.gateway import PatientRecord
from smart_app.fhir.parse import patients_from_bundle
from smart_app.samples import SAMPLE_AS_OF, load_sample
from smart_app.services import SignRequest, assess_patient, place_order, plan_order


class FakeGateway:
    """Holds resources in memory; can refuse transactions or fail the n-th create."""

    def __init__(self, *, transactions=True, fail_create_of=None, record=None, read_error=None):
        self.transactions, self.fail_create_of = transactions, fail_create_of
        self.stored: dict[str, dict] = {}
        self.record, self.read_error = record, read_error
        self.next_id = 1

    def supports_transaction(self):
        return self.transactions

    def transaction(self, bundle):
        raise AssertionError("not used in these tests")

    def create(self, resource, if_none_exist=None):
        if resource["resourceType"] == self.fail_create_of:
            raise FhirServerError("boom", http_status=422, diagnostics=("CarePlan.subject: invalid",))
        rid = str(self.next_id)
        self.next_id += 1
        self.stored[f"{resource['resourceType']}/{rid}"] = {**resource, "id": rid}
        return self.stored[f"{resource['resourceType']}/{rid}"]

    def mark_entered_in_error(self, ref):
        self.stored[ref] = {**self.stored[ref], "status": "entered-in-error"}

    def delete(self, ref):
        self.stored.pop(ref, None)

    def read_patient_record(self, patient_id):
        if self.read_error:
            raise self.read_error
        return self.record


def bundle_for(pid="ldn-fibromyalgia"):
    data = patients_from_bundle(load_sample(pid))[pid]
    req = SignRequest(titration=TitrationRequest(start=date(2026, 1, 20)), requester="Practitioner/1")
    return plan_order(data, req, as_of=SAMPLE_AS_OF, recorded=datetime(2026, 1, 15, 9, 0).astimezone())[1]


def test_without_transaction_support_resources_are_created_in_order_with_references_rewritten():
    gw = FakeGateway(transactions=False)
    result = place_order(gw, bundle_for())
    care_plan = gw.stored[result.care_plan]
    assert care_plan["activity"][0]["reference"]["reference"] == result.medication_request
    assert not any("urn:uuid" in str(r) for r in gw.stored.values())


def test_a_failure_after_the_first_create_leaves_no_medication_request_without_its_care_plan():
    gw = FakeGateway(transactions=False, fail_create_of="CarePlan")
    with pytest.raises(FhirServerError):
        place_order(gw, bundle_for())
    assert [r["status"] for r in gw.stored.values() if r["resourceType"] == "MedicationRequest"] == [
        "entered-in-error"]


def test_a_server_error_while_reading_gives_cannot_determine_never_eligible():
    gw = FakeGateway(read_error=FhirUnavailable("timeout"))
    assessment, _ = assess_patient(gw, "ldn-fibromyalgia", as_of=SAMPLE_AS_OF)
    assert assessment.decision.value == "cannot-determine"
    assert any(f.code == "data-unreadable" for f in assessment.findings)


def test_a_record_read_through_the_gateway_is_assessed_like_the_same_bundle():
    bundle = load_sample("ldn-tramadol-5-days")
    resources = [e["resource"] for e in bundle["entry"]]
    patient = resources[0]
    by_type: dict[str, list] = {}
    for r in resources[1:]:
        by_type.setdefault(r["resourceType"], []).append(r)
    gw = FakeGateway(record=PatientRecord(patient=patient, resources=by_type, medications={}))
    assessment, _ = assess_patient(gw, "ldn-tramadol-5-days", as_of=SAMPLE_AS_OF)
    assert assessment.decision.value == "wait-washout"
    assert assessment.earliest_start_date == date(2026, 1, 20)
