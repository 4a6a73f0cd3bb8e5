"""Issue 13 item 5: one validated Settings object; a bad deployment fails at start, naming the variable."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from fake_ehr import FakeEhr, form_fields, launch

from smart_app import create_app
from smart_app.cli import main
from smart_app.config import Settings, SettingsError, setting_names

ISS = "https://ehr.example.org/fhir"
PATIENT = "ldn-fibromyalgia"


@pytest.fixture
def environ(monkeypatch):
    """A clean LDN_* environment that the test fills."""
    for name in setting_names():
        monkeypatch.delenv("LDN_" + name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("name", "value", "says"), [
    ("LDN_SESSION_IDLE_MINUTES", "abc", "LDN_SESSION_IDLE_MINUTES='abc': not a number"),
    ("LDN_FHIR_RETRIES", "3.5", "LDN_FHIR_RETRIES='3.5': not an integer"),
    ("LDN_FHIR_READ_TIMEOUT", "0", "LDN_FHIR_READ_TIMEOUT='0': must be more than 0"),
    ("LDN_FHIR_RETRIES", "-1", "LDN_FHIR_RETRIES='-1': must be 0 or more"),
    ("LDN_OPEN_SERVERS", "http://hapi:8080/fhir,hapi/fhir", "LDN_OPEN_SERVERS='hapi/fhir': not an http(s) URL"),
    ("LDN_ALLOWED_ISSUERS", "ftp://ehr.example.org/fhir", "LDN_ALLOWED_ISSUERS='ftp://ehr.example.org/fhir'"),
    ("LDN_PUBLIC_BASE_URL", "ldn.example.org", "LDN_PUBLIC_BASE_URL='ldn.example.org': not an http(s) URL"),
    ("LDN_TOKEN_ORIGINS", "https://ehr.example.org/fhir", "LDN_TOKEN_ORIGINS='https://ehr.example.org/fhir': each"),
    ("LDN_SESSION_STORE", "postgres://db/ldn", "LDN_SESSION_STORE='postgres://db/ldn': use memory or a redis://"),
    ("LDN_PRIVATE_KEY_ALG", "HS256", "LDN_PRIVATE_KEY_ALG='HS256': use RS384 or ES384"),
    ("LDN_WASHOUT_DAYS", "3", "LDN_WASHOUT_DAYS=3: the washout is 7 to 10 days (R2)"),
    ("LDN_LOG_LEVEL", "LOUD", "LDN_LOG_LEVEL='LOUD'"),
    ("LDN_PRIVATE_KEY_FILE", "/nonexistent/key.pem", "LDN_PRIVATE_KEY_FILE='/nonexistent/key.pem': PRIVATE_KEY_FILE"),
])
def test_create_app_refuses_a_bad_setting_at_start_naming_the_variable(environ, name, value, says):
    environ.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        create_app()
    assert says in str(refused.value)


def test_ldn_app_serve_stops_at_start_with_the_message_and_serves_nothing(environ):
    environ.setenv("LDN_ALLOWED_ISSUERS", ISS)
    environ.setenv("LDN_SESSION_IDLE_MINUTES", "thirty")
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--port", "0"])
    assert str(stopped.value) == "ldn-app serve: LDN_SESSION_IDLE_MINUTES='thirty': not a number"


def test_the_environment_and_the_factory_overrides_build_one_typed_settings_object(environ):
    environ.setenv("LDN_ALLOWED_ISSUERS", f"{ISS}/, https://other.example.org/r4")
    environ.setenv("LDN_FHIR_READ_DEADLINE", "12.5")
    settings = Settings.from_env(overrides={"FHIR_RETRIES": 0})
    assert settings.allowed_issuers == (ISS, "https://other.example.org/r4")
    assert (settings.fhir_read_deadline, settings.fhir_retries, settings.washout_days) == (12.5, 0, 10)


def shown_start_date(clock) -> str:
    """The first-dose date the order form offers, on an app whose clock is `clock`."""
    app = create_app({"ALLOWED_ISSUERS": ISS, "SESSION_STORE": "memory", "SECRET_KEY": "k" * 32}, clock=clock)
    app.extensions["gateway_factory"] = FakeEhr().factory
    client = app.test_client()
    page = client.get("/", query_string={"lid": launch(app, client, PATIENT)}).get_data(as_text=True)
    return dict(form_fields(page, "plan-form"))["start"]


def test_a_frozen_clock_changes_the_dates_the_clinician_is_shown():
    days = [date(2026, 3, 2), date(2026, 9, 14)]
    shown = [shown_start_date(lambda day=day: datetime(day.year, day.month, day.day, 9).timestamp()) for day in days]
    assert shown == [d.isoformat() for d in days]
