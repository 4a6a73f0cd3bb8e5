"""SMART launch, callback, refresh, scopes and client authentication - with recorded HTTP."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from responses import matchers

from smart_app.config import Settings
from smart_app.errors import LaunchError, SessionExpired, TooManyLaunches
from smart_app.smart import oauth
from smart_app.smart.blueprint import bp, init_app
from smart_app.smart.launches import Launches
from smart_app.smart.scopes import (
    Permissions,
    granted_permissions,
    missing_read,
    missing_undo,
    missing_write,
    requested_scopes,
)
from smart_app.smart.store import COOKIE_NAME, MemoryStore, new_session_id

ISS = "https://ehr.example.org/fhir"
AUTHORIZE = "https://ehr.example.org/auth/authorize"
TOKEN = "https://ehr.example.org/auth/token"
JWKS_URI = "https://ehr.example.org/auth/jwks"
APP = "https://app.example.org"
CLIENT_ID = "ldn-app"
ACCESS_TOKEN = "at-SECRET-0123456789"
REFRESH_TOKEN = "rt-SECRET-9876543210"
TEMPLATES = Path(__file__).resolve().parents[1] / "smart_app" / "web" / "templates"
V2_SCOPES = "patient/Patient.rs patient/Condition.rs patient/MedicationRequest.rs patient/MedicationRequest.c"


@pytest.fixture(scope="module")
def idp_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def config():
    return Settings.from_env({}, {"ALLOWED_ISSUERS": f"{ISS}, https://other.example.org/r4", "PUBLIC_BASE_URL": APP,
                                  "CLIENT_ID": CLIENT_ID})


def smart_configuration(capabilities=("launch-ehr", "permission-v2", "sso-openid-connect"), **overrides):
    return {"issuer": ISS, "authorization_endpoint": AUTHORIZE, "token_endpoint": TOKEN, "jwks_uri": JWKS_URI,
            "capabilities": list(capabilities), "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"], **overrides}


def browser(store=None, config=None):
    """One browser's launches (a fresh owner id) in `store` (a fresh MemoryStore by default)."""
    return Launches(store if store is not None else MemoryStore(), new_session_id(), config or Settings())


def pending_of(session, query):
    return session.store.get("pending:" + query["state"])


