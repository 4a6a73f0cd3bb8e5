"""CDS Hooks service called the way an EHR calls it: signed JWTs (ES384) verified against a JWKS on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cds_ehr import (
    APP_BASE,
    EHR_ISS,
    FHIR,
    JwksServer,
    TestEhr,
    hook_body,
    ldn_draft,
    med_order,
    oxycodone_draft,
    prefetch_for,
    sample_resources,
    searchset,
)

from smart_app import create_app
from smart_app.samples import SAMPLE_AS_OF, load_expected

ROOT = Path(__file__).resolve().parents[1]
SIGN = "/cds-services/ldn-order-sign"
SELECT = "/cds-services/ldn-order-select"
EXPECTED = load_expected()


@pytest.fixture(scope="module")
def ehr():
    return TestEhr()


@pytest.fixture(scope="module")
def jwks_url(ehr):
    server = JwksServer(ehr.jwks)
    yield server.url
    server.stop()


@pytest.fixture
def app(jwks_url):
    return create_app({"ALLOWED_ISSUERS": FHIR, "PUBLIC_BASE_URL": APP_BASE, "CDS_CLIENTS": f"{EHR_ISS}|{jwks_url}",
                       "TODAY": SAMPLE_AS_OF.isoformat(), "FHIR_RETRIES": 0})


@pytest.fixture
def client(app):
    return app.test_client()


def call(client, ehr, path, body, **claims):
    return client.post(path, json=body, headers=ehr.headers(path, **claims))


def sign_cards(client, ehr, pid, drafts, resources=None):
    """order-sign with full prefetch of the sample patient (or of `resources`)."""
    prefetch = prefetch_for(resources or sample_resources(pid))
    response = call(client, ehr, SIGN, hook_body("order-sign", pid, drafts, prefetch))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["cards"]


def assert_card_shape(card):
    assert len(card["uuid"]) == 36 and len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"] and card["source"]["url"].startswith(APP_BASE + "/cds-services/rules#R")
    assert card["extension"]["org.ldn-app.rules"] and card["extension"]["org.ldn-app.sources"]
    assert card["overrideReasons"] and all(r["display"] and r["code"] for r in card["overrideReasons"])
    if "suggestions" in card:
        assert card["selectionBehavior"] == "at-most-one"


# --- discovery ---------------------------------------------------------------------------------

def test_discovery_lists_both_order_services_with_their_prefetch_templates(client):
    services = {s["id"]: s for s in client.get("/cds-services").json["services"]}
    assert services["ldn-order-select"]["hook"] == "order-select"
    assert services["ldn-order-sign"]["hook"] == "order-sign"
    for service in services.values():
        assert service["description"] and service["title"]
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        for key, rtype in (("conditions", "Condition"), ("medicationRequests", "MedicationRequest"),
                           ("medicationStatements", "MedicationStatement"),
                           ("medicationDispenses", "MedicationDispense")):
            assert service["prefetch"][key].startswith(f"{rtype}?patient={{{{context.patientId}}}}")


def test_the_published_service_description_is_what_the_discovery_endpoint_serves(client):
    published = json.loads((ROOT / "fhir_profiles" / "cds-services.json").read_text())
    assert client.get("/cds-services").json == published


def test_the_rules_page_the_cards_cite_names_every_rule(client):
    page = client.get("/cds-services/rules").get_data(as_text=True)
    assert all(f'id="R{n}"' in page for n in range(1, 7))


# --- naltrexone ordered: R2/R5 ----------------------------------------------------------------

def test_ldn_ordered_for_a_patient_on_oxycodone_gets_a_critical_card_that_removes_the_draft(client, ehr):
    pid = "ldn-oxycodone-active"
    [card] = sign_cards(client, ehr, pid, [ldn_draft(pid)])
    assert_card_shape(card)
    assert card["indicator"] == "critical"
    assert "oxycodone" in card["summary"].lower() and "10 days after the last dose" in card["summary"]
    assert card["extension"]["org.ldn-app.rules"] == ["R2"]
    [suggestion] = card["suggestions"]
    assert suggestion["actions"] == [{"type": "delete", "resourceId": "MedicationRequest/draft-ldn",
                                      "description": suggestion["actions"][0]["description"]}]
    assert "links" not in card


@pytest.mark.parametrize("pid", ["ldn-tramadol-5-days", "ldn-dispense-only-hydrocodone"])
def test_ldn_ordered_inside_the_washout_names_the_opioid_and_the_earliest_safe_date(client, ehr, pid):
    [card] = sign_cards(client, ehr, pid, [ldn_draft(pid)])
    assert card["indicator"] == "critical"
    assert f"not before {EXPECTED[pid]['earliest_start_date']}" in card["summary"]
    drug = "tramadol" if "tramadol" in pid else "hydrocodone"
    assert drug in card["summary"].lower() and card["suggestions"][0]["actions"][0]["type"] == "delete"


def test_any_naltrexone_product_counts_including_naltrexone_bupropion(client, ehr):
    pid = "ldn-oxycodone-active"
    contrave = med_order("draft-contrave", pid, "1551468", "12 HR bupropion hydrochloride 90 MG / naltrexone "
                         "hydrochloride 8 MG Extended Release Oral Tablet")
    [card] = sign_cards(client, ehr, pid, [contrave])
    assert card["indicator"] == "critical"
    assert card["suggestions"][0]["actions"][0]["resourceId"] == "MedicationRequest/draft-contrave"


def test_ldn_with_an_oxycodone_draft_in_the_same_session_is_critical(client, ehr):
    pid = "ldn-fibromyalgia"
    cards = sign_cards(client, ehr, pid, [ldn_draft(pid), oxycodone_draft(pid)])
    assert [c["indicator"] for c in cards] == ["critical"]
    assert "oxycodone" in cards[0]["summary"].lower()


def test_ldn_for_a_patient_whose_opioid_status_is_unknown_gets_a_warning_saying_what_was_unreadable(client, ehr):
    pid = "ldn-opioid-status-unknown"
    [card] = sign_cards(client, ehr, pid, [ldn_draft(pid)])
    assert_card_shape(card)
    assert card["indicator"] == "warning" and "cannot be ruled out" in card["summary"]
    assert card["extension"]["org.ldn-app.decision"] == "cannot-determine"
    assert "status" in card["detail"] and "Cannot determine" in card["detail"]
    assert card["links"][0]["type"] == "smart"


def test_ldn_for_an_eligible_patient_gets_an_info_card_that_opens_the_app(client, ehr):
    pid = "ldn-fibromyalgia"
    [card] = sign_cards(client, ehr, pid, [ldn_draft(pid)])
    assert_card_shape(card)
    assert card["indicator"] == "info" and "no opioid exposure" in card["summary"]
    assert card["links"] == [{"label": card["links"][0]["label"], "url": APP_BASE + "/launch", "type": "smart"}]
    assert "Fibromyalgia" in card["detail"] or "fibromyalgia" in card["detail"]
    assert "suggestions" not in card


def test_ldn_for_a_patient_already_on_naltrexone_50_is_critical_as_a_duplicate(client, ehr):
    pid = "ldn-naltrexone-50"
    [card] = sign_cards(client, ehr, pid, [ldn_draft(pid)])
    assert card["indicator"] == "critical" and card["extension"]["org.ldn-app.rules"] == ["R5"]
    assert "Already on naltrexone" in card["summary"]


def test_ldn_for_crohns_alone_warns_that_it_is_recommended_against(client, ehr):
    pid = "ldn-crohns-alone"
    [card] = sign_cards(client, ehr, pid, [ldn_draft(pid)])
    assert card["indicator"] == "warning" and "R4" in card["extension"]["org.ldn-app.rules"]


def test_order_select_decides_only_on_the_newly_selected_orders(client, ehr):
    pid = "ldn-oxycodone-active"
    body = hook_body("order-select", pid, [ldn_draft(pid)], prefetch_for(sample_resources(pid)))
    body["context"]["selections"] = ["MedicationRequest/something-else"]
    assert call(client, ehr, SELECT, body).json == {"cards": []}
    body["context"]["selections"] = ["MedicationRequest/draft-ldn"]
    [card] = call(client, ehr, SELECT, body).json["cards"]
    assert card["indicator"] == "critical"


# --- an opioid ordered for a patient on LDN: R5 hold --------------------------------------------

def ldn_patient_resources() -> list[dict]:
    """ldn-fibromyalgia with the app's own active LDN order (the published example) in the record."""
    order = json.loads((ROOT / "fhir_profiles/examples/MedicationRequest-ldn-example.json").read_text())
    return [*sample_resources("ldn-fibromyalgia"), {**order, "id": "ldn-order-1"}]


