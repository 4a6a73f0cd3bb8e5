"""In-process web tests: bounded form input, the app's own earlier order, undo scopes (issue 7 items 4, 5, 7)."""

from __future__ import annotations

import re

import pytest
from fake_ehr import form_fields, launch
from werkzeug.datastructures import MultiDict

from smart_app.web.views import LIMITS, TEXT_MAX

ISS = "https://ehr.example.org/fhir"
PATIENT = "ldn-fibromyalgia"


@pytest.fixture
def plan(app, client):
    """The review page's plan form of a fresh launch, as (field, value) pairs."""
    lid = launch(app, client, PATIENT)
    return form_fields(client.get("/", query_string={"lid": lid}).get_data(as_text=True), "plan-form")


def send(client, route, plan, **changes):
    fields = [(k, v) for k, v in plan if k not in changes] + list(changes.items())
    response = client.post(route, data=MultiDict(fields))
    return response.status_code, response.get_data(as_text=True)


@pytest.mark.parametrize(("field", "value", "named"), [
    ("target", "nan", "Target dose: nan is outside the form"),
    ("start_dose", "inf", "Start dose: inf is outside the form"),
    ("step", "-Infinity", "Increase per step: -Infinity is outside the form"),
    ("interval", "574", "Days per step: 574 is outside the form&#39;s limits (1 to 60)"),
    ("interval", "0", "Days per step: 0 is outside the form&#39;s limits (1 to 60)"),
    ("target", "1.3", "Target dose: 1.3 is not a multiple of 0.25"),
    ("supply_days", "9999999", "Supply: choose 30, 60, 90 days"),
    ("start", "9999-12-31", "Start date: 9999-12-31 is outside 2026-01-15 to 2027-01-15"),
    ("start", "0001-01-01", "Start date: 0001-01-01 is outside"),
    ("start", "2026-02-30", "Start date: &#39;2026-02-30&#39; is not a valid date"),
])
@pytest.mark.parametrize("route", ["/preview", "/sign"])
def test_values_outside_the_forms_own_limits_get_a_400_naming_the_field_and_nothing_is_written(
        client, plan, ehr, route, field, value, named):
    status, text = send(client, route, plan, **{field: value})
    assert status == 400 and named in text, re.findall(r"<li>[^<]*</li>", text)
    assert "Traceback" not in text and ehr.written == []


def test_a_free_text_field_over_the_cap_is_refused_by_name_and_never_echoed(client, plan, ehr):
    long_text = "x" * (TEXT_MAX + 1)
    status, text = send(client, "/sign", plan, override_reason=long_text, attest="yes", attestation=long_text)
    assert status == 400 and f"Reason to proceed: at most {TEXT_MAX} characters" in text
    assert f"Attestation note: at most {TEXT_MAX} characters" in text
    assert "x" * 100 not in text and ehr.written == []


def test_a_ten_megabyte_form_is_refused_with_a_clear_page_and_not_echoed(client, plan, ehr):
    status, text = send(client, "/sign", plan, attestation="y" * 10_000_000)
    assert status == 413 and "too large" in text and "y" * 100 not in text and ehr.written == []


def test_the_html_form_carries_the_same_limits_the_server_checks(client, app):
    lid = launch(app, client, PATIENT)
    text = client.get("/", query_string={"lid": lid}).get_data(as_text=True)
    for name, limit in LIMITS.items():
        tag = re.search(rf'<input[^>]*id="{name}"[^>]*>', text).group(0)
        assert f'min="{limit.low:g}"' in tag and f'max="{limit.high:g}"' in tag and f'step="{limit.step:g}"' in tag
    assert 'max="60"' in re.search(r'<input[^>]*id="interval"[^>]*>', text).group(0)
    crohns = client.get("/", query_string={"lid": launch(app, client, "ldn-crohns-alone")}).get_data(as_text=True)
    assert re.search(rf'<textarea[^>]*id="override_reason"[^>]*maxlength="{TEXT_MAX}"', crohns)


def test_the_apps_own_earlier_order_is_shown_with_its_confirmation_not_as_duplicate_therapy(app, client, plan, ehr):
    previewed = client.post("/preview", data=MultiDict(plan)).get_data(as_text=True)
    signed = client.post("/sign", data=MultiDict(form_fields(previewed, "sign-form")))
    assert signed.status_code == 303 and len(ehr.written_for(PATIENT)) == 3
    lid = dict(plan)["lid"]
    again = client.get("/", query_string={"lid": lid}).get_data(as_text=True)
    assert "This app's earlier LDN order" in again and 'class="own-status">active<' in again
    assert re.search(r'id="decision">(eligible|eligible-with-cautions)<', again)
    assert "Duplicate therapy" not in again
    key = re.search(r'href="/done/([0-9a-f]{32})\?lid=', again).group(1)
    done = client.get(f"/done/{key}", query_string={"lid": lid})
    assert done.status_code == 200 and 'id="order-status">active<' in done.get_data(as_text=True)


def test_naltrexone_written_by_anyone_else_stays_an_r5_duplicate(app, client, ehr):
    lid = launch(app, client, "ldn-naltrexone-50")
    text = client.get("/", query_string={"lid": lid}).get_data(as_text=True)
    assert re.search(r'id="decision">contraindicated<', text) and "earlier LDN order" not in text


def test_on_a_server_without_transactions_a_grant_without_the_undo_scopes_disables_signing_with_the_reason(
        app, client, ehr, monkeypatch):
    from fake_ehr import FakeGateway

    monkeypatch.setattr(FakeGateway, "supports_transaction", lambda self: False)
    lid = launch(app, client, PATIENT)  # fake_ehr's FULL_SCOPE grants create only
    text = client.get("/", query_string={"lid": lid}).get_data(as_text=True)
    reason = re.search(r'id="signing-disabled">([^<]*)<', text).group(1)
    assert "does not support transactions" in reason and "delete Provenance" in reason
    forged = client.post("/sign", data=MultiDict(form_fields(text, "plan-form")))
    assert forged.status_code == 403 and ehr.written == []
