"""Server-side session store and the Flask session interface built on it."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from flask import Flask, session

from smart_app.config import Settings, SettingsError
from smart_app.errors import SessionStoreUnavailable
from smart_app.smart.blueprint import init_app
from smart_app.smart.store import (
    COOKIE_NAME,
    SWEEP_PER_WRITE,
    MemoryStore,
    RedisStore,
    ServerSideSessionInterface,
    make_store,
    new_session_id,
)

TOKEN = "at-SECRET-abcdef"
PATIENT = "patient~1"  # "~" is never in an opaque session id, so it cannot appear in the cookie by chance


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


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


@pytest.fixture(params=["memory", "redis"])
def store(request):
    """Each store the app can run on; the Redis one is a real redis-server (its own key prefix per test)."""
    if request.param == "memory":
        return MemoryStore()
    server = request.getfixturevalue("redis_server")
    return RedisStore(server.url, prefix=f"t{new_session_id()[:8]}:")


def test_both_stores_keep_json_values_until_deleted(store):
    store.set("session:a", {"smart": {"patient": "p1"}}, ttl=120)
    assert store.get("session:a") == {"smart": {"patient": "p1"}}
    store.delete("session:a")
    assert store.get("session:a") is None


def test_both_stores_hand_out_a_taken_value_once(store):
    store.set("pending:s1", {"iss": "x"}, ttl=60)
    assert store.take("pending:s1") == {"iss": "x"}
    assert store.take("pending:s1") is None and store.get("pending:s1") is None


def test_both_stores_count_live_pending_entries(store):
    for i in range(3):
        store.set(f"pending:{i}", {"i": i}, ttl=60)
    store.set("session:x", {}, ttl=60)
    store.delete("pending:0")
    store.take("pending:1")
    assert store.count("pending") == 1


def test_redis_entries_carry_their_ttl_and_touch_renews_it(redis_server):
    import redis

    store = RedisStore(redis_server.url, prefix="ttl-test:")
    store.set("session:t", {"v": 1}, ttl=120)
    client = redis.Redis.from_url(redis_server.url)
    assert 110 < client.ttl("ttl-test:session:t") <= 120
    store.touch("session:t", 1800)
    assert client.ttl("ttl-test:session:t") > 1700


def test_expired_pending_entries_leave_the_redis_count(redis_server):
    store = RedisStore(redis_server.url, prefix=f"exp{new_session_id()[:6]}:")
    store.set("pending:short", {}, ttl=1)
    store.set("pending:long", {}, ttl=60)
    time.sleep(1.2)
    assert store.count("pending") == 1 and store.get("pending:short") is None


def test_a_stopped_redis_is_a_session_store_unavailable_error_within_seconds(own_redis):
    store = RedisStore(own_redis.url, timeout=1.0)
    store.set("session:a", {}, ttl=60)
    own_redis.stop()
    started = time.monotonic()
    with pytest.raises(SessionStoreUnavailable):
        store.get("session:a")
    assert time.monotonic() - started < 2


def test_the_memory_store_touch_renews_only_live_entries():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set("session:a", {"v": 1}, ttl=10)
    clock.now += 8
    store.touch("session:a", 10)
    store.touch("session:never", 10)
    clock.now += 8
    assert store.get("session:a") == {"v": 1} and store.get("session:never") is None


def test_the_memory_store_sweeps_expired_entries_a_few_per_write_not_all_at_once():
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for i in range(100):
        store.set(f"session:{i}", {}, ttl=10)
    clock.now += 11
    store.set("session:new", {}, ttl=10)
    assert len(store._items) == 100 - SWEEP_PER_WRITE + 1  # 8 swept by this write, the rest later
    for i in range(20):
        store.set(f"session:more{i}", {}, ttl=10)
    assert len(store._items) == 21  # the backlog is gone: the table never holds more than live + a little


def test_session_store_config_selects_memory_or_redis():
    assert isinstance(make_store(Settings(session_store="memory")), MemoryStore)
    assert isinstance(make_store(Settings(session_store="redis://127.0.0.1:1/0")), RedisStore)  # lazy: no connect
    with pytest.raises(SettingsError, match="LDN_SESSION_STORE='postgres://x'"):
        Settings.from_env({"LDN_SESSION_STORE": "postgres://x"})


# --- the Flask session interface ---------------------------------------------------------

@pytest.fixture
def app():
    flask_app = Flask(__name__)
    flask_app.extensions["settings"] = Settings(public_base_url="http://127.0.0.1:8000")
    init_app(flask_app)

    @flask_app.get("/login")
    def login():
        session["smart"] = {"access_token": TOKEN, "patient": PATIENT}
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
    assert cookie.startswith(f"{COOKIE_NAME}={sid};") and TOKEN not in cookie and PATIENT not in cookie
    assert app.extensions["smart.store"].get("session:" + sid)["smart"]["access_token"] == TOKEN
    assert client.get("/read").get_data(as_text=True) == PATIENT


def test_the_cookie_is_httponly_and_samesite_lax_over_http(app):
    [cookie] = set_cookies(app.test_client().get("/put"))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_the_cookie_is_samesite_none_and_secure_when_served_over_https(app):
    app.extensions["settings"] = replace(app.extensions["settings"], public_base_url="https://ldn.example.org")
    [cookie] = set_cookies(app.test_client().get("/put", base_url="https://ldn.example.org"))
    assert "HttpOnly" in cookie and "SameSite=None" in cookie and "Secure" in cookie


def test_login_moves_the_session_to_a_new_id_and_drops_the_old_one(app):
    client = app.test_client()
    client.get("/put")
    before = client.get_cookie(COOKIE_NAME).value
    client.get("/login")
    after = client.get_cookie(COOKIE_NAME).value
    store = app.extensions["smart.store"]
    assert after != before and store.get("session:" + before) is None
    assert store.get("session:" + after)["pending"] == {"state": "s"}


def test_a_session_id_chosen_by_the_client_is_never_adopted(app):
    client = app.test_client()
    planted = new_session_id()
    client.set_cookie(COOKIE_NAME, planted)
    client.get("/put")
    assert client.get_cookie(COOKIE_NAME).value != planted
    assert app.extensions["smart.store"].get("session:" + planted) is None


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
    assert app.extensions["smart.store"].get("session:" + sid) is None


def test_init_app_installs_the_server_side_session_interface(app):
    assert isinstance(app.session_interface, ServerSideSessionInterface)


@pytest.fixture
def timed_app(app):
    clock = FakeClock()
    app.extensions["smart.store"] = app.session_interface.store = MemoryStore(clock=clock)
    app.extensions["settings"] = replace(app.extensions["settings"], clock=clock)
    return app, clock


def test_a_session_unused_for_the_idle_timeout_ends_and_each_request_renews_it(timed_app):
    app, clock = timed_app
    client = app.test_client()
    client.get("/login")
    for _ in range(3):
        clock.now += 29 * 60
        assert client.get("/read").get_data(as_text=True) == PATIENT
    clock.now += 31 * 60
    assert client.get("/read").get_data(as_text=True) == "none"


def test_a_busy_session_still_ends_at_the_absolute_timeout(timed_app):
    app, clock = timed_app
    app.extensions["settings"] = replace(app.extensions["settings"], session_max_hours=1)
    client = app.test_client()
    client.get("/login")
    clock.now += 20 * 60
    assert client.get("/read").get_data(as_text=True) == PATIENT
    clock.now += 20 * 60
    assert client.get("/read").get_data(as_text=True) == PATIENT
    clock.now += 20 * 60
    assert client.get("/read").get_data(as_text=True) == "none"