def test_oxycodone_ordered_for_a_patient_on_ldn_warns_to_hold_ldn_with_a_link_to_the_plan(client, ehr):
    pid = "ldn-fibromyalgia"
    [card] = sign_cards(client, ehr, pid, [oxycodone_draft(pid)], ldn_patient_resources())
    assert_card_shape(card)
    assert card["indicator"] == "warning"
    assert "blocks oxycodone" in card["summary"] and "hold" in card["summary"]
    assert card["extension"]["org.ldn-app.rules"] == ["R2", "R5"]
    assert "MedicationRequest/ldn-order-1" in card["detail"] and "Hold LDN 2-3 days" in card["detail"]
    assert card["links"][0]["type"] == "smart" and card["links"][0]["url"] == APP_BASE + "/launch"


def test_oxycodone_for_a_patient_on_naltrexone_50_warns_too(client, ehr):
    pid = "ldn-naltrexone-50"
    [card] = sign_cards(client, ehr, pid, [oxycodone_draft(pid)])
    assert card["indicator"] == "warning" and "naltrexone" in card["summary"].lower()


# --- no card when nothing applies ---------------------------------------------------------------

def test_oxycodone_for_a_patient_not_on_naltrexone_gets_no_card(client, ehr):
    pid = "ldn-fibromyalgia"
    assert sign_cards(client, ehr, pid, [oxycodone_draft(pid)]) == []