def begin(rsps, config, session, http, *, launch="launch-123", capabilities=None):
    """Run begin_launch against a recorded smart-configuration; return the authorize query."""
    document = smart_configuration() if capabilities is None else smart_configuration(capabilities)
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=document)
    url = oauth.begin_launch(config, ISS, launch, session, http)
    assert url.startswith(AUTHORIZE + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def jwks_of(key, kid="idp-1"):
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    return {"keys": [{**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}]}


def id_token(key, *, alg="RS256", kid="idp-1", **claims):
    now = int(time.time())
    payload = {"iss": ISS, "aud": CLIENT_ID, "sub": "user-7", "fhirUser": "Practitioner/prac-1",
               "iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def token_response(**overrides):
    return {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600, "scope": V2_SCOPES,
            "patient": "ldn-fibro", "need_patient_banner": False, **overrides}


# --- scopes ------------------------------------------------------------------------------

def test_v2_scopes_are_requested_when_the_server_advertises_permission_v2():
    scope = requested_scopes(["launch-ehr", "permission-v2"], "ehr").split()
    assert scope[:4] == ["launch", "openid", "fhirUser", "online_access"]
    assert "patient/Condition.rs" in scope and "patient/MedicationRequest.cud" in scope
    assert "patient/CarePlan.cd" in scope and "patient/Provenance.cd" in scope
    assert not any(s.endswith((".read", ".write")) for s in scope)


def test_v1_scopes_are_requested_when_the_server_does_not_advertise_permission_v2():
    scope = requested_scopes(["launch-ehr", "permission-v1"], "ehr").split()
    assert "patient/Condition.read" in scope and "patient/MedicationRequest.write" in scope
    assert not any(s.endswith((".rs", ".c", ".cd", ".cud")) for s in scope)


def test_standalone_launch_asks_for_a_patient_picker_instead_of_the_launch_scope():
    scope = requested_scopes([], "standalone").split()
    assert "launch/patient" in scope and "launch" not in scope


def test_requested_scopes_are_exactly_the_minimal_set():
    scope = set(requested_scopes(["permission-v2"], "ehr").split())
    reads = {f"patient/{t}.rs" for t in ("Patient", "Condition", "MedicationRequest", "MedicationStatement",
                                         "MedicationDispense", "Medication")}
    writes = {"patient/MedicationRequest.cud", "patient/CarePlan.cd", "patient/Provenance.cd"}  # undo: no transaction
    follow_up = {"patient/CarePlan.rus", "patient/Observation.crd", "patient/Provenance.s"}
    handout = {"user/Practitioner.r", "user/Organization.r"}  # the prescriber and clinic, read by id
    assert scope == reads | writes | follow_up | handout | {"launch", "openid", "fhirUser", "online_access"}


def test_granted_v1_and_v2_scopes_and_wildcards_are_understood():
    assert granted_permissions("patient/*.read").reads("Condition")
    assert not granted_permissions("patient/*.read").writes("CarePlan")
    assert granted_permissions("patient/*.rs").reads("MedicationDispense")
    assert granted_permissions("user/*.cruds").writes("Provenance")
    assert granted_permissions("patient/*.*").writes("CarePlan")
    assert granted_permissions("patient/CarePlan.write").writes("CarePlan")
    assert granted_permissions("patient/Condition.r").can_read == frozenset()  # read without search


def test_a_query_restricted_v2_grant_does_not_count_as_reading_the_whole_type():
    permissions = granted_permissions("patient/Condition.rs?category=problem-list-item")
    assert not permissions.reads("Condition") and permissions.restricted == {"Condition"}
    assert {"Patient", "Condition"} <= set(missing_read(permissions))


def test_granted_scopes_without_write_make_missing_write_list_the_unwritable_types():
    granted = "launch openid fhirUser patient/*.rs patient/Provenance.c"
    assert missing_write(granted) == ["MedicationRequest", "CarePlan"]
    assert missing_write(granted_permissions("patient/*.cruds")) == []
    assert missing_write(Permissions(frozenset(), frozenset())) == ["MedicationRequest", "CarePlan", "Provenance"]


def test_create_only_grants_lack_what_the_sequential_write_needs_to_undo_itself():
    assert missing_undo(granted_permissions("patient/*.rs patient/MedicationRequest.c patient/CarePlan.c")) == [
        "update MedicationRequest", "delete MedicationRequest", "delete CarePlan", "delete Provenance"]
    assert missing_undo(granted_permissions("patient/MedicationRequest.cud patient/CarePlan.cd "
                                            "patient/Provenance.cd")) == []
    assert missing_undo(granted_permissions("patient/*.write")) == []
    assert missing_undo(granted_permissions("patient/*.cruds?category=x")) != []


# --- begin_launch ------------------------------------------------------------------------

def test_an_unknown_iss_is_refused_before_any_outbound_request(rsps, config, http):
    session = browser()
    with pytest.raises(LaunchError) as caught:
        oauth.begin_launch(config, "https://evil.example.com/fhir", "launch-1", session, http)
    assert caught.value.user_message == "This EHR is not registered with the app."
    assert len(rsps.registered()) == 0 and len(rsps.calls) == 0
    assert len(session.store) == 0


def test_an_iss_that_only_looks_like_an_allowed_one_is_refused(rsps, config, http):
    for iss in (ISS + "x", ISS + "/../fhir", ISS.replace("https", "http"), ISS.upper()):
        with pytest.raises(LaunchError):
            oauth.begin_launch(config, iss, None, browser(), http)
    assert len(rsps.calls) == 0


def test_an_iss_with_a_trailing_slash_matches_the_allowed_issuer(rsps, config, http):
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=smart_configuration())
    url = oauth.begin_launch(config, ISS + "/", "l-1", browser(), http)
    assert parse_qs(urlsplit(url).query)["aud"] == [ISS]


def test_the_authorize_url_carries_every_parameter_and_the_s256_of_the_stored_verifier(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    pending = pending_of(session, query)
    expected = base64.urlsafe_b64encode(hashlib.sha256(pending["verifier"].encode()).digest()).rstrip(b"=")
    assert query["code_challenge"] == expected.decode()
    assert query["code_challenge_method"] == "S256"
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == f"{APP}/callback" and query["aud"] == ISS
    assert query["launch"] == "launch-123"
    assert len(query["state"]) >= 22 and 43 <= len(pending["verifier"]) <= 128
    assert pending["mode"] == "ehr" and pending["iss"] == ISS


def test_pkce_s256_matches_the_rfc_7636_example():
    assert oauth.s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_a_standalone_launch_sends_no_launch_parameter(rsps, config, http):
    query = begin(rsps, config, browser(), http, launch=None)
    assert "launch" not in query and "launch/patient" in query["scope"].split()


def test_an_authorize_endpoint_with_its_own_query_keeps_it(rsps, config, http):
    rsps.get(f"{ISS}/.well-known/smart-configuration",
             json=smart_configuration(authorization_endpoint=AUTHORIZE + "?tenant=t1"))
    url = oauth.begin_launch(config, ISS, "l", browser(), http)
    assert parse_qs(urlsplit(url).query)["tenant"] == ["t1"]


def test_several_pending_launches_coexist_up_to_the_pending_cap_then_nothing_is_stored(rsps, config, http):
    config = replace(config, max_pending_launches=3)
    session = browser(config=config)
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=smart_configuration())
    states = [parse_qs(urlsplit(oauth.begin_launch(config, ISS, f"l{i}", session, http)).query)["state"][0]
              for i in range(3)]
    assert len(set(states)) == 3 and all(session.store.get("pending:" + s) for s in states)
    with pytest.raises(TooManyLaunches) as caught:
        oauth.begin_launch(config, ISS, "l4", browser(session.store, config), http)
    assert caught.value.status == 503 and session.store.count("pending") == 3


def test_discovery_sends_no_credentials_and_has_timeouts(rsps, config, http):
    begin(rsps, config, browser(), http)
    assert "Authorization" not in rsps.calls[0].request.headers
    assert rsps.calls[0].request.req_kwargs["timeout"] == (5.0, 30.0)


# --- complete_launch ---------------------------------------------------------------------

def register_token(rsps, body=None, *, match=()):
    rsps.post(TOKEN, json=body or token_response(), match=list(match))


def test_a_state_that_matches_no_pending_launch_is_rejected_without_a_token_request(rsps, config, http):
    session = browser()
    begin(rsps, config, session, http)
    with pytest.raises(LaunchError, match="state"):
        oauth.complete_launch(config, {"code": "c1", "state": "forged-state"}, session, http)
    assert len(rsps.calls) == 1  # discovery only


def test_a_state_from_another_session_is_rejected(rsps, config, http):
    theirs = browser()
    mine = browser(theirs.store)
    query = begin(rsps, config, theirs, http)
    with pytest.raises(LaunchError):
        oauth.complete_launch(config, {"code": "c1", "state": query["state"]}, mine, http)


def test_a_state_cannot_be_used_twice(rsps, config, http, idp_key):
    session = browser()
    query = begin(rsps, config, session, http)
    register_token(rsps)
    oauth.complete_launch(config, {"code": "c1", "state": query["state"]}, session, http)
    with pytest.raises(LaunchError, match="state"):
        oauth.complete_launch(config, {"code": "c1", "state": query["state"]}, session, http)


def test_a_pending_launch_older_than_the_launch_ttl_is_rejected(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    stale = pending_of(session, query)
    stale["created"] -= config.launch_ttl_seconds + 1
    session.store.set("pending:" + query["state"], stale, ttl=600)
    with pytest.raises(LaunchError):
        oauth.complete_launch(config, {"code": "c1", "state": query["state"]}, session, http)


def test_an_authorization_error_shows_the_ehrs_description_and_consumes_the_state(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    args = {"error": "access_denied", "error_description": "User declined", "state": query["state"]}
    with pytest.raises(LaunchError) as caught:
        oauth.complete_launch(config, args, session, http)
    assert "User declined" in caught.value.user_message
    assert pending_of(session, query) is None


def test_the_token_request_carries_the_code_verifier_and_redirect_uri(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    verifier = pending_of(session, query)["verifier"]
    form = {"grant_type": "authorization_code", "code": "code-1", "redirect_uri": f"{APP}/callback",
            "code_verifier": verifier, "client_id": CLIENT_ID}
    register_token(rsps, match=[matchers.urlencoded_params_matcher(form)])
    context = oauth.complete_launch(config, {"code": "code-1", "state": query["state"]}, session, http)
    assert context.patient == "ldn-fibro" and context.need_patient_banner is False
    assert session.get(context.launch_id)["access_token"] == ACCESS_TOKEN
    assert rsps.calls[1].request.req_kwargs["timeout"] == (5.0, 30.0)


def test_a_confidential_symmetric_client_uses_client_secret_basic(rsps, config, http):
    config = replace(config, client_secret="s3cret")
    session = browser()
    query = begin(rsps, config, session, http)
    basic = base64.b64encode(f"{CLIENT_ID}:s3cret".encode()).decode()
    verifier = pending_of(session, query)["verifier"]
    form = {"grant_type": "authorization_code", "code": "c", "redirect_uri": f"{APP}/callback",
            "code_verifier": verifier}
    register_token(rsps, match=[matchers.header_matcher({"Authorization": f"Basic {basic}"}),
                                matchers.urlencoded_params_matcher(form)])
    oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_confidential_asymmetric_client_sends_a_signed_short_lived_client_assertion(
        rsps, config, http, tmp_path, alg):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if alg == "RS384" \
        else ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    config = replace(config, private_key_file=str(pem), private_key_alg=alg, key_id="k-1")
    session = browser()
    query = begin(rsps, config, session, http)
    register_token(rsps)
    oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)
    form = dict(parse_qs(rsps.calls[1].request.body))
    assert form["client_assertion_type"] == [oauth.CLIENT_ASSERTION_TYPE] and "client_id" not in form
    assertion = form["client_assertion"][0]
    assert jwt.get_unverified_header(assertion)["kid"] == "k-1"
    public = jwt.PyJWKSet.from_dict(oauth.public_jwks(config))["k-1"]
    claims = jwt.decode(assertion, public.key, algorithms=[alg], audience=TOKEN)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert 0 < claims["exp"] - time.time() <= 300 and len(claims["jti"]) >= 22


def test_public_jwks_is_empty_without_a_private_key(config):
    assert oauth.public_jwks(config) == {"keys": []}


def test_a_valid_id_token_supplies_fhir_user_as_the_requester(rsps, config, http, idp_key):
    session = browser()
    query = begin(rsps, config, session, http)
    register_token(rsps, token_response(id_token=id_token(idp_key, nonce=query["nonce"])))
    rsps.get(JWKS_URI, json=jwks_of(idp_key))
    context = oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)
    assert context.fhir_user == "Practitioner/prac-1"
    assert rsps.calls[2].request.req_kwargs["timeout"] == (5.0, 30.0)


def test_an_id_token_with_a_bad_signature_is_rejected(rsps, config, http, idp_key):
    session = browser()
    query = begin(rsps, config, session, http)
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    register_token(rsps, token_response(id_token=id_token(impostor)))
    rsps.get(JWKS_URI, json=jwks_of(idp_key))
    with pytest.raises(LaunchError, match="InvalidSignatureError"):
        oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)
    assert session.store.count("launch") == 0


def test_an_id_token_for_another_audience_is_rejected(rsps, config, http, idp_key):
    session = browser()
    query = begin(rsps, config, session, http)
    register_token(rsps, token_response(id_token=id_token(idp_key, aud="some-other-app")))
    rsps.get(JWKS_URI, json=jwks_of(idp_key))
    with pytest.raises(LaunchError, match="InvalidAudienceError"):
        oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)


