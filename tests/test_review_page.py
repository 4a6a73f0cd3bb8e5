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
from fake_ehr import FULL_SCOPE, FakeEhr, form_fields, launch
from werkzeug.datastructures import MultiDict

from smart_app import create_app
from smart_app.clinical.model import Assessment, Decision, Finding, Severity
from smart_app.errors import FhirAuthError
from smart_app.review import fold, long_date, summarize
from smart_app.samples import SAMPLE_AS_OF, load_sample

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


CONTACTS = {
    "Practitioner/prac-1": {"resourceType": "Practitioner", "id": "prac-1", "name": [
        {"prefix": ["Dr."], "given": ["Ada"], "family": "Lovelace"}],
        "telecom": [{"system": "phone", "value": "+1 555 0100"}]},
    "Organization/clinic-1": {"resourceType": "Organization", "id": "clinic-1", "name": "Riverside Pain Clinic",
                              "telecom": [{"system": "phone", "value": "+1 555 0199"}],
                              "address": [{"line": ["1 River Street"], "city": "Springfield"}]},
}


class BigEhr(FakeEhr):
    """The sample patients plus 'ldn-big': 5,000 medication records (bench/bench_assessment.py); single reads
    of the patient (with a managing clinic), the prescriber and the clinic unless `contacts_readable` is off."""

    contacts_readable = True

    def __init__(self):
        super().__init__()
        self.contact_reads: list[str] = []

    def factory(self, config, iss, token_provider):
        gateway = super().factory(config, iss, token_provider)
        read = gateway.read_patient_record

        def read_one(resource_type, resource_id):
            if resource_type == "Patient":
                patient = load_sample(resource_id)["entry"][0]["resource"]
                return {**patient, "managingOrganization": {"reference": "Organization/clinic-1"}}
            self.contact_reads.append(f"{resource_type}/{resource_id}")
            if self.contacts_readable and f"{resource_type}/{resource_id}" in CONTACTS:
                return CONTACTS[f"{resource_type}/{resource_id}"]
            raise FhirAuthError("403 on read")
        gateway.read = read_one

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
def ehr():
    return BigEhr()


@pytest.fixture
def app(ehr):
    flask_app = create_app({"ALLOWED_ISSUERS": ISS, "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
                            "TODAY": SAMPLE_AS_OF.isoformat(), "SESSION_STORE": "memory", "SECRET_KEY": "k" * 32})
    flask_app.extensions["gateway_factory"] = ehr.factory
    return flask_app


@pytest.fixture
def client(app):
    return app.test_client()


def review(app, client, patient, scope=FULL_SCOPE, **query):
    lid = launch(app, client, patient, scope=scope)
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
    rows = re.findall(r'<li class="drug cls-opioid"', history)
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


def test_reason_choices_are_the_r3_indications_and_every_other_condition_sits_under_other(app, client):
    _, page = review(app, client, "ldn-crohns-fibromyalgia")
    fieldset = page[page.index("<legend>Reason for the order</legend>"):page.index("</fieldset>")]
    main, other = fieldset.split('id="other-reasons"')
    assert re.findall(r'<label for="reason-\d+">([^<]+)</label>', main) == ["Fibromyalgia (qualifying indication)"]
    assert re.findall(r'<label for="other-reason-\d+">([^<]+)</label>', other) == [
        "Crohn&#39;s disease (recommended against, R4)"]
    assert re.search(r'<div id="other-reason-field" hidden>', other)  # shown once an other reason is ticked
    assert re.search(r'<div id="override-field" hidden>', page)


def plan_form(page: str, **text) -> MultiDict:
    return MultiDict([*form_fields(page, "plan-form"), *text.items()])


def test_an_other_reason_without_free_text_is_refused_with_a_clear_message_and_nothing_written(app, client, ehr):
    lid, page = review(app, client, "ldn-no-indication")
    hypertension = "Condition/ldn-no-indication-cond-1"
    fields = plan_form(page)
    fields.setlist("reason", [hypertension])
    response = client.post("/preview", data=fields)
    assert "Other reason (Essential hypertension) is not a qualifying indication (R3): type why LDN is ordered" \
        in html.unescape(response.get_data(as_text=True))
    assert 'id="sign-form"' not in response.get_data(as_text=True)
    signed = client.post("/sign", data=MultiDict([*fields.items(multi=True)]))
    assert signed.status_code == 400 and "type why LDN is ordered" in signed.get_data(as_text=True)
    assert ehr.written_for("ldn-no-indication") == []
    assert '<div id="other-reason-field" >' in signed.get_data(as_text=True)  # shown again, to be filled in