def test_an_unrelated_order_gets_no_card_and_reads_nothing(client, ehr, rsps):
    pid = "ldn-oxycodone-active"
    amoxicillin = med_order("draft-amox", pid, "617993", "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 "
                            "MG/ML Oral Suspension")
    body = hook_body("order-sign", pid, [amoxicillin], fhirServer=FHIR,
                     fhirAuthorization={"access_token": "t", "token_type": "Bearer", "expires_in": 300,
                                        "scope": "patient/*.rs", "subject": "ldn-cds"})
    assert call(client, ehr, SIGN, body).json == {"cards": []}
    assert len(rsps.calls) == 0


# --- without prefetch: reads through the gateway -------------------------------------------------

def record_server(rsps, resources: list[dict]) -> None:
    """A FHIR server (recorded HTTP) holding one patient's resources; every search is expected once."""
    pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    rsps.get(f"{FHIR}/metadata", json={"resourceType": "CapabilityStatement", "status": "active",
                                        "rest": [{"mode": "server"}]})
    rsps.get(f"{FHIR}/Patient/{pid}", json=resources[0])
    for rtype in ("Condition", "MedicationRequest", "MedicationStatement", "MedicationDispense"):
        rsps.get(f"{FHIR}/{rtype}", json=searchset([r for r in resources if r["resourceType"] == rtype]))


def fhir_access(token: str = "access-token-for-cds") -> dict:
    return {"fhirServer": FHIR, "fhirAuthorization": {"access_token": token, "token_type": "Bearer",
                                                      "expires_in": 300, "scope": "patient/*.rs",
                                                      "subject": "ldn-cds"}}


def test_without_prefetch_the_record_is_read_through_the_fhir_server_with_the_ehr_token(client, ehr, rsps):
    pid = "ldn-tramadol-5-days"
    record_server(rsps, sample_resources(pid))
    response = call(client, ehr, SIGN, hook_body("order-sign", pid, [ldn_draft(pid)], **fhir_access()))
    [card] = response.json["cards"]
    assert card["indicator"] == "critical"
    assert f"not before {EXPECTED[pid]['earliest_start_date']}" in card["summary"]
    assert all(c.request.headers["Authorization"] == "Bearer access-token-for-cds" for c in rsps.calls)
    searched = {c.request.url.split("?")[0].rsplit("/", 1)[-1] for c in rsps.calls}
    assert {"Condition", "MedicationRequest", "MedicationStatement", "MedicationDispense"} <= searched


def test_partial_prefetch_reads_the_whole_record_through_the_fhir_server(client, ehr, rsps):
    pid = "ldn-fibromyalgia"
    resources = ldn_patient_resources()
    record_server(rsps, resources)
    prefetch = prefetch_for(resources)
    del prefetch["medicationRequests"]  # the EHR could not satisfy this key
    body = hook_body("order-sign", pid, [oxycodone_draft(pid)], prefetch, **fhir_access())
    [card] = call(client, ehr, SIGN, body).json["cards"]
    assert card["indicator"] == "warning" and "MedicationRequest/ldn-order-1" in card["detail"]


