"""Server-side session store and the Flask session interface built on it."""

from __future__ import annotations

import json
import threading

import pytest
from flask import Flask, session

from smart_app.config import DEFAULTS
from smart_app.smart.blueprint import init_app
from smart_app.smart.store import (
    COOKIE_NAME,
    MemoryStore,
    RedisStore,
    ServerSideSessionInterface,
    make_store,
    new_session_id,
)

TOKEN = "at-SECRET-abcdef"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeRedis:
    """Just the three calls RedisStore makes, with SETEX semantics kept visible."""

    def __init__(self):
        self.values, self.ttls = {}, {}

    def get(self, key):
        return self.values.get(key)

    def setex(self, key, ttl, value):
        self.values[key], self.ttls[key] = value.encode(), ttl

    def delete(self, key):
        self.values.pop(key, None)


def test_session_ids_are_opaque_and_carry_at_least_128_random_bits():
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) >= 22 and set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
               for i in ids)


def test_the_memory_store_keeps_values_until_their_ttl_passes():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set("a", {"smart": {"access_token": TOKEN}}, ttl=60)
    assert store.get("a") == {"smart": {"access_token": TOKEN}}
    clock.now += 59
    assert store.get("a") is not None
    clock.now += 2
    assert store.get("a") is None and len(store) == 0


def test_the_memory_store_hands_out_copies_not_its_own_objects():
    store = MemoryStore()
    store.set("a", {"x": [1]}, ttl=60)
    store.get("a")["x"].append(2)
    assert store.get("a") == {"x": [1]}


def test_the_memory_store_deletes_and_sweeps_expired_entries():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set("old", {"v": 1}, ttl=1)
    store.set("gone", {"v": 2}, ttl=100)
    store.delete("gone")
    clock.now += 5
    store.set("new", {"v": 3}, ttl=100)
    assert store.get("gone") is None and store.get("old") is None and len(store) == 1


def test_the_memory_store_is_safe_under_concurrent_writers():
    store = MemoryStore()

    def write(n):
        for i in range(200):
            store.set(f"{n}-{i}", {"i": i}, ttl=60)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 1600


def test_the_redis_store_writes_json_with_setex_and_reads_it_back():
    client = FakeRedis()
    store = RedisStore(client=client)
    store.set("sid1", {"smart": {"patient": "p1"}}, ttl=120)
    assert client.ttls == {"ldn:session:sid1": 120}
    assert json.loads(client.values["ldn:session:sid1"]) == {"smart": {"patient": "p1"}}
    assert store.get("sid1") == {"smart": {"patient": "p1"}}
    store.delete("sid1")
    assert store.get("sid1") is None


def test_session_store_config_selects_memory_or_redis():
    assert isinstance(make_store({"SESSION_STORE": "memory"}), MemoryStore)
    assert isinstance(make_store({"SESSION_STORE": "redis://127.0.0.1:1/0"}), RedisStore)  # lazy: no connect
    with pytest.raises(ValueError):
        make_store({"SESSION_STORE": "postgres://x"})


# --- the Flask session interface ---------------------------------------------------------

@pytest.fixture
def app():
    flask_app = Flask(__name__)
    flask_app.config.update({**DEFAULTS, "PUBLIC_BASE_URL": "http://127.0.0.1:8000"})
    init_app(flask_app)

    @flask_app.get("/login")
    def login():
        session["smart"] = {"access_token": TOKEN, "patient": "p1"}
        session.regenerate()
        return "ok"

    @flask_app.get("/put")
    def put():
        session["pending"] = {"state": "s"}
        return "ok"

    @flask_app.get("/read")
    def read():
        return session.get("smart", {}).get("patient", "none")

    @flask_app.get("/logout")
    def logout():
        session.clear()
        return "bye"

    @flask_app.get("/nothing")
    def nothing():
        return "quiet"

    return flask_app


def set_cookies(response):
    return response.headers.getlist("Set-Cookie")


def test_the_cookie_holds_only_the_opaque_id_and_the_token_stays_in_the_store(app):
    client = app.test_client()
    response = client.get("/login")
    [cookie] = set_cookies(response)
    sid = client.get_cookie(COOKIE_NAME).value
    assert cookie.startswith(f"{COOKIE_NAME}={sid};") and TOKEN not in cookie and "p1" not in cookie
    assert app.extensions["smart.store"].get(sid)["smart"]["access_token"] == TOKEN
    assert client.get("/read").get_data(as_text=True) == "p1"


def test_the_cookie_is_httponly_and_samesite_lax_over_http(app):
    [cookie] = set_cookies(app.test_client().get("/put"))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_the_cookie_is_samesite_none_and_secure_when_served_over_https(app):
    app.config["PUBLIC_BASE_URL"] = "https://ldn.example.org"
    [cookie] = set_cookies(app.test_client().get("/put", base_url="https://ldn.example.org"))
    assert "HttpOnly" in cookie and "SameSite=None" in cookie and "Secure" in cookie


def test_login_moves_the_session_to_a_new_id_and_drops_the_old_one(app):
    client = app.test_client()
    client.get("/put")
    before = client.get_cookie(COOKIE_NAME).value
    client.get("/login")
    after = client.get_cookie(COOKIE_NAME).value
    store = app.extensions["smart.store"]
    assert after != before and store.get(before) is None
    assert store.get(after)["pending"] == {"state": "s"}


def test_a_session_id_chosen_by_the_client_is_never_adopted(app):
    client = app.test_client()
    planted = new_session_id()
    client.set_cookie(COOKIE_NAME, planted)
    client.get("/put")
    assert client.get_cookie(COOKIE_NAME).value != planted
    assert app.extensions["smart.store"].get(planted) is None


def test_a_malformed_session_cookie_is_ignored(app):
    client = app.test_client()
    client.set_cookie(COOKIE_NAME, "../../etc/passwd")
    assert client.get("/read").get_data(as_text=True) == "none"


def test_an_untouched_empty_session_sets_no_cookie(app):
    assert set_cookies(app.test_client().get("/nothing")) == []


def test_clearing_the_session_deletes_it_from_the_store_and_the_browser(app):
    client = app.test_client()
    client.get("/login")
    sid = client.get_cookie(COOKIE_NAME).value
    [cookie] = set_cookies(client.get("/logout"))
    assert cookie.startswith(f"{COOKIE_NAME}=;") and "Expires=Thu, 01 Jan 1970" in cookie
    assert app.extensions["smart.store"].get(sid) is None


def test_init_app_installs_the_server_side_session_interface(app):
    assert isinstance(app.session_interface, ServerSideSessionInterface)
