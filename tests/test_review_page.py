"""Issue 9, in process: the review page's headline decides, cautions come first, protocol and sources
apart, opioid history per drug, a 5,000-record patient stays small, and the form fits the decision."""

from __future__ import annotations

import html
import re
import sys
from datetime import date
from functools import partial
from pathlib import Path

import pytest
from fake_ehr import FakeEhr, form_fields, launch
from werkzeug.datastructures import MultiDict

from smart_app import create_app
from smart_app.clinical.model import Assessment, Decision, Finding, Severity
from smart_app.review import fold, long_date, summarize
from smart_app.samples import SAMPLE_AS_OF

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_assessment import big_bundle  # noqa: E402

ISS = "https://ehr.example.org/fhir"
HEADLINES = {  # sample -> (decision code, the words the headline starts with)
    "ldn-fibromyalgia": ("eligible", "Yes - LDN can be started"),
    "ldn-ms": ("eligible-with-cautions", "Yes, with cautions - "),
    "ldn-crohns-alone": ("not-recommended", "Recommended against - Crohn's disease as the reason"),
    "ldn-tramadol-5-days": ("wait-washout", "Not yet - opioid washout"),
    "ldn-unknown-code": ("cannot-determine", "Cannot determine - unclassified medication"),
    "ldn-oxycodone-active": ("contraindicated", "Do not start - current opioid"),
    "ldn-acute-hepatitis": ("contraindicated", "Do not start - acute or decompensated liver disease"),
}


class BigEhr(FakeEhr):
    """The sample patients plus 'ldn-big': 5,000 medication records (bench/bench_assessment.py)."""

    def factory(self, config, iss, token_provider):
        gateway = super().factory(config, iss, token_provider)
        read = gateway.read_patient_record

        def read_patient_record(patient_id):
            if patient_id != "ldn-big":
                return read(patient_id)
            from smart_app.fhir.gateway import PatientRecord
            entries = [e["resource"] for e in big_bundle(5000, 40)["entry"]]
            patient = {"resourceType": "Patient", "id": "ldn-big", "name": [{"text": "Big Record"}],
                       "birthDate": "1960-01-01"}
            by_type: dict[str, list] = {"MedicationStatement": [], "Condition": []}
            for r in entries[1:]:
                by_type[r["resourceType"]].append({**r, "subject": {"reference": "Patient/ldn-big"}})
            return PatientRecord(patient, by_type, {})
        gateway.read_patient_record = read_patient_record
        return gateway


@pytest.fixture
def app():
    flask_app = create_app({"ALLOWED_ISSUERS": ISS, "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
                            "TODAY": SAMPLE_AS_OF.isoformat(), "SESSION_STORE": "memory", "SECRET_KEY": "k" * 32})
    flask_app.extensions["gateway_factory"] = BigEhr().factory
    return flask_app


@pytest.fixture
def client(app):
    return app.test_client()


def review(app, client, patient, **query):
    lid = launch(app, client, patient)
    response = client.get("/", query_string={"lid": lid, **query})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return lid, response.get_data(as_text=True)