def test_a_fhir_server_off_the_allowlist_is_never_read_and_the_card_says_so(client, ehr, rsps):
    pid = "ldn-fibromyalgia"
    body = hook_body("order-sign", pid, [ldn_draft(pid)], **fhir_access())
    body["fhirServer"] = "https://evil.example.net/fhir"
    [card] = call(client, ehr, SIGN, body).json["cards"]
    assert len(rsps.calls) == 0
    assert card["indicator"] == "warning" and "allowlist" in card["detail"]


def test_no_prefetch_and_no_fhir_access_is_a_warning_never_an_info_card(client, ehr):
    pid = "ldn-fibromyalgia"
    [card] = call(client, ehr, SIGN, hook_body("order-sign", pid, [ldn_draft(pid)])).json["cards"]
    assert card["indicator"] == "warning" and "no usable prefetch" in card["detail"]


def test_an_unreadable_fhir_server_makes_the_opioid_card_a_cannot_check_warning(client, ehr, rsps):
    pid = "ldn-fibromyalgia"
    rsps.get(f"{FHIR}/metadata", status=503)
    [card] = call(client, ehr, SIGN, hook_body("order-sign", pid, [oxycodone_draft(pid)], **fhir_access())).json[
        "cards"]
    assert card["indicator"] == "warning" and "Could not check" in card["summary"]


def test_a_prefetch_with_a_next_page_is_not_trusted_as_complete(client, ehr):
    pid = "ldn-oxycodone-active"
    prefetch = prefetch_for(sample_resources(pid))
    prefetch["medicationRequests"]["link"] = [{"relation": "next", "url": f"{FHIR}/MedicationRequest?page=2"}]
    [card] = call(client, ehr, SIGN, hook_body("order-sign", pid, [ldn_draft(pid)], prefetch)).json["cards"]
    assert card["indicator"] == "warning" and "medicationRequests" in card["detail"]


# --- trust: 401 and nothing read -----------------------------------------------------------------

def refused(client, path, body, headers, rsps) -> None:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(rsps.calls) == 0


def readable_body(pid: str = "ldn-fibromyalgia") -> dict:
    return hook_body("order-sign", pid, [ldn_draft(pid)], **fhir_access())


def test_a_call_without_a_token_is_refused(client, rsps):
    refused(client, SIGN, readable_body(), {}, rsps)


def test_a_token_from_an_unknown_issuer_is_refused(client, ehr, rsps):
    refused(client, SIGN, readable_body(), ehr.headers(SIGN, iss="https://other-ehr.example.org"), rsps)


def test_a_token_signed_with_another_key_is_refused(client, ehr, rsps):
    stranger = TestEhr()
    refused(client, SIGN, readable_body(), {"Authorization": "Bearer " + ehr.token(APP_BASE + SIGN,
                                                                                    key=stranger.key)}, rsps)


def test_a_token_for_another_endpoint_is_refused(client, ehr, rsps):
    refused(client, SIGN, readable_body(), ehr.headers(SELECT), rsps)


def test_an_expired_token_is_refused(client, ehr, rsps):
    now = int(time.time())
    refused(client, SIGN, readable_body(), ehr.headers(SIGN, iat=now - 600, exp=now - 120), rsps)


def test_a_replayed_token_is_refused(client, ehr, rsps):
    pid = "ldn-fibromyalgia"
    headers = ehr.headers(SIGN)
    body = hook_body("order-sign", pid, [ldn_draft(pid)], prefetch_for(sample_resources(pid)))
    assert client.post(SIGN, json=body, headers=headers).status_code == 200
    refused(client, SIGN, readable_body(), headers, rsps)


def test_a_token_without_exp_or_jti_is_refused(client, ehr, rsps):
    import jwt as pyjwt

    claims = {"iss": EHR_ISS, "aud": APP_BASE + SIGN, "iat": int(time.time())}
    token = pyjwt.encode(claims, ehr.key, algorithm="ES384", headers={"kid": ehr.kid})
    refused(client, SIGN, readable_body(), {"Authorization": f"Bearer {token}"}, rsps)