@pytest.mark.parametrize("claims, error", [
    ({"iss": "https://evil.example.com"}, "InvalidIssuerError"),
    ({"exp": int(time.time()) - 3600}, "ExpiredSignatureError"),
])
def test_an_id_token_from_another_issuer_or_expired_is_rejected(rsps, config, http, idp_key, claims, error):
    session = browser()
    query = begin(rsps, config, session, http)
    register_token(rsps, token_response(id_token=id_token(idp_key, **claims)))
    rsps.get(JWKS_URI, json=jwks_of(idp_key))
    with pytest.raises(LaunchError, match=error):
        oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)


def test_an_id_token_signed_with_hmac_or_none_is_rejected_before_fetching_keys(rsps, config, http):
    for token in (id_token("k" * 32, alg="HS256"), id_token(None, alg="none")):
        session = browser()
        query = begin(rsps, config, session, http)
        register_token(rsps, token_response(id_token=token))
        with pytest.raises(LaunchError, match="not accepted"):
            oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)
        rsps.reset()


def test_a_token_response_without_a_patient_is_refused(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    register_token(rsps, {k: v for k, v in token_response().items() if k != "patient"})
    with pytest.raises(LaunchError) as caught:
        oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)
    assert "No patient" in caught.value.user_message


def test_a_refused_code_exchange_is_a_launch_error_without_the_code(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    rsps.post(TOKEN, status=400, json={"error": "invalid_grant"})
    with pytest.raises(LaunchError) as caught:
        oauth.complete_launch(config, {"code": "code-XYZ", "state": query["state"]}, session, http)
    assert "invalid_grant" in caught.value.detail and "code-XYZ" not in caught.value.detail


def test_granted_scopes_and_missing_write_are_recorded_in_the_context(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    register_token(rsps, token_response(scope="launch openid fhirUser patient/*.rs"))
    context = oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)
    assert context.missing_write == ("MedicationRequest", "CarePlan", "Provenance")
    assert oauth.current_context(session, context.launch_id) == context
    assert "access_token" not in vars(context)


# --- access_token ------------------------------------------------------------------------

def stored_context(expires_in, refresh_token=None):
    return {"iss": ISS, "launch_mode": "ehr", "config": {"token_endpoint": TOKEN}, "access_token": ACCESS_TOKEN,
            "refresh_token": refresh_token, "expires_at": time.time() + expires_in, "scope": V2_SCOPES,
            "patient": "ldn-fibro", "encounter": None, "need_patient_banner": True, "fhir_user": None, "sub": None}


def launched(stored):
    session = browser()
    return session, session.create(stored)


def test_a_fresh_access_token_is_returned_without_any_request(rsps, config, http):
    session, lid = launched(stored_context(3600, REFRESH_TOKEN))
    assert oauth.access_token(config, session, lid, http) == ACCESS_TOKEN


def test_the_access_token_is_refreshed_shortly_before_it_expires(rsps, config, http):
    session, lid = launched(stored_context(30, REFRESH_TOKEN))
    rsps.post(TOKEN, json={"access_token": "at-NEW", "token_type": "bearer", "expires_in": 600},
              match=[matchers.urlencoded_params_matcher(
                  {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN, "client_id": CLIENT_ID})])
    assert oauth.access_token(config, session, lid, http) == "at-NEW"
    stored = session.get(lid)
    assert stored["refresh_token"] == REFRESH_TOKEN and stored["expires_at"] > time.time() + 500
    assert oauth.access_token(config, session, lid, http) == "at-NEW"  # no second refresh


def test_an_expired_session_without_a_refresh_token_raises_session_expired(rsps, config, http):
    with pytest.raises(SessionExpired):
        oauth.access_token(config, *launched(stored_context(-1)), http)
    with pytest.raises(SessionExpired):
        oauth.access_token(config, browser(), new_session_id(), http)


def test_an_expired_token_whose_refresh_is_refused_raises_session_expired(rsps, config, http):
    session, lid = launched(stored_context(-5, REFRESH_TOKEN))
    rsps.post(TOKEN, status=400, json={"error": "invalid_grant"})
    with pytest.raises(SessionExpired):
        oauth.access_token(config, session, lid, http)
    assert session.get(lid)["refresh_token"] is None


def test_a_still_valid_token_survives_a_failed_refresh(rsps, config, http):
    session, lid = launched(stored_context(30, REFRESH_TOKEN))
    rsps.post(TOKEN, status=503)
    assert oauth.access_token(config, session, lid, http) == ACCESS_TOKEN


# --- the blueprint in a tiny app ---------------------------------------------------------

@pytest.fixture
def app(config):
    flask_app = Flask(__name__, template_folder=str(TEMPLATES))
    flask_app.extensions["settings"] = config
    init_app(flask_app)
    flask_app.register_blueprint(bp)
    return flask_app


def all_response_text(response):
    return " ".join([*(f"{k}: {v}" for k, v in response.headers.items()), response.get_data(as_text=True)])


def test_the_full_launch_keeps_tokens_out_of_cookies_and_redirect_urls(rsps, app, idp_key):
    client = app.test_client()
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=smart_configuration())
    started = client.get("/launch", query_string={"iss": ISS, "launch": "abc"})
    assert started.status_code == 302 and started.headers["Location"].startswith(AUTHORIZE)
    first_sid = client.get_cookie(COOKIE_NAME).value
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    nonce = parse_qs(urlsplit(started.headers["Location"]).query)["nonce"][0]
    register_token(rsps, token_response(id_token=id_token(idp_key, nonce=nonce), refresh_token=REFRESH_TOKEN))
    rsps.get(JWKS_URI, json=jwks_of(idp_key))
    done = client.get("/callback", query_string={"code": "c", "state": state})
    assert done.status_code == 302 and done.headers["Location"].startswith("/?lid=")
    lid = parse_qs(urlsplit(done.headers["Location"]).query)["lid"][0]
    cookies = done.headers.getlist("Set-Cookie")
    assert len(cookies) == 1 and cookies[0].startswith(f"{COOKIE_NAME}=")
    new_sid = client.get_cookie(COOKIE_NAME).value
    assert new_sid != first_sid and len(new_sid) >= 43
    for response in (started, done):
        text = all_response_text(response)
        assert ACCESS_TOKEN not in text and REFRESH_TOKEN not in text and "id_token" not in text
    store = app.extensions["smart.store"]
    assert store.get("launch:" + lid)["access_token"] == ACCESS_TOKEN
    assert store.get("session:" + new_sid) is not None and store.get("session:" + first_sid) is None


