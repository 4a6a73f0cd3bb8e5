"""The sandbox EHR: SMART discovery, /authorize, /token and the authorizing FHIR proxy."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric import ec

from smart_app.fhir.load import load_bundles
from smart_app.sandbox.ehr import Context, ProxyError, create_sandbox_app, required_permissions, scope_permits

PATIENT = "ldn-fibromyalgia"
ORDER_SYSTEM = "https://fhir.ldn-app.org/identifier/ldn-order"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# ---------------------------------------------------------------- helpers


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def authorize_params(sandbox, challenge: str, client_id: str = "ldn-app", **overrides) -> dict:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": sandbox.redirect_uri,
              "scope": "launch openid fhirUser online_access patient/*.rs patient/*.cruds", "state": "st-1",
              "aud": sandbox.iss, "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def ehr_launch(web, patient: str = PATIENT) -> str:
    response = web.post("/launch", data={"patient": patient, "need_patient_banner": "false"})
    assert response.status_code == 303
    return query_of(response.headers["Location"])["launch"]


def authorization_code(sandbox, web, client_id: str = "ldn-app", scope: str | None = None) -> tuple[str, str]:
    verifier, challenge = pkce()
    overrides = {"launch": ehr_launch(web)} | ({"scope": scope} if scope else {})
    params = authorize_params(sandbox, challenge, client_id, **overrides)
    response = web.get("/authorize", query_string=params)
    assert response.status_code == 302, response.text
    return query_of(response.headers["Location"])["code"], verifier


def exchange(sandbox, web, code: str, verifier: str, client_id: str = "ldn-app", headers: dict | None = None):
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": sandbox.redirect_uri, "client_id": client_id}
    return web.post("/token", data=form, headers=headers or {})


def access_token(sandbox, web, client_id: str = "ldn-app", scope: str | None = None) -> dict:
    code, verifier = authorization_code(sandbox, web, client_id, scope)
    response = exchange(sandbox, web, code, verifier, client_id)
    assert response.status_code == 200, response.json
    return response.json


def bearer(token: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}"}


def transaction(*entries: dict) -> str:
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": list(entries)})


def new_order(key: str) -> dict:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                         "identifier": [{"system": ORDER_SYSTEM, "value": key}],
                         "subject": {"reference": f"Patient/{PATIENT}"},
                         "medicationCodeableConcept": {"text": "naltrexone 1.5 mg capsule"}},
            "request": {"method": "POST", "url": "MedicationRequest"}}


@pytest.fixture
def web(sandbox):
    return sandbox.ehr_app.test_client()


# ---------------------------------------------------------------- scopes (pure)


@pytest.mark.parametrize(("scopes", "rtype", "permission", "allowed"), [
    (["patient/*.read"], "Condition", "rs", True),
    (["patient/*.read"], "CarePlan", "c", False),
    (["patient/*.write"], "CarePlan", "c", True),
    (["patient/Condition.rs"], "Condition", "s", True),
    (["patient/Condition.rs"], "MedicationRequest", "r", False),
    (["patient/MedicationRequest.c"], "MedicationRequest", "c", True),
    (["patient/MedicationRequest.c"], "MedicationRequest", "u", False),
    (["patient/*.cruds"], "Provenance", "c", True),
    (["user/*.*"], "Practitioner", "r", True),
    (["patient/Observation.rs?category=laboratory"], "Observation", "r", False),
    (["patient/Condition.sr"], "Condition", "r", False),  # v2 letters out of order: not a valid scope
    (["openid", "launch"], "Patient", "r", False),
])
def test_scopes_permit_v1_and_v2_forms_with_wildcards(scopes, rtype, permission, allowed):
    assert scope_permits(scopes, rtype, permission) is allowed


def test_a_transaction_needs_the_matching_permission_for_every_entry():
    body = transaction(new_order("k"), {"request": {"method": "PUT", "url": "CarePlan/1"}},
                       {"request": {"method": "GET", "url": "Patient?name=x"}})

    assert required_permissions("POST", "", body.encode()) == [
        ("MedicationRequest", "c"), ("CarePlan", "u"), ("Patient", "s")]


# ---------------------------------------------------------------- discovery and launch page


@pytest.mark.live
def test_discovery_document_advertises_endpoints_pkce_s256_and_capabilities(sandbox, web):
    config = web.get("/fhir/.well-known/smart-configuration").json

    assert config["issuer"] == sandbox.iss
    assert config["authorization_endpoint"] == f"{sandbox.ehr_url}/authorize"
    assert config["token_endpoint"] == f"{sandbox.ehr_url}/token"
    assert config["jwks_uri"] == f"{sandbox.ehr_url}/jwks"
    assert config["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert config["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "private_key_jwt"]
    assert config["response_types_supported"] == ["code"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-ehr", "launch-standalone", "client-public", "context-ehr-patient", "context-banner",
            "sso-openid-connect", "permission-v1", "permission-v2"} <= set(config["capabilities"])
    assert "permission-offline" not in config["capabilities"]


@pytest.mark.live
def test_metadata_is_the_upstream_capability_statement_with_smart_oauth_uris(sandbox, web):
    response = web.get("/fhir/metadata")

    security = response.json["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert response.json["resourceType"] == "CapabilityStatement"
    assert uris == {"authorize": f"{sandbox.ehr_url}/authorize", "token": f"{sandbox.ehr_url}/token"}
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


@pytest.mark.live
def test_launch_page_lists_the_patients_with_an_ehr_launch_each_and_a_standalone_launch(sandbox, web):
    page = web.get("/").get_data(as_text=True)

    assert PATIENT in page
    assert page.count(">EHR launch</button>") >= 30
    assert f'href="{sandbox.launch_url}?iss={sandbox.iss.replace(":", "%3A").replace("/", "%2F")}"' in page


@pytest.mark.live
def test_launch_page_escapes_patient_names_and_labels_each_launch_button(sandbox, web):
    patient = {"resourceType": "Patient", "id": "ehr-escaping", "name": [{"text": "<script>alert(1)</script>"}]}
    load_bundles(sandbox.fhir_upstream, {"patient": {"resourceType": "Bundle", "type": "collection",
                                                     "entry": [{"resource": patient}]}})

    page = web.get("/").get_data(as_text=True)

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'aria-label="EHR launch for &lt;script&gt;alert(1)&lt;/script&gt; (ehr-escaping)"' in page


@pytest.mark.live
def test_ehr_launch_button_sends_the_browser_to_the_app_with_iss_and_a_launch_id(sandbox, web):
    response = web.post("/launch", data={"patient": PATIENT})

    assert response.headers["Location"].startswith(f"{sandbox.launch_url}?")
    assert query_of(response.headers["Location"])["iss"] == sandbox.iss
    assert query_of(response.headers["Location"])["launch"]


@pytest.mark.live
def test_ehr_launch_for_an_unknown_patient_is_refused(web):
    assert web.post("/launch", data={"patient": "no-such-patient"}).status_code == 404


# ---------------------------------------------------------------- authorize


@pytest.mark.live
def test_authorize_shows_an_error_page_instead_of_redirecting_to_an_unregistered_redirect_uri(sandbox, web):
    _, challenge = pkce()

    response = web.get("/authorize", query_string=authorize_params(
        sandbox, challenge, redirect_uri="https://attacker.example/callback"))

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "redirect_uri is not registered" in response.get_data(as_text=True)


@pytest.mark.live
def test_authorize_shows_an_error_page_for_an_unknown_client(sandbox, web):
    _, challenge = pkce()

    response = web.get("/authorize", query_string=authorize_params(sandbox, challenge, client_id="stranger"))

    assert response.status_code == 400
    assert "Unknown client_id" in response.get_data(as_text=True)


@pytest.mark.live
@pytest.mark.parametrize(("overrides", "error", "description"), [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request", "PKCE is required"),
    ({"code_challenge_method": "plain"}, "invalid_request", "must be S256"),
    ({"aud": "https://other-ehr.example/fhir"}, "invalid_request", "aud must be"),
    ({"launch": "not-a-launch"}, "invalid_request", "unknown or expired launch"),
    ({"response_type": "token"}, "unsupported_response_type", "must be code"),
    ({"scope": "system/*.read"}, "invalid_scope", "none of the requested scopes"),
])
def test_authorize_refusals_redirect_back_with_the_error_and_state(sandbox, web, overrides, error,
                                                                   description):
    _, challenge = pkce()

    response = web.get("/authorize", query_string=authorize_params(sandbox, challenge, **overrides))

    assert response.status_code == 302
    assert response.headers["Location"].startswith(sandbox.redirect_uri + "?")
    answer = query_of(response.headers["Location"])
    assert (answer["error"], answer["state"]) == (error, "st-1")
    assert description in answer["error_description"]
    assert "code" not in answer


@pytest.mark.live
def test_standalone_launch_asks_for_a_patient_then_issues_a_code_for_that_patient(sandbox, web):
    verifier, challenge = pkce()
    params = authorize_params(sandbox, challenge, scope="launch/patient openid fhirUser patient/*.rs")

    picker = web.get("/authorize", query_string=params)
    chosen = web.post("/authorize", data=params | {"patient": "ldn-crps"})
    token = exchange(sandbox, web, query_of(chosen.headers["Location"])["code"], verifier).json

    assert picker.status_code == 200
    assert 'name="patient" value="ldn-crps"' in picker.get_data(as_text=True)
    assert (token["patient"], token["need_patient_banner"]) == ("ldn-crps", True)
    assert "refresh_token" not in token  # neither online_access nor offline_access was asked for


# ---------------------------------------------------------------- token


@pytest.mark.live
def test_ehr_launch_token_carries_patient_banner_scopes_refresh_token_and_a_verifiable_id_token(sandbox, web):
    token = access_token(sandbox, web)

    keys = web.get("/jwks").json["keys"]
    claims = jwt.decode(token["id_token"], jwt.PyJWK(keys[0]).key, algorithms=["RS256"], audience="ldn-app",
                        issuer=sandbox.iss)
    assert (token["token_type"], token["expires_in"], token["patient"]) == ("Bearer", 300, PATIENT)
    assert token["need_patient_banner"] is False
    assert set(token["scope"].split()) == {"launch", "openid", "fhirUser", "online_access", "patient/*.rs",
                                           "patient/*.cruds"}
    assert token["refresh_token"]
    assert claims["fhirUser"] == f"{sandbox.iss}/Practitioner/sandbox-clinician"
    assert (keys[0]["alg"], keys[0]["kid"]) == ("RS256", jwt.get_unverified_header(token["id_token"])["kid"])
    assert "fhirUser" not in token


@pytest.mark.live
def test_token_rejects_a_wrong_code_verifier(sandbox, web):
    code, _ = authorization_code(sandbox, web)

    response = exchange(sandbox, web, code, pkce()[0])

    assert (response.status_code, response.json["error"]) == (400, "invalid_grant")


@pytest.mark.live
def test_a_reused_code_is_rejected_and_the_tokens_it_produced_stop_working(sandbox, web):
    code, verifier = authorization_code(sandbox, web)
    first = exchange(sandbox, web, code, verifier)

    second = exchange(sandbox, web, code, verifier)

    assert first.status_code == 200
    assert (second.status_code, second.json["error"]) == (400, "invalid_grant")
    assert web.get(f"/fhir/Patient/{PATIENT}", headers=bearer(first.json)).status_code == 401


@pytest.mark.live
def test_refresh_gives_a_new_access_token_with_the_same_scopes_and_patient(sandbox, web):
    token = access_token(sandbox, web)

    refreshed = web.post("/token", data={"grant_type": "refresh_token", "client_id": "ldn-app",
                                         "refresh_token": token["refresh_token"]}).json

    assert refreshed["access_token"] != token["access_token"]
    assert (refreshed["scope"], refreshed["patient"]) == (token["scope"], token["patient"])
    assert web.get(f"/fhir/Patient/{PATIENT}", headers=bearer(refreshed)).status_code == 200


@pytest.mark.live
def test_a_refresh_token_of_another_client_is_refused(sandbox, web):
    token = access_token(sandbox, web)

    response = web.post("/token", data={"grant_type": "refresh_token", "client_id": "ldn-app-readonly",
                                        "refresh_token": token["refresh_token"]})

    assert (response.status_code, response.json["error"]) == (400, "invalid_grant")


@pytest.mark.live
def test_read_only_client_is_granted_only_its_read_scopes(sandbox, web):
    token = access_token(sandbox, web, "ldn-app-readonly")

    assert "patient/*.rs" in token["scope"].split()
    assert "patient/*.cruds" not in token["scope"].split()


@pytest.mark.live
def test_confidential_client_must_authenticate_with_its_secret(sandbox, web):
    secret = sandbox.client("ldn-app-confidential")["client_secret"]
    code, verifier = authorization_code(sandbox, web, "ldn-app-confidential")
    good = {"Authorization": "Basic " + base64.b64encode(f"ldn-app-confidential:{secret}".encode()).decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ldn-app-confidential:wrong").decode()}

    as_public = exchange(sandbox, web, code, verifier, "ldn-app-confidential")
    wrong_secret = exchange(sandbox, web, code, verifier, "ldn-app-confidential", headers=bad)
    right_secret = exchange(sandbox, web, code, verifier, "ldn-app-confidential", headers=good)

    assert (as_public.status_code, as_public.json["error"]) == (401, "invalid_client")
    assert (wrong_secret.status_code, wrong_secret.json["error"]) == (401, "invalid_client")
    assert right_secret.status_code == 200
    assert right_secret.headers["Cache-Control"] == "no-store"


# ---------------------------------------------------------------- proxy (live sekmet behind it)


@pytest.mark.live
def test_proxy_answers_401_with_an_operation_outcome_without_a_token(web):
    response = web.get(f"/fhir/Patient/{PATIENT}")

    assert response.status_code == 401
    assert response.json["resourceType"] == "OperationOutcome"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.live
def test_proxy_answers_401_for_an_unknown_token(web):
    response = web.get(f"/fhir/Patient/{PATIENT}", headers={"Authorization": "Bearer made-up"})

    assert (response.status_code, response.json["issue"][0]["code"]) == (401, "login")


@pytest.mark.live
def test_proxy_answers_403_for_a_write_without_write_scope(sandbox, web):
    token = access_token(sandbox, web, "ldn-app-readonly")

    write = web.post("/fhir", data=transaction(new_order(str(uuid.uuid4()))), headers=bearer(token),
                     content_type="application/fhir+json")
    read = web.get(f"/fhir/Patient/{PATIENT}", headers=bearer(token))

    assert (write.status_code, write.json["resourceType"]) == (403, "OperationOutcome")
    assert read.status_code == 200


@pytest.mark.live
def test_a_transaction_needs_write_scope_for_each_entry_type(sandbox, web):
    token = access_token(sandbox, web, scope="launch patient/*.rs patient/MedicationRequest.c")
    plan = {"resource": {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                         "subject": {"reference": f"Patient/{PATIENT}"}},
            "request": {"method": "POST", "url": "CarePlan"}}

    response = web.post("/fhir", data=transaction(new_order(str(uuid.uuid4())), plan), headers=bearer(token),
                        content_type="application/fhir+json")

    assert response.status_code == 403
    assert "CarePlan" in response.json["issue"][0]["diagnostics"]


@pytest.mark.live
def test_a_transaction_through_the_proxy_lands_in_sekmet(sandbox, web):
    key = str(uuid.uuid4())
    token = access_token(sandbox, web)

    response = web.post("/fhir", data=transaction(new_order(key)), headers=bearer(token),
                        content_type="application/fhir+json")

    assert response.status_code == 200, response.json
    assert response.json["entry"][0]["response"]["location"].startswith(f"{sandbox.iss}/MedicationRequest/")
    stored = requests.get(f"{sandbox.fhir_upstream}/MedicationRequest", timeout=10,
                          params={"identifier": f"https://fhir.ldn-app.org/identifier/ldn-order|{key}"}).json()
    assert stored["total"] == 1


@pytest.mark.live
def test_create_through_the_proxy_passes_status_location_and_etag(sandbox, web):
    token = access_token(sandbox, web)

    response = web.post("/fhir/MedicationRequest", data=json.dumps(new_order(str(uuid.uuid4()))["resource"]),
                        headers=bearer(token), content_type="application/fhir+json")

    assert response.status_code == 201
    assert response.headers["Location"].startswith(f"{sandbox.iss}/MedicationRequest/")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Content-Type"].startswith("application/fhir+json")


@pytest.mark.live
def test_search_next_links_point_at_the_proxy_and_can_be_followed_with_the_token(sandbox, web):
    token = access_token(sandbox, web)
    url = "/fhir/MedicationRequest?patient=ldn-diabetic-neuropathy&_count=2"
    seen = []

    while url:
        bundle = web.get(url, headers=bearer(token)).json
        seen += [e["fullUrl"] for e in bundle["entry"]]
        link = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
        assert link is None or link.startswith(f"{sandbox.iss}/MedicationRequest?")
        url = link and link[len(sandbox.ehr_url):]

    assert len(seen) == 3
    assert all(full_url.startswith(f"{sandbox.iss}/MedicationRequest/") for full_url in seen)


# ---------------------------------------------------------------- without sekmet: fake clock, responses


UPSTREAM = "http://upstream.test/fhir"
EHR = "http://ehr.test"


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def standalone_ehr(clients: list[dict], clock: Clock | None = None):
    return create_sandbox_app(UPSTREAM, EHR, clients, "http://app.test/launch", clock=clock or Clock())


def granted_token(app, scopes: str, patient: str = PATIENT) -> str:
    context = Context("ldn-app", tuple(scopes.split()), patient, True)
    token, _ = app.config["SANDBOX_STATE"].issue(context, 300, refresh=False)
    return token


def test_an_expired_access_token_gets_401():
    clock = Clock()
    app = standalone_ehr([], clock)
    token = granted_token(app, "patient/*.rs")

    clock.now += 301
    response = app.test_client().get("/fhir/Patient/x", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401


@responses.activate
def test_proxy_forwards_query_and_body_but_never_the_authorization_header():
    app = standalone_ehr([])
    token = granted_token(app, "patient/*.cruds")
    responses.post(f"{UPSTREAM}/MedicationRequest?_format=json", status=201, json={"resourceType": "X"},
                   headers={"Location": f"{EHR}/fhir/MedicationRequest/1/_history/1", "ETag": 'W/"1"'},
                   match=[responses.matchers.json_params_matcher({"resourceType": "MedicationRequest"})])

    response = app.test_client().post("/fhir/MedicationRequest?_format=json",
                                      data='{"resourceType": "MedicationRequest"}',
                                      headers={"Authorization": f"Bearer {token}",
                                               "Prefer": "return=minimal"},
                                      content_type="application/fhir+json")

    sent = responses.calls[0].request
    assert response.status_code == 201
    assert (response.headers["Location"], response.headers["ETag"]) == (
        f"{EHR}/fhir/MedicationRequest/1/_history/1", 'W/"1"')
    assert "Authorization" not in sent.headers
    assert sent.headers["Prefer"] == "return=minimal"


@responses.activate
def test_links_of_a_server_we_did_not_start_are_rewritten_to_the_proxy_both_ways():
    app = standalone_ehr([])
    token = granted_token(app, "patient/*.cruds")
    page = {"resourceType": "Bundle", "type": "searchset",
            "link": [{"relation": "next", "url": f"{UPSTREAM}?_getpages=abc&_getpagesoffset=20"}],
            "entry": [{"fullUrl": f"{UPSTREAM}/Condition/1", "resource": {"resourceType": "Condition", "id": "1"}}]}
    responses.get(f"{UPSTREAM}/Condition?patient=x", json=page)
    responses.get(f"{UPSTREAM}?_getpages=abc&_getpagesoffset=20", json={"resourceType": "Bundle"})
    responses.post(f"{UPSTREAM}/CarePlan", status=201, json={"resourceType": "CarePlan"},
                   headers={"Location": f"{UPSTREAM}/CarePlan/7/_history/1"},
                   match=[responses.matchers.json_params_matcher(
                       {"resourceType": "CarePlan", "author": {"reference": f"{UPSTREAM}/Practitioner/p"}})])
    client, auth = app.test_client(), {"Authorization": f"Bearer {token}"}

    first = client.get("/fhir/Condition?patient=x", headers=auth).json
    following = client.get(first["link"][0]["url"][len(EHR):], headers=auth)
    created = client.post("/fhir/CarePlan", headers=auth, content_type="application/fhir+json",
                          data=json.dumps({"resourceType": "CarePlan",
                                           "author": {"reference": f"{EHR}/fhir/Practitioner/p"}}))

    assert first["link"][0]["url"] == f"{EHR}/fhir?_getpages=abc&_getpagesoffset=20"
    assert first["entry"][0]["fullUrl"] == f"{EHR}/fhir/Condition/1"
    assert following.status_code == 200
    assert created.headers["Location"] == f"{EHR}/fhir/CarePlan/7/_history/1"


def test_hapi_paging_at_the_base_needs_search_permission_and_other_reads_there_are_refused():
    assert required_permissions("GET", "", b"", {"_getpages": "abc"}) == [("*", "s")]
    with pytest.raises(ProxyError):
        required_permissions("GET", "", b"", {"_count": "10"})


@responses.activate
def test_proxy_answers_504_when_the_upstream_times_out():
    app = standalone_ehr([])
    token = granted_token(app, "patient/*.rs")
    responses.get(f"{UPSTREAM}/Condition?patient=x", body=requests.Timeout())

    response = app.test_client().get("/fhir/Condition?patient=x",
                                     headers={"Authorization": f"Bearer {token}"})

    assert (response.status_code, response.json["issue"][0]["code"]) == (504, "timeout")


def private_key_jwt_client() -> tuple[dict, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "alg": "ES384"}
    client = {"client_id": "backend-ish", "redirect_uris": ["http://app.test/callback"],
              "auth": "private_key_jwt", "scopes": "openid fhirUser patient/*.rs", "jwks": {"keys": [jwk]}}
    return client, key


def test_private_key_jwt_client_authenticates_with_a_signed_assertion_used_once():
    client, key = private_key_jwt_client()
    clock = Clock()
    web = standalone_ehr([client], clock).test_client()
    assertion = jwt.encode({"iss": "backend-ish", "sub": "backend-ish", "aud": f"{EHR}/token", "jti": "j-1",
                            "exp": int(clock.now) + 120}, key, algorithm="ES384", headers={"kid": "k1"})

    def redeem():
        verifier, challenge = pkce()
        location = web.get("/authorize", query_string={
            "response_type": "code", "client_id": "backend-ish", "redirect_uri": "http://app.test/callback",
            "scope": "openid fhirUser patient/*.rs", "state": "s", "aud": f"{EHR}/fhir",
            "code_challenge": challenge, "code_challenge_method": "S256"}).headers["Location"]
        return web.post("/token", data={
            "grant_type": "authorization_code", "code": query_of(location)["code"], "code_verifier": verifier,
            "redirect_uri": "http://app.test/callback", "client_assertion": assertion,
            "client_assertion_type": ASSERTION_TYPE})

    first, replay = redeem(), redeem()

    assert first.status_code == 200, first.json
    id_token = jwt.decode(first.json["id_token"], options={"verify_signature": False})
    assert id_token["sub"] == "sandbox-clinician"
    assert (replay.status_code, replay.json["error"]) == (401, "invalid_client")
    assert "jti" in replay.json["error_description"]


def test_an_assertion_signed_with_another_key_is_refused():
    client, _ = private_key_jwt_client()
    impostor = ec.generate_private_key(ec.SECP384R1())
    web = standalone_ehr([client]).test_client()
    assertion = jwt.encode({"iss": "backend-ish", "sub": "backend-ish", "aud": f"{EHR}/token", "jti": "j-2",
                            "exp": int(time.time()) + 120}, impostor, algorithm="ES384",
                           headers={"kid": "k1"})

    response = web.post("/token", data={"grant_type": "authorization_code", "code": "x",
                                        "client_assertion": assertion,
                                        "client_assertion_type": ASSERTION_TYPE})

    assert (response.status_code, response.json["error"]) == (401, "invalid_client")
