"""Sessions on a real redis-server: two app instances sharing them, and a Redis outage mid-session."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_ehr import FakeEhr, form_fields, launch
from werkzeug.datastructures import MultiDict

from smart_app import create_app
from smart_app.samples import SAMPLE_AS_OF
from smart_app.smart.store import COOKIE_NAME

ISS = "https://ehr.example.org/fhir"
TOKEN = "https://ehr.example.org/auth/token"
JWKS = "https://ehr.example.org/auth/jwks"
PATIENT = "ldn-fibromyalgia"
OUTAGE_PAGE_LIMIT = 5.0  # seconds


def make_app(redis_url: str, ehr: FakeEhr):
    app = create_app({"ALLOWED_ISSUERS": ISS, "PUBLIC_BASE_URL": "http://127.0.0.1:8000", "SECRET_KEY": "s" * 64,
                      "SESSION_STORE": redis_url, "SESSION_STORE_TIMEOUT": 1.0, "TODAY": SAMPLE_AS_OF.isoformat()})
    app.extensions["gateway_factory"] = ehr.factory
    return app


def post(client, route, fields):
    return client.post(route, data=MultiDict(fields))


def smart_launch(client, rsps) -> tuple[str, str]:
    """/launch then /callback on `client`'s app, against recorded EHR endpoints; returns (launch id, state)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsps.get(f"{ISS}/.well-known/smart-configuration", json={
        "issuer": ISS, "authorization_endpoint": "https://ehr.example.org/auth/authorize", "token_endpoint": TOKEN,
        "jwks_uri": JWKS, "capabilities": ["launch-ehr", "permission-v2", "sso-openid-connect"],
        "code_challenge_methods_supported": ["S256"]})
    started = client.get("/launch", query_string={"iss": ISS, "launch": "l-1"})
    query = {k: v[0] for k, v in parse_qs(urlsplit(started.headers["Location"]).query).items()}
    now = int(time.time())
    id_token = jwt.encode({"iss": ISS, "aud": "ldn-app", "sub": "u1", "iat": now, "exp": now + 300,
                           "nonce": query["nonce"], "fhirUser": f"{ISS}/Practitioner/prac-1"}, key,
                          algorithm="RS256", headers={"kid": "k1"})
    rsps.post(TOKEN, json={"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "patient": PATIENT,
                           "scope": query["scope"], "id_token": id_token})
    rsps.get(JWKS, json={"keys": [{**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
                                   "kid": "k1", "use": "sig"}]})
    done = client.get("/callback", query_string={"code": "c", "state": query["state"]})
    assert done.status_code == 302, done.get_data(as_text=True)
    return parse_qs(urlsplit(done.headers["Location"]).query)["lid"][0], query["state"]


def test_two_app_instances_share_sessions_launch_on_one_review_and_sign_on_the_other(redis_server, rsps):
    ehr = FakeEhr()
    first, second = make_app(redis_server.url, ehr), make_app(redis_server.url, ehr)
    on_first, on_second = first.test_client(), second.test_client()
    lid, state = smart_launch(on_first, rsps)
    on_second.set_cookie(COOKIE_NAME, on_first.get_cookie(COOKIE_NAME).value)  # the same browser, balanced
    replayed = on_second.get("/callback", query_string={"code": "c", "state": state})
    assert replayed.status_code == 400  # the state was spent on the first instance

    shown = on_second.get("/", query_string={"lid": lid})
    assert shown.status_code == 200 and "Maria Elena Alvarez" in shown.get_data(as_text=True)
    previewed = post(on_first, "/preview", form_fields(shown.get_data(as_text=True), "plan-form"))
    signed = post(on_second, "/sign", form_fields(previewed.get_data(as_text=True), "sign-form"))
    assert signed.status_code == 303 and len(ehr.written_for(PATIENT)) == 3
    confirmation = on_first.get(signed.headers["Location"])
    assert confirmation.status_code == 200 and "Order written" in confirmation.get_data(as_text=True)


@pytest.fixture
def redis_app(own_redis):
    ehr = FakeEhr()
    return make_app(own_redis.url, ehr), ehr, own_redis


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_store_outage_page(response, seconds):
    text = response.get_data(as_text=True)
    assert response.status_code == 503 and seconds < OUTAGE_PAGE_LIMIT, (response.status_code, seconds)
    assert "cannot reach its session store" in text and "Traceback" not in text and "redis" not in text.lower()


def test_redis_killed_mid_session_gives_a_clear_page_within_seconds_and_writes_nothing(redis_app):
    app, ehr, server = redis_app
    client = app.test_client()
    lid = launch(app, client, PATIENT)
    shown = client.get("/", query_string={"lid": lid}).get_data(as_text=True)
    server.stop()
    for call in (lambda: client.get("/", query_string={"lid": lid}),
                 lambda: post(client, "/preview", form_fields(shown, "plan-form")),
                 lambda: post(client, "/sign", form_fields(shown, "plan-form"))):
        assert_store_outage_page(*timed(call))
    assert ehr.written == []


def test_a_hung_redis_gives_a_clear_page_within_seconds(redis_app):
    app, ehr, server = redis_app
    client = app.test_client()
    lid = launch(app, client, PATIENT)
    assert client.get("/", query_string={"lid": lid}).status_code == 200
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        assert_store_outage_page(*timed(lambda: client.get("/", query_string={"lid": lid})))
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert client.get("/", query_string={"lid": lid}).status_code == 200  # back when Redis is


def test_the_pending_launch_cap_holds_across_instances_sharing_redis(own_redis, rsps):
    ehr = FakeEhr()
    apps = [make_app(own_redis.url, ehr) for _ in range(2)]
    for app in apps:
        app.extensions["settings"] = replace(app.extensions["settings"], max_pending_launches=3)
    rsps.get(f"{ISS}/.well-known/smart-configuration", json={
        "issuer": ISS, "authorization_endpoint": "https://ehr.example.org/auth/authorize", "token_endpoint": TOKEN,
        "capabilities": ["launch-ehr", "permission-v2"], "code_challenge_methods_supported": ["S256"]})
    statuses = [apps[i % 2].test_client().get("/launch", query_string={"iss": ISS, "launch": "x"}).status_code
                for i in range(5)]
    assert statuses == [302, 302, 302, 503, 503]
    assert apps[0].extensions["smart.store"].count("pending") == 3
