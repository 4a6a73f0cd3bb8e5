"""place_order and read failures, with a fake gateway (fakes over mocks at the service boundary)."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from smart_app.clinical.model import TitrationRequest
from smart_app.errors import FhirAuthError, FhirServerError, FhirUnavailable, SigningNotAllowed
from smart_app.fhir.build import transaction_bundle
from smart_app.fhir.gateway import PatientRecord
from smart_app.fhir.parse import patients_from_bundle
from smart_app.fhir.write import find_order, place_order
from smart_app.samples import SAMPLE_AS_OF, load_sample
from smart_app.services import Outcome, SignRequest, assess_patient, check_order, sign_order
from smart_app.smart.scopes import granted_permissions


class FakeGateway:
    """Holds resources in memory, honours If-None-Exist on the order identifier; faults on request."""

    def __init__(self, *, transactions=True, fail_create_of=None, fail_status=422, record=None, read_error=None,
                 deny_delete=False, fail_activation=None, transaction_error=None, commit_then_fail=False):
        self.transactions, self.fail_create_of, self.fail_status = transactions, fail_create_of, fail_status
        self.deny_delete, self.fail_activation = deny_delete, fail_activation
        self.transaction_error, self.commit_then_fail = transaction_error, commit_then_fail
        self.stored: dict[str, dict] = {}
        self.record, self.read_error = record, read_error
        self.next_id = 1

    def supports_transaction(self):
        return self.transactions

    def transaction(self, bundle):
        if self.transaction_error and not self.commit_then_fail:
            raise self.transaction_error
        urns = {}
        for entry in bundle["entry"]:
            resource = json.loads(json.dumps(entry["resource"]).replace(*next(iter(urns.items()), ("", ""))))
            stored = self.create(resource, entry["request"]["ifNoneExist"])
            urns[entry["fullUrl"]] = f"{stored['resourceType']}/{stored['id']}"
        if self.transaction_error:
            raise self.transaction_error
        return {"resourceType": "Bundle", "entry": [{"response": {"location": ref}} for ref in urns.values()]}

    def create(self, resource, if_none_exist=None):
        if resource["resourceType"] == self.fail_create_of:
            raise FhirServerError("boom", http_status=self.fail_status, diagnostics=("CarePlan.subject: invalid",))
        for ref, existing in self.stored.items():
            if ref.startswith(resource["resourceType"] + "/") and existing.get("identifier") and \
                    existing.get("identifier") == resource.get("identifier"):
                return existing
        rid = str(self.next_id)
        self.next_id += 1
        self.stored[f"{resource['resourceType']}/{rid}"] = {**resource, "id": rid}
        return self.stored[f"{resource['resourceType']}/{rid}"]

    def set_status(self, ref, status):
        if self.fail_activation:
            raise self.fail_activation
        self.stored[ref] = {**self.stored[ref], "status": status}
        return self.stored[ref]

    def delete(self, ref):
        if self.deny_delete:
            raise FhirAuthError("denied", http_status=403)
        self.stored.pop(ref, None)

    def search(self, resource_type, params):
        system, key = params["identifier"].split("|")
        return [r for r in self.stored.values() if r["resourceType"] == resource_type
                and {"system": system, "value": key} in r.get("identifier", [])]

    def of_type(self, resource_type):
        return [r for r in self.stored.values() if r["resourceType"] == resource_type]

    def read_patient_record(self, patient_id):
        if self.read_error:
            raise self.read_error
        return self.record


ALL = granted_permissions("patient/*.cruds")
CREATE_ONLY = granted_permissions("patient/*.rs patient/MedicationRequest.c patient/CarePlan.c patient/Provenance.c")


RECORDED = datetime(2026, 1, 15, 9, 0).astimezone()


def order_for(pid="ldn-fibromyalgia"):
    data = patients_from_bundle(load_sample(pid))[pid]
    req = SignRequest(titration=TitrationRequest(start=date(2026, 1, 20)), requester="Practitioner/1")
    return check_order(data, req, as_of=SAMPLE_AS_OF)


def bundle_for(pid="ldn-fibromyalgia"):
    return transaction_bundle(order_for(pid), RECORDED)


def test_without_transaction_support_resources_are_created_in_order_with_references_rewritten():
    gw = FakeGateway(transactions=False)
    result = place_order(gw, bundle_for())
    care_plan = gw.stored[result.care_plan]
    assert care_plan["activity"][0]["reference"]["reference"] == result.medication_request
    assert gw.stored[result.medication_request]["status"] == "active"
    assert not any("urn:uuid" in str(r) for r in gw.stored.values())


def test_a_refused_transaction_is_reported_as_not_written_with_the_servers_reason():
    gw = FakeGateway(transaction_error=FhirServerError("no", http_status=422, diagnostics=("bad dose",)))
    outcome = sign_order(gw, order_for(), ALL)
    assert outcome.outcome is Outcome.NOT_WRITTEN and outcome.details == ("bad dose",)
    assert "not written" in outcome.message


def test_a_transaction_whose_answer_is_lost_after_commit_is_found_by_its_key_and_reported_written():
    gw = FakeGateway(transaction_error=FhirUnavailable("reset"), commit_then_fail=True)
    outcome = sign_order(gw, order_for(), ALL)
    assert outcome.outcome is Outcome.WRITTEN and "is in the chart" in outcome.message
    assert len(gw.of_type("MedicationRequest")) == 1


def test_a_timeout_before_commit_stays_unknown_and_says_the_order_is_not_in_the_chart_and_retry_is_safe():
    gw = FakeGateway(transaction_error=FhirUnavailable("timeout"))
    outcome = sign_order(gw, order_for(), ALL)
    assert outcome.outcome is Outcome.UNKNOWN and "not in the chart now" in outcome.message
    assert "nothing was written" not in outcome.message.lower() and "Signing again is safe" in outcome.message


def test_a_failure_after_the_first_create_deletes_the_draft_and_leaves_nothing_active():
    gw = FakeGateway(transactions=False, fail_create_of="CarePlan")
    outcome = sign_order(gw, order_for(), ALL)
    assert outcome.outcome is Outcome.NOT_WRITTEN and gw.stored == {}


def test_an_undo_that_is_denied_leaves_only_a_draft_and_a_retry_completes_it_once():
    gw = FakeGateway(transactions=False, fail_create_of="CarePlan", deny_delete=True)
    outcome = sign_order(gw, order_for(), ALL)
    assert outcome.outcome is Outcome.NOT_WRITTEN and "drafts, not an active order" in outcome.message
    assert [r["status"] for r in gw.of_type("MedicationRequest")] == ["draft"] and gw.of_type("CarePlan") == []
    gw.fail_create_of = None
    assert sign_order(gw, order_for(), ALL).outcome is Outcome.WRITTEN
    assert [r["status"] for r in gw.of_type("MedicationRequest")] == ["active"] and len(gw.of_type("CarePlan")) == 1


def test_an_unanswered_activation_keeps_the_draft_and_reports_unknown():
    gw = FakeGateway(transactions=False, fail_activation=FhirUnavailable("timeout"))
    outcome = sign_order(gw, order_for(), ALL)
    assert outcome.outcome is Outcome.UNKNOWN and "only a draft" in outcome.message
    assert [r["status"] for r in gw.of_type("MedicationRequest")] == ["draft"] and len(gw.of_type("CarePlan")) == 1


def test_without_transactions_and_without_undo_scopes_signing_is_refused_before_anything_is_sent():
    gw = FakeGateway(transactions=False)
    with pytest.raises(SigningNotAllowed, match="does not support transactions"):
        sign_order(gw, order_for(), CREATE_ONLY)
    assert gw.stored == {}
    assert sign_order(FakeGateway(), order_for(), CREATE_ONLY).outcome is Outcome.WRITTEN  # a transaction needs none


def test_the_written_order_is_rebuilt_from_the_server_by_its_key_alone():
    gw = FakeGateway()
    outcome = sign_order(gw, order_for(), ALL)
    order = find_order(gw, outcome.key)
    assert order["status"] == "active" and order["patient"] == "ldn-fibromyalgia" and order["start"] == "2026-01-20"
    assert [s["dose"] for s in order["steps"]] == [1.5, 3.0, 4.5]
    assert (order["review_from"], order["review_to"]) == ("2026-03-17", "2026-04-14")
    assert find_order(gw, "0" * 32) is None


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
