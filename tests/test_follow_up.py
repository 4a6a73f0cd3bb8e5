"""Issue 12: the baseline pain score, the 8-12 week follow-up and the recorded review, on a live sekmet server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from fake_ehr import ISS, form_fields, launch
from werkzeug.datastructures import MultiDict

from smart_app.clinical.model import TitrationRequest
from smart_app.clinical.rules.r6_follow_up import Review, ReviewWindow, pain_score
from smart_app.config import Settings
from smart_app.errors import FhirServerError, InputError
from smart_app.fhir.build import ORDER_IDENTIFIER_SYSTEM
from smart_app.fhir.gateway import FhirGateway
from smart_app.fhir.load import load_bundles
from smart_app.fhir.plan import find_written_plan, read_plan
from smart_app.fhir.validate import validate
from smart_app.fhir.write import place_order
from smart_app.follow_up import follow_up, record_review
from smart_app.samples import SAMPLE_AS_OF, load_sample
from smart_app.services import SignRequest, assess_data, plan_order, read_patient

pytestmark = pytest.mark.live
START = SAMPLE_AS_OF + timedelta(days=3)
WEEK_9 = START + timedelta(days=63)
LOINC_PAIN = ("http://loinc.org", "72514-3")
ORDER_SYSTEM = "https://fhir.ldn-app.org/identifier/ldn-order"
PRESCRIBER = "Practitioner/prac-1"


@pytest.fixture(scope="module")
def server():
    """A sekmet of this module's own: the plans written here stay out of other modules' charts."""
    from smart_app.sandbox.fhir_server import start_fhir_server

    running = start_fhir_server()
    try:
        yield running
    finally:
        running.stop()


def gateway(server) -> FhirGateway:
    return FhirGateway.from_config(Settings(), server.base_url, None)


def search(server, rtype: str, **params) -> list[dict]:
    bundle = requests.get(f"{server.base_url}/{rtype}", params={**params, "_count": 100},
                          headers={"Accept": "application/fhir+json"}, timeout=10).json()
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


def read(server, ref: str) -> dict:
    return requests.get(f"{server.base_url}/{ref}", headers={"Accept": "application/fhir+json"}, timeout=10).json()


def sign(server, patient: str, baseline: int | None = 7) -> dict:
    """Load the sample patient and sign the default plan from START; the transaction that was sent."""
    load_bundles(server.base_url, {patient: load_sample(patient)})
    data, problems = read_patient(gateway(server), patient)
    req = SignRequest(titration=TitrationRequest(start=START), requester=PRESCRIBER, baseline_pain=baseline)
    _, bundle = plan_order(data, req, as_of=SAMPLE_AS_OF, data_problems=problems)
    place_order(gateway(server), bundle)
    return bundle


def review(server, patient: str, decision: str, **changes):
    data, problems = read_patient(gateway(server), patient)
    assessment = assess_data(data, as_of=WEEK_9, data_problems=problems)
    fields = {"pain": 3, "benefit": "clear", "side_effects": ("vivid-dreams",), "side_effect_text": "", "decision":
              decision, **changes}
    return record_review(gateway(server), patient, Review(**fields), assessment, as_of=WEEK_9,
                         requester=PRESCRIBER, recorded=datetime(2026, 3, 20, 10, tzinfo=UTC))


def ours(resources: list[dict]) -> list[dict]:
    return [r for r in resources if any(i.get("system") == ORDER_SYSTEM for i in r.get("identifier", []))]


def pain_observations(server, patient: str) -> list[dict]:
    return [o for o in search(server, "Observation", patient=patient)
            if any((c["system"], c["code"]) == LOINC_PAIN for c in o["code"]["coding"])]


def test_a_baseline_pain_score_is_written_with_the_plan_and_the_care_plan_refers_to_it(server):
    bundle = sign(server, "ldn-corneal-pain", baseline=7)

    [obs] = pain_observations(server, "ldn-corneal-pain")
    assert obs["valueInteger"] == 7 and obs["status"] == "final"
    assert obs["performer"] == [{"reference": PRESCRIBER}] and obs["effectiveDateTime"]
    [plan] = ours(search(server, "CarePlan", patient="ldn-corneal-pain"))
    assert plan["supportingInfo"][0]["reference"] == f"Observation/{obs['id']}"

    place_order(gateway(server), bundle)  # the same signed plan sent again
    assert len(pain_observations(server, "ldn-corneal-pain")) == 1
    assert len(ours(search(server, "CarePlan", patient="ldn-corneal-pain"))) == 1


def test_signing_without_a_baseline_writes_no_observation(server):
    sign(server, "ldn-spondylosis", baseline=None)
    assert pain_observations(server, "ldn-spondylosis") == []
    [plan] = ours(search(server, "CarePlan", patient="ldn-spondylosis"))
    assert "supportingInfo" not in plan


@pytest.mark.parametrize("raw", ["11", "-1", "7.5", "seven"])
def test_a_baseline_outside_the_0_to_10_scale_is_refused(raw):
    score, problem = pain_score(raw, "Baseline pain score")
    assert score is None and "0 to 10" in problem


def test_at_week_9_the_follow_up_shows_the_plan_today_and_the_open_review_window(server):
    sign(server, "ldn-diabetic-neuropathy", baseline=6)
    gw = gateway(server)
    plan = find_written_plan(gw, "ldn-diabetic-neuropathy")
    data, problems = read_patient(gw, "ldn-diabetic-neuropathy")
    shown = follow_up(plan, data, assess_data(data, as_of=WEEK_9, data_problems=problems), problems, WEEK_9)

    assert shown.plan.start == START and shown.plan.baseline == 6
    assert shown.standing.day == 64 and shown.standing.step.dose_mg == 4.5
    assert shown.standing.window is ReviewWindow.DUE
    assert shown.standing.review == (START + timedelta(days=56), START + timedelta(days=84))
    assert shown.alerts == ()
    assert shown.dispenses == ()
    before = follow_up(plan, data, assess_data(data, as_of=START, data_problems=problems), problems,
                       START + timedelta(days=20))
    assert before.standing.window is ReviewWindow.NOT_YET_DUE and before.standing.step.dose_mg == 3.0
    late = follow_up(plan, data, assess_data(data, as_of=WEEK_9, data_problems=problems), problems,
                     START + timedelta(days=90))
    assert late.standing.window is ReviewWindow.OVERDUE


def put(server, resource: dict) -> None:
    requests.put(f"{server.base_url}/{resource['resourceType']}/{resource['id']}", json=resource,
                 headers={"Content-Type": "application/fhir+json"}, timeout=10).raise_for_status()


def ldn_dispense(patient: str, rid: str, handed_over) -> dict:
    return {"resourceType": "MedicationDispense", "id": rid, "status": "completed",
            "subject": {"reference": f"Patient/{patient}"}, "whenHandedOver": handed_over.isoformat(),
            "daysSupply": {"value": 30, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"},
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": "7243", "display": "naltrexone"}],
                                          "text": "Naltrexone 1.5 mg compounded capsule"}}


def test_the_follow_up_lists_the_ldn_dispenses_since_the_order_and_not_older_ones(server):
    sign(server, "ldn-refuted-crohns")
    put(server, ldn_dispense("ldn-refuted-crohns", "ldn-refuted-crohns-ldn-fill-1", START + timedelta(days=1)))
    put(server, ldn_dispense("ldn-refuted-crohns", "ldn-refuted-crohns-ldn-fill-old", SAMPLE_AS_OF - timedelta(
        days=400)))
    gw = gateway(server)
    data, problems = read_patient(gw, "ldn-refuted-crohns")
    shown = follow_up(find_written_plan(gw, "ldn-refuted-crohns"), data, assess_data(data, as_of=WEEK_9),
                      problems, WEEK_9)
    assert [(ref, when) for ref, _, when in shown.dispenses] == [
        ("MedicationDispense/ldn-refuted-crohns-ldn-fill-1", START + timedelta(days=1))]


def test_an_opioid_started_after_ldn_is_an_r2_alert_and_one_stopped_before_is_not(server):
    sign(server, "ldn-opioid-long-ago", baseline=5)
    gw = gateway(server)
    data, problems = read_patient(gw, "ldn-opioid-long-ago")
    plan = find_written_plan(gw, "ldn-opioid-long-ago")
    assert follow_up(plan, data, assess_data(data, as_of=WEEK_9), problems, WEEK_9).alerts == ()

    oxycodone = {"resourceType": "MedicationRequest", "id": "ldn-opioid-long-ago-oxy-new", "status": "active",
                 "intent": "order", "subject": {"reference": "Patient/ldn-opioid-long-ago"},
                 "authoredOn": (START + timedelta(days=30)).isoformat(),
                 "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                           "code": "1049621", "display": "oxycodone 5 MG Oral Tablet"}],
                                               "text": "oxycodone 5 mg tablet"}}
    put(server, oxycodone)
    data, problems = read_patient(gw, "ldn-opioid-long-ago")
    alerts = follow_up(plan, data, assess_data(data, as_of=WEEK_9), problems, WEEK_9).alerts

    assert [(a.rule, a.code, a.resources) for a in alerts] == [
        ("R2", "opioid-since-start", ("MedicationRequest/ldn-opioid-long-ago-oxy-new",))]
    assert "block each other" in alerts[0].text


def test_while_an_opioid_started_after_ldn_is_current_continue_and_adjust_are_refused_and_stop_is_not(server):
    from smart_app.errors import WriteRefused

    sign(server, "ldn-ms", baseline=6)
    put(server, {"resourceType": "MedicationRequest", "id": "ldn-ms-tramadol", "status": "active",
                 "intent": "order", "subject": {"reference": "Patient/ldn-ms"},
                 "authoredOn": (START + timedelta(days=50)).isoformat(),
                 "medicationCodeableConcept": {"text": "tramadol 50 mg tablet"}})
    adjust = TitrationRequest(start=WEEK_9, start_dose_mg=1.5, step_mg=1.5, interval_days=7, target_mg=3.0)
    for decision, extra in (("continue", {}), ("adjust", {"titration": adjust})):
        with pytest.raises(WriteRefused) as refused:
            review(server, "ldn-ms", decision, **extra)
        assert "nothing was written" in refused.value.user_message and "tramadol" in refused.value.user_message
    assert [o["status"] for o in ours(search(server, "MedicationRequest", patient="ldn-ms"))] == ["active"]
    assert len(pain_observations(server, "ldn-ms")) == 1  # the baseline only

    review(server, "ldn-ms", "stop", benefit="none", stop_reason="Tramadol started for a fracture")
    assert [o["status"] for o in ours(search(server, "MedicationRequest", patient="ldn-ms"))] == [
        "stopped"]


def test_continue_replaces_the_titration_order_with_a_maintenance_order_and_completes_the_review(server):
    sign(server, "ldn-fibromyalgia", baseline=7)
    [titration] = ours(search(server, "MedicationRequest", patient="ldn-fibromyalgia"))

    outcome = review(server, "ldn-fibromyalgia", "continue", side_effect_text="mild headache in week 1")

    orders = {o["id"]: o for o in ours(search(server, "MedicationRequest", patient="ldn-fibromyalgia"))}
    assert orders[titration["id"]]["status"] == "completed"
    [maintenance] = [o for o in orders.values() if o["id"] != titration["id"]]
    assert maintenance["status"] == "active"
    assert maintenance["priorPrescription"]["reference"] == f"MedicationRequest/{titration['id']}"
    assert [d["doseAndRate"][0]["doseQuantity"]["value"] for d in maintenance["dosageInstruction"]] == [4.5]
    assert maintenance["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"] == {"start": WEEK_9.isoformat()}
    [plan] = ours(search(server, "CarePlan", patient="ldn-fibromyalgia"))
    assert plan["status"] == "active"
    [activity] = [a for a in plan["activity"] if a.get("detail", {}).get("code", {}).get("coding", [{}])[0].get(
        "code") == "efficacy-review"]
    assert activity["detail"]["status"] == "completed"
    assert {c["coding"][0]["code"] for c in activity["outcomeCodeableConcept"]} == {
        "benefit-clear", "continue", "vivid-dreams"}
    assert activity["progress"][0]["text"] == "Side effects: mild headache in week 1"
    review_obs = read(server, activity["outcomeReference"][0]["reference"])
    assert review_obs["valueInteger"] == 3
    assert f"MedicationRequest/{maintenance['id']}" in [a.get("reference", {}).get("reference")
                                                         for a in plan["activity"]]
    provenance = read(server, next(r for r in outcome.refs if r.startswith("Provenance/")))
    assert {t["reference"] for t in provenance["target"]} >= {f"CarePlan/{plan['id']}",
                                                               f"MedicationRequest/{titration['id']}"}

    again = review(server, "ldn-fibromyalgia", "continue", side_effect_text="mild headache in week 1")
    assert again.earlier and again.key == outcome.key
    assert len(ours(search(server, "MedicationRequest", patient="ldn-fibromyalgia"))) == 2
    assert len(pain_observations(server, "ldn-fibromyalgia")) == 2  # baseline + review, once each
    written = [plan, maintenance, review_obs, *pain_observations(server, "ldn-fibromyalgia"), provenance]
    assert [f"{r['resourceType']}: {p}" for r in written for p in validate(r)] == []
    assert validate({**review_obs, "valueInteger": 11}) != []  # the profile is applied to what was written
    assert find_written_plan(gateway(server), "ldn-fibromyalgia").review is None  # nothing left to review


def test_stop_stops_the_order_and_completes_the_care_plan_with_the_reason(server):
    sign(server, "ldn-crps", baseline=8)
    review(server, "ldn-crps", "stop", benefit="none", pain=8, stop_reason="No benefit after 9 weeks")

    [order] = ours(search(server, "MedicationRequest", patient="ldn-crps"))
    assert order["status"] == "stopped" and order["statusReason"]["text"] == "No benefit after 9 weeks"
    [plan] = ours(search(server, "CarePlan", patient="ldn-crps"))
    assert plan["status"] == "completed" and plan["period"]["end"] == "2026-03-20"
    assert "No benefit after 9 weeks" in plan["note"][-1]["text"]
    assert [str(p) for p in validate(plan)] == [] and [str(p) for p in validate(order)] == []
    assert find_written_plan(gateway(server), "ldn-crps") is None


def test_stop_without_a_reason_is_refused_and_writes_nothing(server):
    sign(server, "ldn-naloxone-rescue")
    with pytest.raises(InputError, match="give the reason"):
        review(server, "ldn-naloxone-rescue", "stop", benefit="none")
    assert [o["status"] for o in ours(search(server, "MedicationRequest", patient="ldn-naloxone-rescue"))] == [
        "active"]


def test_adjust_writes_a_new_titration_inside_r1_and_refuses_one_outside(server):
    sign(server, "ldn-low-back-pain")
    too_high = TitrationRequest(start=WEEK_9, start_dose_mg=3, step_mg=1.5, interval_days=14, target_mg=6)
    with pytest.raises(InputError, match="above the LDN maximum"):
        review(server, "ldn-low-back-pain", "adjust", benefit="partial", titration=too_high)
    assert len(ours(search(server, "MedicationRequest", patient="ldn-low-back-pain"))) == 1

    slower = TitrationRequest(start=WEEK_9, start_dose_mg=1, step_mg=0.5, interval_days=14, target_mg=2)
    review(server, "ldn-low-back-pain", "adjust", benefit="partial", titration=slower)

    orders = ours(search(server, "MedicationRequest", patient="ldn-low-back-pain"))
    [new] = [o for o in orders if o["status"] == "active"]
    assert [d["doseAndRate"][0]["doseQuantity"]["value"] for d in new["dosageInstruction"]] == [1, 1.5, 2]
    assert [o["status"] for o in orders if o["id"] != new["id"]] == ["completed"]
    plan = find_written_plan(gateway(server), "ldn-low-back-pain")  # the adjustment books its own review
    assert plan.review == (WEEK_9 + timedelta(days=56), WEEK_9 + timedelta(days=84))

    later = WEEK_9 + timedelta(days=60)
    data, problems = read_patient(gateway(server), "ldn-low-back-pain")
    record_review(gateway(server), "ldn-low-back-pain", Review(2, "clear", (), "", "continue"),
                  assess_data(data, as_of=later, data_problems=problems), as_of=later, requester=PRESCRIBER)
    [care_plan] = ours(search(server, "CarePlan", patient="ldn-low-back-pain"))
    reviews = [a for a in care_plan["activity"] if a.get("detail", {}).get("code", {}).get("coding", [{}])[0].get(
        "code") == "efficacy-review"]
    assert [r["detail"]["status"] for r in reviews] == ["completed", "completed"]
    assert [{c["coding"][0]["code"] for c in r["outcomeCodeableConcept"]} for r in reviews] == [
        {"benefit-partial", "adjust", "vivid-dreams"}, {"benefit-clear", "continue"}]  # each keeps its outcome
    assert [str(p) for p in validate(care_plan)] == []


# --- the pages, in process against the same sekmet ---------------------------------------------------------

@pytest.fixture
def web(server):
    """The app at week 9, every launch's gateway on this module's sekmet (no token)."""
    from smart_app import create_app

    app = create_app({"ALLOWED_ISSUERS": ISS, "PUBLIC_BASE_URL": "http://127.0.0.1:8000", "TODAY": WEEK_9.isoformat(),
                      "SESSION_STORE": "memory", "SECRET_KEY": "k" * 32})
    app.extensions["gateway_factory"] = lambda settings, iss, provider: FhirGateway.from_config(
        settings, server.base_url, None)
    return app, app.test_client()


def open_follow_up(web, patient: str) -> tuple[str, str]:
    app, client = web
    lid = launch(app, client, patient)
    first = client.get("/", query_string={"lid": lid})
    assert first.status_code == 303 and first.headers["Location"].startswith("/follow-up?"), first.status_code
    page = client.get(first.headers["Location"])
    assert page.status_code == 200
    return lid, page.get_data(as_text=True)


def submit_review(web, page: str, **answers):
    fields = [(k, v) for k, v in form_fields(page, "review-form") if k not in answers and k != "side_effect"]
    fields += [(k, v) for k, vs in answers.items() for v in (vs if isinstance(vs, list) else [vs])]
    return web[1].post("/follow-up/review", data=MultiDict(fields))


def test_the_follow_up_page_refuses_a_stop_without_a_reason_and_oversized_notes_and_writes_nothing(server, web):
    sign(server, "ldn-washout-complete-today")
    lid, page = open_follow_up(web, "ldn-washout-complete-today")
    assert 'id="review-window">due<' in page and 'id="baseline">7/10<' in page

    no_reason = submit_review(web, page, benefit="none", decision="stop", pain="8")
    too_long = submit_review(web, page, benefit="clear", decision="continue", side_effect_text="x" * 1001)
    off_scale = submit_review(web, page, benefit="clear", decision="continue", pain="12")

    assert no_reason.status_code == 400 and "give the reason" in no_reason.get_data(as_text=True)
    assert too_long.status_code == 400 and "at most 1000 characters" in too_long.get_data(as_text=True)
    assert "x" * 1001 not in too_long.get_data(as_text=True)
    assert off_scale.status_code == 400 and "0 to 10" in off_scale.get_data(as_text=True)
    assert [o["status"] for o in ours(search(server, "MedicationRequest", patient="ldn-washout-complete-today"))] == [
        "active"]
    assert len(pain_observations(server, "ldn-washout-complete-today")) == 1  # the baseline only


def test_the_follow_up_page_records_an_adjustment_and_refuses_one_above_r1(server, web):
    sign(server, "ldn-codeine-cough-syrup")
    _, page = open_follow_up(web, "ldn-codeine-cough-syrup")
    above = submit_review(web, page, benefit="partial", decision="adjust", target="6", pain="5")
    assert above.status_code == 400 and "above the LDN maximum" in above.get_data(as_text=True)
    assert len(ours(search(server, "MedicationRequest", patient="ldn-codeine-cough-syrup"))) == 1

    done = submit_review(web, page, benefit="partial", decision="adjust", start_dose="1", step="0.5", target="3",
                         pain="5", side_effect=["headache", "nausea"])
    assert done.status_code == 200 and 'id="review-decision">adjust<' in done.get_data(as_text=True)
    orders = ours(search(server, "MedicationRequest", patient="ldn-codeine-cough-syrup"))
    assert sorted(o["status"] for o in orders) == ["active", "completed"]


def test_an_opioid_started_after_ldn_is_an_alert_on_the_follow_up_page(server, web):
    sign(server, "ldn-crohns-fibromyalgia")
    put(server, {"resourceType": "MedicationStatement", "id": "ldn-crohns-fibromyalgia-tramadol-new",
                 "status": "active", "subject": {"reference": "Patient/ldn-crohns-fibromyalgia"},
                 "effectivePeriod": {"start": (START + timedelta(days=40)).isoformat()},
                 "medicationCodeableConcept": {"text": "tramadol 50 mg tablet"}})
    _, page = open_follow_up(web, "ldn-crohns-fibromyalgia")
    assert 'id="alerts"' in page and 'data-code="opioid-since-start"' in page and "tramadol" in page


def test_a_review_built_on_a_plan_changed_since_it_was_read_is_refused_whole_by_if_match(server):
    from smart_app.errors import FhirServerError
    from smart_app.fhir.review import review_bundle

    sign(server, "ldn-loperamide", baseline=None)
    gw = gateway(server)
    plan = find_written_plan(gw, "ldn-loperamide")
    stale = review_bundle(plan, Review(4, "clear", (), "", "stop", "stale page"), "k" * 32,
                          datetime(2026, 3, 20, tzinfo=UTC), PRESCRIBER, server.base_url, None)
    put(server, {**plan.care_plan, "description": "edited in the EHR meanwhile"})  # version 2

    with pytest.raises(FhirServerError) as refused:
        gw.transaction(stale)
    assert refused.value.http_status in (409, 412)
    assert [o["status"] for o in ours(search(server, "MedicationRequest", patient="ldn-loperamide"))] == ["active"]
    assert pain_observations(server, "ldn-loperamide") == []


def test_without_transaction_support_the_review_is_refused_and_nothing_is_written(server):
    from smart_app.errors import WriteRefused

    sign(server, "ldn-opioid-entered-in-error")
    gw = gateway(server)
    gw.supports_transaction = lambda: False
    data, problems = read_patient(gw, "ldn-opioid-entered-in-error")
    with pytest.raises(WriteRefused):
        record_review(gw, "ldn-opioid-entered-in-error", Review(3, "clear", (), "", "continue"),
                      assess_data(data, as_of=WEEK_9), as_of=WEEK_9, requester=PRESCRIBER)
    assert [o["status"] for o in ours(search(server, "MedicationRequest", patient="ldn-opioid-entered-in-error"))] == [
        "active"]


def test_a_care_plan_of_ours_with_no_start_date_is_refused_with_a_message_not_a_crash():
    """No period.start and no readable order steps: the follow-up says so instead of failing on a missing date."""
    care_plan = {"resourceType": "CarePlan", "id": "cp1", "status": "active", "activity": [],
                 "identifier": [{"system": ORDER_IDENTIFIER_SYSTEM, "value": "k" * 32}]}
    with pytest.raises(FhirServerError) as err:
        read_plan(None, care_plan)
    assert "no order key or no start date" in err.value.user_message
