"""FhirGateway: paging, retries, error mapping, patient record reads and writes - recorded HTTP."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

import pytest
import requests
from responses import matchers

from smart_app.errors import FhirAuthError, FhirServerError, FhirUnavailable
from smart_app.fhir.gateway import FhirGateway

BASE = "https://fhir.example.org/r4"
TOKEN = "at-SECRET-42"
FHIR_JSON = "application/fhir+json"


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def gateway(sleeps):
    return FhirGateway(BASE, lambda: TOKEN, retries=3, sleep=sleeps.append)


def bundle(*entries, next_url=None):
    links = [{"relation": "self", "url": BASE}] + ([{"relation": "next", "url": next_url}] if next_url else [])
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": list(entries)}


def match(resource):
    return {"fullUrl": f"{BASE}/{resource['resourceType']}/{resource['id']}", "resource": resource,
            "search": {"mode": "match"}}


def include(resource):
    return {**match(resource), "search": {"mode": "include"}}


def condition(cid):
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"}}


def outcome(*diagnostics, status=400):
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": d} for d in diagnostics]}


def query(params):
    return [matchers.query_param_matcher(params)]


# --- search and paging -------------------------------------------------------------------

def test_search_follows_every_next_link_as_given_and_keeps_only_match_entries(rsps, gateway):
    page2 = f"{BASE}?_getpages=7c1f&_getpagesoffset=2&_count=2&_bundletype=searchset"
    rsps.get(f"{BASE}/Condition", match=query({"patient": "p1"}),
             json=bundle(match(condition("c1")), match(condition("c2")),
                         {"resource": {"resourceType": "OperationOutcome", "id": "w"},
                          "search": {"mode": "outcome"}}, next_url=page2))
    rsps.get(page2, json=bundle(match(condition("c3"))))
    found = gateway.search("Condition", {"patient": "p1"})
    assert [c["id"] for c in found] == ["c1", "c2", "c3"]
    assert urlsplit(rsps.calls[1].request.url).query == urlsplit(page2).query


def test_included_resources_are_kept_aside_from_the_results(rsps, gateway):
    medication = {"resourceType": "Medication", "id": "m1"}
    request = {"resourceType": "MedicationRequest", "id": "r1", "medicationReference": {"reference": "Medication/m1"}}
    rsps.get(f"{BASE}/MedicationRequest", json=bundle(match(request), include(medication)))
    result = gateway.search_with_includes("MedicationRequest",
                                          {"patient": "p1", "_include": "MedicationRequest:medication"})
    assert result.matches == [request] and result.included == {"Medication/m1": medication}
    assert result.unreadable == []


def test_entries_without_a_search_mode_are_sorted_by_resource_type_and_a_stray_type_is_unreadable(rsps, gateway):
    rsps.get(f"{BASE}/Condition", json=bundle({"resource": condition("c1")},
                                              {"resource": {"resourceType": "Patient", "id": "p1"}}))
    result = gateway.search_with_includes("Condition", {})
    assert [c["id"] for c in result.matches] == ["c1"]
    assert result.unreadable == ["search Condition page 1, entry 2: Patient/p1 has search mode None, "
                                 "not match, include or outcome"]


@pytest.mark.parametrize("foreign", [
    "https://evil.example.com/r4?_getpages=1",
    "http://fhir.example.org/r4?_getpages=1",
    "https://fhir.example.org:8443/r4?_getpages=1",
    "https://fhir.example.org/other?_getpages=1",
    "https://fhir.example.org/r4x?_getpages=1",
    "https://user:pw@fhir.example.org/r4?_getpages=1",
])
def test_a_next_link_off_the_fhir_server_is_not_followed_and_gets_no_token(rsps, gateway, foreign):
    rsps.get(f"{BASE}/Condition", json=bundle(match(condition("c1")), next_url=foreign))
    with pytest.raises(FhirServerError) as caught:
        gateway.search("Condition", {"patient": "p1"})
    assert "cannot be completed" in caught.value.user_message
    assert len(rsps.calls) == 1 and urlsplit(rsps.calls[0].request.url).hostname == "fhir.example.org"


def test_a_relative_next_link_is_resolved_against_the_base(rsps, gateway):
    rsps.get(f"{BASE}/Condition", json=bundle(match(condition("c1")), next_url="Condition?page=2"))
    rsps.get(f"{BASE}/Condition?page=2", json=bundle(match(condition("c2"))))
    assert len(gateway.search("Condition", {})) == 2


def test_more_entries_than_the_total_cap_over_several_pages_is_an_error_naming_the_cap(rsps, sleeps):
    gateway = FhirGateway(BASE, lambda: TOKEN, max_entries=2, sleep=sleeps.append)
    rsps.get(f"{BASE}/Condition", json=bundle(match(condition("c1")), next_url=f"{BASE}?_getpages=a&o=1"))
    rsps.get(f"{BASE}?_getpages=a&o=1", json=bundle(match(condition("c2")), next_url=f"{BASE}?_getpages=a&o=2"))
    rsps.get(f"{BASE}?_getpages=a&o=2", json=bundle(match(condition("c3"))))
    with pytest.raises(FhirServerError) as caught:
        gateway.search("Condition", {})
    assert "more than 2 search entries" in caught.value.user_message
    assert "LDN_FHIR_MAX_ENTRIES" in caught.value.user_message


def test_a_page_longer_than_the_per_page_cap_is_refused_whole(rsps, sleeps):
    gateway = FhirGateway(BASE, lambda: TOKEN, max_page_entries=2, sleep=sleeps.append)
    rsps.get(f"{BASE}/Condition", json=bundle(*(match(condition(f"c{i}")) for i in range(3))))
    with pytest.raises(FhirServerError) as caught:
        gateway.search("Condition", {})
    assert "3 entries, more than the 2 allowed per page" in caught.value.user_message


def test_a_next_link_that_repeats_an_earlier_page_ends_the_search_with_an_error(rsps, gateway):
    loop = f"{BASE}?_getpages=a&o=1"
    rsps.get(f"{BASE}/Condition", json=bundle(match(condition("c1")), next_url=loop))
    rsps.get(loop, json=bundle(match(condition("c2")), next_url=loop))
    with pytest.raises(FhirServerError, match="repeats"):
        gateway.search("Condition", {})


# --- retries -----------------------------------------------------------------------------

def test_a_503_with_retry_after_is_retried_after_that_wait_and_then_succeeds(rsps, gateway, sleeps):
    rsps.get(f"{BASE}/Patient/p1", status=503, headers={"Retry-After": "2"})
    rsps.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    assert gateway.read("Patient", "p1")["id"] == "p1"
    assert sleeps == [2.0] and len(rsps.calls) == 2


def test_retry_after_as_an_http_date_is_honoured_and_capped(rsps, sleeps):
    gateway = FhirGateway(BASE, lambda: TOKEN, max_retry_wait=4.0, sleep=sleeps.append)
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    late = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    rsps.get(f"{BASE}/Patient/p1", status=429, headers={"Retry-After": soon})
    rsps.get(f"{BASE}/Patient/p1", status=503, headers={"Retry-After": late})
    rsps.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    gateway.read("Patient", "p1")
    assert 1.5 < sleeps[0] <= 3.0 and sleeps[1] == 4.0


def test_connection_errors_are_retried_with_exponential_backoff(rsps, gateway, sleeps):
    rsps.get(f"{BASE}/Patient/p1", body=requests.ConnectionError("reset"))
    rsps.get(f"{BASE}/Patient/p1", body=requests.ReadTimeout("slow"))
    rsps.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    gateway.read("Patient", "p1")
    assert sleeps == [0.5, 1.0]


def test_a_server_still_failing_after_the_retries_is_unavailable(rsps, gateway, sleeps):
    rsps.get(f"{BASE}/Patient/p1", status=502)
    with pytest.raises(FhirUnavailable) as caught:
        gateway.read("Patient", "p1")
    assert caught.value.http_status == 502 and len(rsps.calls) == 4 and len(sleeps) == 3


def test_a_post_is_never_retried(rsps, gateway, sleeps):
    rsps.post(BASE, status=503, headers={"Retry-After": "1"})
    with pytest.raises(FhirUnavailable):
        gateway.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert len(rsps.calls) == 1 and sleeps == []


def test_a_timed_out_write_says_it_may_have_landed(rsps, gateway):
    rsps.post(BASE, body=requests.ReadTimeout("slow"))
    with pytest.raises(FhirUnavailable) as caught:
        gateway.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert "may or may not have been written" in caught.value.user_message


# --- error mapping -----------------------------------------------------------------------

@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_become_auth_errors(rsps, gateway, status):
    rsps.get(f"{BASE}/Patient/p1", status=status, json=outcome("token expired"))
    with pytest.raises(FhirAuthError) as caught:
        gateway.read("Patient", "p1")
    assert caught.value.http_status == status and caught.value.diagnostics == ("token expired",)


def test_operation_outcome_diagnostics_surface_in_the_error(rsps, gateway):
    body = outcome("MedicationRequest.subject: minimum required = 1")
    body["issue"].append({"severity": "error", "code": "invalid", "details": {"text": "Bad dosage"}})
    rsps.post(BASE, status=422, json=body)
    with pytest.raises(FhirServerError) as caught:
        gateway.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert caught.value.diagnostics == ("MedicationRequest.subject: minimum required = 1", "Bad dosage")
    assert "minimum required" in str(caught.value) and caught.value.http_status == 422
    assert type(caught.value) is FhirServerError


@pytest.mark.parametrize("status", [404, 410, 400])
def test_other_client_errors_are_server_errors(rsps, gateway, status):
    rsps.get(f"{BASE}/Patient/p1", status=status, json=outcome("gone"))
    with pytest.raises(FhirServerError) as caught:
        gateway.read("Patient", "p1")
    assert type(caught.value) is FhirServerError and caught.value.http_status == status


def test_a_non_json_body_is_a_server_error(rsps, gateway):
    rsps.get(f"{BASE}/Patient/p1", body="<html>proxy error</html>", content_type="text/html")
    with pytest.raises(FhirServerError, match="not JSON"):
        gateway.read("Patient", "p1")


def test_a_redirect_is_not_followed(rsps, gateway):
    rsps.get(f"{BASE}/Patient/p1", status=302, headers={"Location": "https://evil.example.com/Patient/p1"})
    with pytest.raises(FhirServerError):
        gateway.read("Patient", "p1")
    assert len(rsps.calls) == 1


# --- the patient record ------------------------------------------------------------------

def capability_statement(includes=("MedicationRequest:medication", "MedicationStatement:medication")):
    by_type = {}
    for item in includes:
        by_type.setdefault(item.split(":")[0], []).append(item)
    resources = [{"type": t, "searchInclude": by_type.get(t, [])}
                 for t in ("Patient", "Condition", "MedicationRequest", "MedicationStatement", "MedicationDispense")]
    return {"resourceType": "CapabilityStatement", "rest": [
        {"mode": "server", "resource": resources, "interaction": [{"code": "transaction"}, {"code": "batch"}]}]}


def medication(mid):
    return {"resourceType": "Medication", "id": mid, "code": {"text": f"drug {mid}"}}


def med_use(resource_type, rid, reference):
    return {"resourceType": resource_type, "id": rid, "medicationReference": {"reference": reference}}


def register_record(rsps, *, condition_status=200):
    rsps.get(f"{BASE}/metadata", json=capability_statement())
    rsps.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    common = {"patient": "p1", "_count": "1000"}
    rsps.get(f"{BASE}/MedicationStatement", match=query({**common, "_include": "MedicationStatement:medication"}),
             json=bundle(match(med_use("MedicationStatement", "s1", "Medication/m1")),
                         include(medication("m1"))))
    rsps.get(f"{BASE}/MedicationRequest", match=query({**common, "_include": "MedicationRequest:medication"}),
             json=bundle(match(med_use("MedicationRequest", "r1", "#inline")),
                         match(med_use("MedicationRequest", "r2", f"{BASE}/Medication/m2/_history/3"))))
    rsps.get(f"{BASE}/MedicationDispense", match=query(common),
             json=bundle(match(med_use("MedicationDispense", "d1", "Medication/m3"))))
    if condition_status == 200:
        rsps.get(f"{BASE}/Condition", match=query(common), json=bundle(match(condition("c1"))))
    else:
        rsps.get(f"{BASE}/Condition", match=query(common), status=condition_status, json=outcome("denied"))


def test_the_patient_record_is_read_concurrently_with_includes_and_one_batched_medication_read(rsps, gateway):
    register_record(rsps)
    rsps.get(f"{BASE}/Medication", match=query({"_id": "m2,m3", "_count": "2"}),
             json=bundle(match(medication("m2")), match(medication("m3"))))
    record = gateway.read_patient_record("p1")
    data = record.patient_data("p1")
    assert record.patient["id"] == "p1" and record.resources == {}  # parsed page by page: no raw JSON kept
    assert [(m.resource, m.names) for m in data.medications] == [
        ("MedicationStatement/s1", ("drug m1",)), ("MedicationRequest/r1", ()),
        ("MedicationRequest/r2", ("drug m2",)), ("MedicationDispense/d1", ("drug m3",))]
    assert [c.resource for c in data.conditions] or "Condition/c1" in " ".join(data.problems)
    assert all(call.request.headers["Authorization"] == f"Bearer {TOKEN}" for call in rsps.calls)


def test_any_failed_part_of_the_patient_record_fails_the_whole_read(rsps, gateway):
    rsps.get(f"{BASE}/metadata", json=capability_statement())
    rsps.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    rsps.get(f"{BASE}/MedicationStatement", json=bundle())
    rsps.get(f"{BASE}/MedicationRequest", json=bundle())
    rsps.get(f"{BASE}/MedicationDispense", json=bundle())
    rsps.get(f"{BASE}/Condition", status=403, json=outcome("no Condition scope"))
    rsps.assert_all_requests_are_fired = False  # the read stops at the first failure
    with pytest.raises(FhirAuthError):
        gateway.read_patient_record("p1")


def test_a_medication_that_cannot_be_found_fails_the_record(rsps, gateway):
    register_record(rsps)
    rsps.get(f"{BASE}/Medication", json=bundle(match({"resourceType": "Medication", "id": "m2"})))
    with pytest.raises(FhirServerError, match="not found"):
        gateway.read_patient_record("p1")


def test_a_medication_reference_to_another_server_fails_the_record_without_a_request(rsps, gateway):
    rsps.get(f"{BASE}/metadata", json=capability_statement(includes=()))
    rsps.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    rsps.get(f"{BASE}/MedicationStatement",
             json=bundle(match(med_use("MedicationStatement", "s1", "https://other.example.com/Medication/x"))))
    for resource_type in ("MedicationRequest", "MedicationDispense", "Condition"):
        rsps.get(f"{BASE}/{resource_type}", json=bundle())
    rsps.assert_all_requests_are_fired = False  # the read stops at the first failure
    with pytest.raises(FhirServerError, match="outside"):
        gateway.read_patient_record("p1")
    assert all("other.example.com" not in call.request.url for call in rsps.calls)


def test_a_patient_id_that_is_not_a_fhir_id_is_refused_before_any_request(rsps, gateway):
    with pytest.raises(FhirServerError):
        gateway.read_patient_record("../Practitioner/1")
    assert len(rsps.calls) == 0


# --- writes ------------------------------------------------------------------------------

TRANSACTION = {"resourceType": "Bundle", "type": "transaction", "entry": [
    {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "CarePlan", "status": "active"},
     "request": {"method": "POST", "url": "CarePlan"}}]}


def test_a_transaction_is_posted_to_the_base_as_fhir_json_and_later_reads_skip_caches(rsps, gateway):
    assert "Cache-Control" not in gateway._headers("GET", TOKEN, None)
    rsps.post(BASE, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []},
              match=[matchers.json_params_matcher(TRANSACTION),
                     matchers.header_matcher({"Content-Type": FHIR_JSON, "Authorization": f"Bearer {TOKEN}"})])
    rsps.get(f"{BASE}/Condition", json=bundle(), match=[matchers.header_matcher({"Cache-Control": "no-cache"})])
    assert gateway.transaction(TRANSACTION)["type"] == "transaction-response"
    gateway.search("Condition", {"patient": "p1"})


def test_transaction_refuses_anything_but_a_transaction_bundle(rsps, gateway):
    with pytest.raises(ValueError):
        gateway.transaction({"resourceType": "Bundle", "type": "batch"})


def test_a_conditional_create_sends_if_none_exist(rsps, gateway):
    order = {"resourceType": "MedicationRequest", "status": "active"}
    rsps.post(f"{BASE}/MedicationRequest", status=201, json={**order, "id": "mr9"},
              match=[matchers.json_params_matcher(order),
                     matchers.header_matcher({"If-None-Exist": "identifier=https://fhir.ldn-app.org/identifier/"
                                                               "ldn-order|k1"})])
    created = gateway.create(order, "identifier=https://fhir.ldn-app.org/identifier/ldn-order|k1")
    assert created["id"] == "mr9"


def test_a_create_without_a_body_takes_the_id_from_location(rsps, gateway):
    rsps.post(f"{BASE}/CarePlan", status=201, headers={"Location": f"{BASE}/CarePlan/cp1/_history/1"})
    assert gateway.create({"resourceType": "CarePlan"}) == {"resourceType": "CarePlan", "id": "cp1"}


def test_delete_treats_an_already_deleted_resource_as_done(rsps, gateway):
    rsps.delete(f"{BASE}/CarePlan/cp1", status=410)
    rsps.delete(f"{BASE}/Provenance/pv1", status=204)
    gateway.delete("CarePlan/cp1")
    gateway.delete("Provenance/pv1")


def test_delete_still_raises_on_other_failures(rsps, gateway):
    rsps.delete(f"{BASE}/CarePlan/cp1", status=409, json=outcome("referenced"))
    with pytest.raises(FhirServerError, match="referenced"):
        gateway.delete("CarePlan/cp1")


def test_set_status_puts_the_resource_back_with_if_match(rsps, gateway):
    current = {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "meta": {"versionId": "2"}}
    rsps.get(f"{BASE}/MedicationRequest/mr1", json=current)
    rsps.put(f"{BASE}/MedicationRequest/mr1", json={**current, "status": "entered-in-error"},
             match=[matchers.json_params_matcher({**current, "status": "entered-in-error"}),
                    matchers.header_matcher({"If-Match": 'W/"2"'})])
    assert gateway.set_status("MedicationRequest/mr1", "entered-in-error")["status"] == "entered-in-error"
    with pytest.raises(ValueError):
        gateway.set_status("Provenance/pv1", "active")


# --- capabilities, timeouts, logs --------------------------------------------------------

def test_capabilities_are_fetched_once_and_report_transaction_support(rsps, gateway):
    rsps.get(f"{BASE}/metadata", json=capability_statement())
    assert gateway.supports_transaction()
    assert gateway.supports_include("MedicationRequest:medication")
    assert not gateway.supports_include("MedicationDispense:medication")
    gateway.capabilities()
    assert len(rsps.calls) == 1


def test_timeouts_are_passed_on_every_request(rsps):
    gateway = FhirGateway(BASE, lambda: TOKEN, connect_timeout=2, read_timeout=9)
    rsps.get(f"{BASE}/metadata", json=capability_statement())
    rsps.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    rsps.get(f"{BASE}/Condition", json=bundle(next_url=f"{BASE}?_getpages=z"))
    rsps.get(f"{BASE}?_getpages=z", json=bundle())
    rsps.post(BASE, json={"resourceType": "Bundle", "type": "transaction-response"})
    rsps.post(f"{BASE}/CarePlan", json={"resourceType": "CarePlan", "id": "c"})
    rsps.delete(f"{BASE}/CarePlan/c", status=204)
    gateway.capabilities()
    gateway.read("Patient", "p1")
    gateway.search("Condition", {})
    gateway.transaction({"resourceType": "Bundle", "type": "transaction"})
    gateway.create({"resourceType": "CarePlan"})
    gateway.delete("CarePlan/c")
    assert [call.request.req_kwargs["timeout"] for call in rsps.calls] == [(2, 9)] * 7


def test_without_a_token_provider_no_authorization_header_is_sent(rsps):
    rsps.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    FhirGateway(BASE, None).read("Patient", "p1")
    assert "Authorization" not in rsps.calls[0].request.headers


def test_logs_name_resource_types_and_statuses_but_never_tokens_or_query_values(rsps, gateway, caplog):
    caplog.set_level(logging.DEBUG, logger="smart_app.fhir.gateway")
    rsps.get(f"{BASE}/Condition", status=503)
    rsps.get(f"{BASE}/Condition", json=bundle(match(condition("c1"))))
    gateway.search("Condition", {"code": "http://snomed.info/sct|SECRETCODE", "patient": "p1"})
    text = caplog.text
    assert "Condition" in text and "503" in text and "200" in text
    assert TOKEN not in text and "SECRETCODE" not in text


def test_a_gateway_told_of_an_earlier_write_skips_server_caches(rsps, gateway):
    gateway.assume_written()
    rsps.get(f"{BASE}/Condition", json=bundle(), match=[matchers.header_matcher({"Cache-Control": "no-cache"})])
    gateway.search("Condition", {"patient": "p1"})