def test_an_other_reason_with_free_text_is_signed_and_the_text_goes_on_the_order(app, client, ehr):
    _, page = review(app, client, "ldn-no-indication")
    fields = plan_form(page, other_reason="Neuropathic pain after shingles, not yet coded")
    fields.setlist("reason", ["Condition/ldn-no-indication-cond-1"])
    previewed = client.post("/preview", data=fields).get_data(as_text=True)
    assert client.post("/sign", data=MultiDict(form_fields(previewed, "sign-form"))).status_code == 303
    order = next(r for ref, r in ehr.stored.items() if ref.startswith("MedicationRequest/"))
    assert any("Neuropathic pain after shingles" in n["text"] and "(R3)" in n["text"] for n in order["note"])


def test_a_recommended_against_reason_needs_the_r4_justification_as_well_as_the_free_text(app, client, ehr):
    _, page = review(app, client, "ldn-crohns-alone")
    assert '<div id="override-field" >' in page and '<div id="other-reason-field" >' in page  # Crohn's is chosen
    only_text = client.post("/sign", data=plan_form(page, other_reason="Patient's choice after discussion"))
    assert only_text.status_code == 400 and "recommended against for the chosen reason (R4)" in only_text.get_data(
        as_text=True)
    only_r4 = client.post("/sign", data=plan_form(page, override_reason="Discussed the evidence"))
    assert only_r4.status_code == 400 and "type why LDN is ordered" in only_r4.get_data(as_text=True)
    assert ehr.written_for("ldn-crohns-alone") == []
    both = plan_form(page, other_reason="Patient's choice after discussion", override_reason="Discussed the evidence")
    assert client.post("/sign", data=both).status_code == 303
    assert ehr.written_for("ldn-crohns-alone")


def test_preview_shows_the_decision_words_for_the_chosen_start_and_names_the_patient_on_sign(app, client):
    lid, page = review(app, client, "ldn-tramadol-5-days")
    response = client.post("/preview", data=MultiDict(form_fields(page, "plan-form")))
    previewed = response.get_data(as_text=True)
    assert text_of(previewed, "preview-decision") == "eligible"
    assert "Yes - LDN can be started" in section(previewed, "preview")
    assert "Sign and send to the EHR for " in previewed and "(born " in text_of(previewed, "sign-button")


def history_row(page: str, drug: str) -> str:
    history = section(page, "opioid-history")
    start = history.index('<h3 id="drug-', history.index(f">{drug} <span") - 40)
    return history[start:history.index("</li>", start)]


def facts(row: str) -> dict[str, str]:
    return {dt: html.unescape(re.sub(r"<[^>]+>", "", dd)).strip()
            for dt, dd in re.findall(r"<dt>([^<]+)</dt><dd[^>]*>(.*?)</dd>", row, re.S)}


def test_an_opioid_row_shows_the_last_supply_the_prescriber_and_the_mme_per_day_with_how_it_was_computed(app, client):
    _, page = review(app, client, "ldn-oxycodone-active")
    row = history_row(page, "oxycodone hydrochloride")
    shown = facts(row)
    assert shown["Days' supply"] == "30 days (order)"
    assert shown["Prescriber"] == "Dana Whitfield, MD"
    assert shown["MME/day"] == "up to 30 (as needed)"  # 5 mg every 6 hours = 20 mg/day x 1.5
    assert "20 mg/day; x 1.5 (oxycodone, CDC 2022)" in html.unescape(row)


def test_a_patch_and_a_liquid_get_their_mme_per_day_from_strength_and_sig(app, client):
    _, patch = review(app, client, "ldn-fentanyl-patch-contained")
    assert facts(history_row(patch, "fentanyl"))["MME/day"] == "60"
    _, liquid = review(app, client, "ldn-methadone-oud")
    assert facts(history_row(liquid, "methadone hydrochloride"))["MME/day"] == "376"  # 80 mg/day x 4.7


def test_without_a_sig_the_mme_is_a_dash_with_the_reason_and_supply_and_prescriber_say_not_recorded(app, client):
    _, page = review(app, client, "ldn-tramadol-5-days")
    row = history_row(page, "tramadol hydrochloride")
    shown = facts(row)
    assert shown["MME/day"] == "-"
    assert shown["Days' supply"] == "not recorded (statement)" and shown["Prescriber"] == "not recorded"
    assert "no sig (dosage instruction) recorded" in row