def test_an_hmac_signed_token_is_refused(client, ehr, rsps):
    import jwt as pyjwt

    claims = {"iss": EHR_ISS, "aud": APP_BASE + SIGN, "iat": int(time.time()), "exp": int(time.time()) + 60,
              "jti": "x"}
    token = pyjwt.encode(claims, "shared-secret-shared-secret-shared", algorithm="HS256",
                         headers={"kid": ehr.kid})
    refused(client, SIGN, readable_body(), {"Authorization": f"Bearer {token}"}, rsps)


def test_a_malformed_call_gets_400_naming_the_problem(client, ehr):
    response = call(client, ehr, SIGN, {"hook": "order-sign", "context": {"patientId": "../x"}})
    assert response.status_code == 400
    assert "patientId" in response.json["error_description"] and "draftOrders" in response.json["error_description"]


def test_an_unknown_service_is_404(client, ehr):
    assert call(client, ehr, "/cds-services/nope", {}).status_code == 404


# --- feedback ------------------------------------------------------------------------------------

def test_feedback_records_accepted_and_overridden_cards_without_free_text(app, client, ehr):
    path = SIGN + "/feedback"
    body = {"feedback": [
        {"card": "card-1", "outcome": "accepted", "acceptedSuggestions": [{"id": "sugg-1"}],
         "outcomeTimestamp": "2026-01-15T10:00:00Z"},
        {"card": "card-2", "outcome": "overridden", "outcomeTimestamp": "2026-01-15T10:01:00Z",
         "overrideReason": {"reason": {"system": "x", "code": "opioid-stopped"},
                            "userComment": "Mrs Jones says she stopped last week"}}]}
    assert call(client, ehr, path, body).status_code == 200
    recorded = list(app.extensions["cds.feedback"])
    assert [(r["card"], r["outcome"]) for r in recorded] == [("card-1", "accepted"), ("card-2", "overridden")]
    assert recorded[0]["accepted_suggestions"] == ["sugg-1"] and recorded[1]["override_reason"] == "opioid-stopped"
    assert "Jones" not in json.dumps(recorded)


def test_feedback_with_an_unknown_outcome_is_rejected_and_nothing_is_recorded(app, client, ehr):
    body = {"feedback": [{"card": "c", "outcome": "accepted"}, {"card": "d", "outcome": "maybe"}]}
    assert call(client, ehr, SIGN + "/feedback", body).status_code == 400
    assert not app.extensions["cds.feedback"]


def test_feedback_needs_the_ehr_token_too(app, client):
    body = {"feedback": [{"card": "c", "outcome": "accepted"}]}
    assert client.post(SIGN + "/feedback", json=body).status_code == 401
    assert not app.extensions["cds.feedback"]


def test_a_malformed_cds_clients_setting_stops_the_app_at_start_up():
    with pytest.raises(ValueError, match="CDS_CLIENTS"):
        create_app({"CDS_CLIENTS": "https://ehr.example.org"})


# --- replay across instances (SESSION_STORE=redis://) ----------------------------------------------

def redis_app(jwks_url, redis_url):
    return create_app({"ALLOWED_ISSUERS": FHIR, "PUBLIC_BASE_URL": APP_BASE, "CDS_CLIENTS": f"{EHR_ISS}|{jwks_url}",
                       "TODAY": SAMPLE_AS_OF.isoformat(), "SESSION_STORE": redis_url, "SESSION_STORE_TIMEOUT": 1})


def test_a_token_used_on_one_instance_is_refused_on_another_sharing_redis(jwks_url, ehr, redis_server):
    first, second = (redis_app(jwks_url, redis_server.url).test_client() for _ in range(2))
    pid = "ldn-fibromyalgia"
    body = hook_body("order-sign", pid, [ldn_draft(pid)], prefetch_for(sample_resources(pid)))
    headers = ehr.headers(SIGN)
    assert first.post(SIGN, json=body, headers=headers).status_code == 200
    assert second.post(SIGN, json=body, headers=headers).status_code == 401
    assert second.post(SIGN, json=body, headers=ehr.headers(SIGN)).status_code == 200


def test_with_redis_down_a_call_is_refused_with_503_and_nothing_is_read(jwks_url, ehr, own_redis, rsps):
    client = redis_app(jwks_url, own_redis.url).test_client()
    own_redis.stop()
    response = client.post(SIGN, json=readable_body(), headers=ehr.headers(SIGN))
    assert response.status_code == 503 and "replay store" in response.json["error_description"]
    assert len(rsps.calls) == 0