def text_of(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no #{element_id}"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def section(page: str, element_id: str) -> str:
    start = page.index(f'id="{element_id}"')
    return page[start:page.index("</section>", start)]


@pytest.mark.parametrize("patient", sorted(HEADLINES))
def test_the_headline_states_the_decision_in_words_for_each_kind_of_patient(app, client, patient):
    code, words = HEADLINES[patient]
    _, page = review(app, client, patient)
    assert text_of(page, "decision") == code
    assert text_of(page, "verdict").startswith(words), text_of(page, "verdict")
    assert text_of(page, "deciding-reason") and text_of(page, "next-step").startswith("Next:")


def test_a_washout_headline_names_the_opioid_its_last_day_and_the_first_dose_date(app, client):
    _, page = review(app, client, "ldn-tramadol-5-days")
    reason = text_of(page, "deciding-reason")
    assert reason.lower().startswith("tramadol"), reason
    assert f"last taken {long_date(date(2026, 1, 10))}; first LDN dose from {long_date(date(2026, 1, 20))}" in reason
    assert "Tue 20 Jan 2026" in reason and "contraindicated" not in text_of(page, "verdict").lower()


def test_an_eligible_patient_has_no_cautions_and_the_protocol_sits_in_its_own_panel(app, client):
    _, page = review(app, client, "ldn-fibromyalgia")
    assert 'id="cautions"' not in page
    protocol = section(page, "protocol")
    assert "1.5 mg at bedtime" in protocol and "Hold LDN 2-3 days" in protocol and "8-12 weeks" in protocol
    assert "Hold LDN 2-3 days" not in page[:page.index('id="protocol"')].split('id="preview"')[0]


def test_cautions_are_listed_most_important_first_under_the_deciding_finding():
    finding = partial(Finding, "R2", "004")
    found = (finding(Severity.CAUTION, "a caution", code="no-indication"),
             finding(Severity.INFO, "a note", code="indication"),
             finding(Severity.CANNOT_DETERMINE, "unknown", code="opioid-undated"),
             finding(Severity.CONTRAINDICATION, "current", code="opioid-current"),
             finding(Severity.NOT_RECOMMENDED, "crohns", code="crohns-reason"),
             finding(Severity.INFO, "protocol", code="protocol"))
    a = Assessment("p", SAMPLE_AS_OF, SAMPLE_AS_OF, 10, Decision.CONTRAINDICATED, found, (), (), None)
    shown = summarize(a, SAMPLE_AS_OF)
    assert shown.headline.verdict == "Do not start - current opioid"
    assert [s.finding.text for s in shown.cautions] == ["unknown", "crohns", "a caution"]
    assert [s.finding.text for s in shown.notes] == ["a note"] and [f.text for f in shown.protocol] == ["protocol"]


def test_findings_of_one_kind_beyond_three_are_counted_not_listed():
    many = [Finding("R2", "004", Severity.INFO, f"past {i}", code="opioid-past") for i in range(10)]
    folded = fold([*many, Finding("R3", "004", Severity.INFO, "indication", code="indication")])
    assert [(s.finding.text, s.more) for s in folded] == [("past 0", 0), ("past 1", 0), ("past 2", 7),
                                                           ("indication", 0)]


def test_every_source_cited_links_to_a_titled_entry_in_the_source_list(app, client):
    _, page = review(app, client, "ldn-crohns-fibromyalgia")
    targets = set(re.findall(r'href="#(src-[^"]+)"', page))
    assert {"src-004", "src-001"} <= targets
    for target in targets:
        entry = re.search(rf'<li id="{target}"><strong>[^<]+</strong>: ([^<]+)</li>', page)
        assert entry and len(entry.group(1)) > 20, target


def test_opioid_history_has_one_row_per_drug_with_its_last_date_and_record_kind(app, client):
    _, page = review(app, client, "ldn-tramadol-5-days")
    history = section(page, "opioid-history")
    rows = re.findall(r'<article class="drug cls-opioid"', history)
    assert len(rows) == 1
    assert "Sat 10 Jan 2026 (" in history and 'class="strip"' in history
    assert "<details><summary>Details: codes, records and match evidence</summary>" in history


def test_override_and_attestation_fields_appear_only_when_the_decision_needs_them(app, client):
    _, clean = review(app, client, "ldn-fibromyalgia")
    assert 'name="override_reason"' not in clean and 'name="attest"' not in clean
    _, crohns = review(app, client, "ldn-crohns-alone")
    assert 'name="override_reason"' in crohns and 'name="attest"' not in crohns
    _, unknown = review(app, client, "ldn-unknown-code")
    assert 'name="attest"' in unknown


def test_reason_choices_put_the_qualifying_indications_first_and_others_behind_a_disclosure(app, client):
    _, page = review(app, client, "ldn-fibromyalgia")
    fieldset = page[page.index("<legend>Reason for the order</legend>"):page.index("</fieldset>")]
    main = fieldset.split('id="other-reasons"')[0]
    assert "(qualifying indication)" in main
    assert all("qualifying indication" not in label for label in
               re.findall(r'<label for="other-reason-\d+">([^<]+)</label>', fieldset))


def test_preview_shows_the_decision_words_for_the_chosen_start_and_names_the_patient_on_sign(app, client):
    lid, page = review(app, client, "ldn-tramadol-5-days")
    response = client.post("/preview", data=MultiDict(form_fields(page, "plan-form")))
    previewed = response.get_data(as_text=True)
    assert text_of(previewed, "preview-decision") == "eligible"
    assert "Yes - LDN can be started" in section(previewed, "preview")
    assert "Sign and send to the EHR for " in previewed and "(born " in text_of(previewed, "sign-button")


def test_a_patient_with_5000_medication_records_gets_a_review_page_of_at_most_300_kb(app, client):
    lid, page = review(app, client, "ldn-big")
    size = len(page.encode())
    print(f"review page for 5,000 medication records: {size / 1024:.0f} KB")
    assert size <= 300 * 1024, size
    assert re.search(r"\d[\d,]* other medication records", page)
    assert page.count('<article class="drug') < 20  # grouped by drug, not one row per record


def test_the_full_record_list_sits_behind_a_drug_filter(app, client):
    lid, page = review(app, client, "ldn-big", drug="oxycodone")
    filtered = section(page, "drug-records")
    count = int(re.search(r"Records: oxycodone \((\d+)\)", filtered).group(1))
    assert count > 100 and filtered.count("<tr id=") == count