def test_a_dispense_gives_its_days_supply(app, client):
    _, page = review(app, client, "ldn-dispense-only-hydrocodone")
    assert facts(history_row(page, "hydrocodone bitartrate"))["Days' supply"] == "5 days (dispense)"


def test_a_patient_with_5000_medication_records_gets_a_review_page_of_at_most_300_kb(app, client):
    lid, page = review(app, client, "ldn-big")
    size = len(page.encode())
    print(f"review page for 5,000 medication records: {size / 1024:.0f} KB")
    assert size <= 300 * 1024, size
    assert re.search(r"\d[\d,]* other medication records", page)
    assert page.count('<li class="drug') < 20  # grouped by drug, not one row per record


def test_the_full_record_list_sits_behind_a_drug_filter(app, client):
    lid, page = review(app, client, "ldn-big", drug="oxycodone")
    filtered = section(page, "drug-records")
    count = int(re.search(r"Records: oxycodone \((\d+)\)", filtered).group(1))
    assert count > 100 and filtered.count("<tr id=") == count


HANDOUT_SCOPE = f"{FULL_SCOPE} user/Practitioner.r user/Organization.r"


def signed_handout(app, client, patient="ldn-fibromyalgia", scope=HANDOUT_SCOPE):
    lid, page = review(app, client, patient, scope)
    previewed = client.post("/preview", data=MultiDict(form_fields(page, "plan-form"))).get_data(as_text=True)
    done = client.post("/sign", data=MultiDict(form_fields(previewed, "sign-form")))
    assert done.status_code == 303, done.get_data(as_text=True)[:500]
    confirmation = client.get(done.headers["Location"]).get_data(as_text=True)
    link = html.unescape(re.search(r'id="handout-link" href="([^"]+)"', confirmation).group(1))
    response = client.get(link)
    assert response.status_code == 200
    return lid, link, response.get_data(as_text=True)


def test_the_handout_names_the_patient_prescriber_clinic_doses_dates_and_what_to_do(app, client):
    _, _, page = signed_handout(app, client)
    main = html.unescape(re.sub(r"<[^>]+>", " ", page[page.index("<main"):page.index("</main>")]))
    text = " ".join(main.split())
    assert "Maria Elena Alvarez , born Wednesday 12 April 1978" in text
    assert "Dr. Ada Lovelace" in text and "+1 555 0100" in text
    assert "Riverside Pain Clinic" in text and "+1 555 0199" in text and "1 River Street, Springfield" in text
    assert "Your first dose is on Thursday 15 January 2026" in text
    assert re.findall(r"\b(\d(?:\.\d)?) mg\b", text) == ["1.5", "3", "4.5"]
    assert "Book your review between Thursday 12 March 2026 and Thursday 9 April 2026" in text
    for words in ("If you miss a dose: skip it", "vivid dreams", "headache", "signs of withdrawal",
                  "your pain gets worse", "Do not take opioid painkillers", "stop LDN 2-3 days before"):
        assert words in text, words
    for fhir_id in ("Patient/", "MedicationRequest/", "CarePlan/", "prac-1", "clinic-1", "ldn-fibromyalgia"):
        assert fhir_id not in main, fhir_id


def test_the_handout_leaves_write_in_lines_when_prescriber_and_clinic_cannot_be_read(app, client, ehr):
    ehr.contacts_readable = False
    _, _, page = signed_handout(app, client)
    assert page.count("(write the phone number here)") == 2
    assert "Lovelace" not in page and "Riverside" not in page
    assert sorted(ehr.contact_reads) == ["Organization/clinic-1", "Practitioner/prac-1"]  # one read each


def test_without_the_practitioner_and_organization_grants_the_handout_reads_neither_and_leaves_lines(app, client,
                                                                                                       ehr):
    _, _, page = signed_handout(app, client, scope=FULL_SCOPE)
    assert ehr.contact_reads == []
    assert page.count("(write the phone number here)") == 2 and "Lovelace" not in page


def test_the_handout_belongs_to_its_launch(app, client):
    lid, link, _ = signed_handout(app, client)
    other = launch(app, client, "ldn-crps")
    response = client.get(link.replace(lid, other))
    assert response.status_code == 400 and "Maria" not in response.get_data(as_text=True)