def test_launch_with_an_unknown_iss_renders_the_error_page_without_details(rsps, app):
    response = app.test_client().get("/launch", query_string={"iss": "https://evil.example.com/fhir"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "This EHR is not registered with the app." in page
    assert "ALLOWED_ISSUERS" not in page and "Traceback" not in page
    assert len(rsps.calls) == 0


def test_a_standalone_launch_without_iss_uses_default_iss(rsps, app):
    app.extensions["settings"] = replace(app.extensions["settings"], default_iss=ISS)
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=smart_configuration())
    response = app.test_client().get("/launch")
    assert response.status_code == 302 and "launch=" not in response.headers["Location"]


def test_a_callback_with_a_forged_state_renders_the_error_page(rsps, app):
    response = app.test_client().get("/callback", query_string={"code": "c", "state": "nope"})
    assert response.status_code == 400 and "launch it again" in response.get_data(as_text=True)


def test_the_jwks_endpoint_publishes_the_public_key_only(app, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "app.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    app.extensions["settings"] = replace(app.extensions["settings"], private_key_file=str(pem), key_id="k-9")
    body = app.test_client().get("/.well-known/jwks.json").get_json()
    assert [k["kid"] for k in body["keys"]] == ["k-9"] and body["keys"][0]["alg"] == "RS384"
    assert "d" not in body["keys"][0] and "p" not in body["keys"][0]


# --- nonce, callback iss, token endpoint origin ------------------------------------------

def test_the_authorize_request_sends_a_fresh_nonce_per_launch(rsps, config, http):
    session = browser()
    first, second = begin(rsps, config, session, http), begin(rsps, config, session, http)
    assert len(first["nonce"]) >= 43 and first["nonce"] != second["nonce"]
    assert pending_of(session, first)["nonce"] == first["nonce"]


@pytest.mark.parametrize("nonce", [None, "another-launchs-nonce"])
def test_an_id_token_without_the_launchs_nonce_is_rejected(rsps, config, http, idp_key, nonce):
    session = browser()
    query = begin(rsps, config, session, http)
    claims = {} if nonce is None else {"nonce": nonce}
    register_token(rsps, token_response(id_token=id_token(idp_key, **claims)))
    rsps.get(JWKS_URI, json=jwks_of(idp_key))
    with pytest.raises(LaunchError, match="nonce"):
        oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http)
    assert session.store.count("launch") == 0


def test_a_callback_whose_iss_is_not_the_launchs_issuer_is_rejected_before_the_code_is_sent(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    with pytest.raises(LaunchError, match="iss"):
        oauth.complete_launch(config, {"code": "c", "state": query["state"], "iss": "https://evil.example.com"},
                              session, http)
    assert len(rsps.calls) == 1  # discovery only: no token request


def test_a_callback_naming_the_launchs_issuer_completes(rsps, config, http):
    session = browser()
    query = begin(rsps, config, session, http)
    register_token(rsps)
    context = oauth.complete_launch(config, {"code": "c", "state": query["state"], "iss": ISS + "/"}, session, http)
    assert context.patient == "ldn-fibro"


@pytest.mark.parametrize("token_endpoint", [
    "http://ehr.example.org/auth/token",  # not https
    "https://login.elsewhere.example/token",  # another origin, not configured
    "https://ehr.example.org:8443/auth/token",  # another port is another origin
])
def test_a_token_endpoint_that_is_not_https_on_the_issuers_origin_stops_the_launch(rsps, config, http,
                                                                                    token_endpoint):
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=smart_configuration(token_endpoint=token_endpoint))
    session = browser()
    with pytest.raises(LaunchError, match="(?i)token endpoint"):
        oauth.begin_launch(config, ISS, "l", session, http)
    assert len(session.store) == 0 and [c.request.url for c in rsps.calls] == [
        f"{ISS}/.well-known/smart-configuration"]


def test_a_token_endpoint_on_a_configured_origin_is_allowed(rsps, config, http):
    config = replace(config, token_origins=((ISS, "https://login.elsewhere.example"),
                                            ("https://x.example/fhir", "https://nope.example")))
    endpoint = "https://login.elsewhere.example/oauth2/token"
    rsps.get(f"{ISS}/.well-known/smart-configuration", json=smart_configuration(token_endpoint=endpoint))
    session = browser()
    url = oauth.begin_launch(config, ISS, "l", session, http)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    rsps.post(endpoint, json=token_response())
    assert oauth.complete_launch(config, {"code": "c", "state": query["state"]}, session, http).patient == "ldn-fibro"


def test_plain_http_token_endpoints_are_allowed_on_loopback_only():
    oauth.check_token_endpoint(Settings(), "http://127.0.0.1:8001/fhir", "http://127.0.0.1:8001/token")
    oauth.check_token_endpoint(Settings(), "http://localhost:9/fhir", "http://localhost:9/auth/token")
    with pytest.raises(LaunchError):
        oauth.check_token_endpoint(Settings(), "http://10.0.0.5/fhir", "http://10.0.0.5/token")


def test_a_refresh_never_goes_to_a_token_endpoint_off_the_issuers_origin(rsps, config, http):
    stored = {**stored_context(-5, REFRESH_TOKEN), "config": {"token_endpoint": "https://evil.example/token"}}
    session, lid = launched(stored)
    with pytest.raises(LaunchError):
        oauth.access_token(config, session, lid, http)
    assert len(rsps.calls) == 0
