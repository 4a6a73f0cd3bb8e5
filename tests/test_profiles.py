"""The conformance contract: profiles, terminology, CapabilityStatement, examples; the validator proven both ways."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fhirpathpy import compile as compile_fhirpath

from fhir_profiles.examples import generate
from smart_app.cli import main
from smart_app.clinical.model import TitrationRequest
from smart_app.errors import InputError, WriteRefused
from smart_app.fhir.build import PROFILE_CAREPLAN, PROFILE_MEDICATION_REQUEST, PROFILE_PAIN_OBSERVATION
from smart_app.fhir.models import element_exists, r4_problems
from smart_app.fhir.parse import patients_from_bundle
from smart_app.fhir.validate import PYTHON_CHECKS, load_profiles, profile_for, resolver_for, validate, valueset_ids
from smart_app.samples import SAMPLE_AS_OF, load_expected, load_sample, sample_ids
from smart_app.services import SignRequest, plan_order
from smart_app.smart.scopes import EHR_LAUNCH, STANDALONE_LAUNCH, requested_scopes

ROOT = Path(__file__).resolve().parents[1] / "fhir_profiles"
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
START = date(2026, 1, 20)
RECORDED = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
ACTIVITY = "https://fhir.ldn-app.org/CodeSystem/ldn-careplan-activity"


def build(pid: str) -> dict | None:
    """The transaction for a sample, signed as the decision requires; None when nothing can be built."""
    decision = load_expected()[pid]["decision"]
    req = SignRequest(titration=TitrationRequest(start=START), requester="Practitioner/dr-1",
                      override_reason="Discussed with the patient" if decision == "not-recommended" else None,
                      attestation="Checked the record by hand" if decision == "cannot-determine" else None)
    try:
        return plan_order(patients_from_bundle(load_sample(pid))[pid], req, as_of=SAMPLE_AS_OF,
                          recorded=RECORDED)[1]
    except WriteRefused:  # contraindicated
        return None
    except InputError:  # no indication to name as the reason (ldn-no-indication)
        return None

PLANNABLE = [pid for pid in sample_ids() if build(pid) is not None]


def problems(resource, resolver=None) -> list[str]:
    return [str(p) for p in validate(resource, resolver)]


# --- what the builders write is valid ----------------------------------------------------------------------

def test_most_sample_patients_can_be_planned_so_the_validation_below_covers_many_orders():
    assert len(PLANNABLE) >= 15
    assert "ldn-fibromyalgia" in PLANNABLE and "ldn-crohns-alone" in PLANNABLE and "ldn-unknown-code" in PLANNABLE
    assert "ldn-oxycodone-active" not in PLANNABLE


@pytest.mark.parametrize("pid", PLANNABLE)
def test_every_resource_built_for_a_plannable_sample_is_valid_r4_and_meets_its_profile(pid):
    bundle = build(pid)
    record = resolver_for(load_sample(pid))
    for entry in bundle["entry"]:
        assert r4_problems(entry["resource"]) == []
        assert problems(entry["resource"], {**record, **resolver_for(bundle)}) == []
    assert problems(bundle, record) == []
    assert [profile_for(e["resource"]) and profile_for(e["resource"])["url"] for e in bundle["entry"]] == [
        PROFILE_MEDICATION_REQUEST, PROFILE_CAREPLAN, None]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid_r4_and_meets_its_profile(path):
    example = json.loads(path.read_text(encoding="utf-8"))
    assert r4_problems(example) == []
    assert problems(example) == []
    assert problems(example, resolver_for(load_sample(generate.PATIENT))) == []


def test_committed_examples_equal_a_fresh_build():
    for name, resource in generate.examples().items():
        assert (ROOT / "examples" / name).read_text(encoding="utf-8") == generate.render(resource), name


def test_each_profile_has_a_valid_example():
    typed = {json.loads(p.read_text(encoding="utf-8"))["resourceType"] for p in EXAMPLES}
    assert {sd["type"] for sd in load_profiles().values()} <= typed and "Bundle" in typed


# --- the profiles themselves -------------------------------------------------------------------------------

PROFILES = sorted(load_profiles().values(), key=lambda sd: sd["id"])


def test_the_profiles_are_the_ones_the_builder_claims_in_meta_profile():
    assert set(load_profiles()) == {PROFILE_MEDICATION_REQUEST, PROFILE_CAREPLAN, PROFILE_PAIN_OBSERVATION}


@pytest.mark.parametrize("sd", PROFILES, ids=lambda sd: sd["id"])
def test_each_profile_is_a_valid_r4_constraint_on_the_core_resource(sd):
    assert r4_problems(sd) == []
    assert (sd["fhirVersion"], sd["derivation"], sd["kind"]) == ("4.0.1", "constraint", "resource")
    assert sd["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{sd['type']}"
    assert sd["url"] == f"https://fhir.ldn-app.org/StructureDefinition/{sd['id']}"


@pytest.mark.parametrize("sd", PROFILES, ids=lambda sd: sd["id"])
def test_every_differential_path_exists_in_the_r4_resource(sd):
    elements = sd["differential"]["element"]
    assert elements[0]["path"] == sd["type"]
    for element in elements:
        assert element["id"] == element["path"]
        assert element_exists(sd["type"], element["path"]), element["path"]
        assert element.get("min", 0) <= (float("inf") if element.get("max", "*") == "*" else int(element["max"]))


def test_element_exists_rejects_paths_that_are_not_in_r4():
    assert not element_exists("MedicationRequest", "MedicationRequest.dosage")
    assert not element_exists("MedicationRequest", "MedicationRequest.dosageInstruction.doseAndRate.dose[x].unitt")
    assert not element_exists("CarePlan", "MedicationRequest.status")
    assert element_exists("CarePlan", "CarePlan.activity.detail.scheduled[x]")


@pytest.mark.parametrize("sd", PROFILES, ids=lambda sd: sd["id"])
def test_every_invariant_is_an_error_with_human_text_and_fhirpath_that_compiles_or_a_named_python_check(sd):
    constraints = [c for e in sd["differential"]["element"] for c in e.get("constraint", [])]
    prefix = {"MedicationRequest": "ldn-mr-", "CarePlan": "ldn-cp-", "Observation": "ldn-ps-"}[sd["type"]]
    assert len({c["key"] for c in constraints}) == len(constraints)
    for c in constraints:
        assert c["key"].startswith(prefix) and c["severity"] == "error" and c["human"]
        compile_fhirpath(c["expression"])
        if c["key"] in PYTHON_CHECKS:
            assert "Python check" in c["human"]


@pytest.mark.parametrize("sd", PROFILES, ids=lambda sd: sd["id"])
def test_every_required_binding_names_one_of_our_valuesets(sd):
    for element in sd["differential"]["element"]:
        if "binding" in element:
            assert element["binding"]["strength"] == "required"
            assert valueset_ids(element["binding"]["valueSet"]), element["path"]


def test_the_order_reasons_valueset_is_the_indications_plus_the_r4_conditions():
    assert valueset_ids("https://fhir.ldn-app.org/ValueSet/ldn-order-reasons") == {
        "ldn-order-reasons", "ldn-indications", "ldn-recommended-against", "ldn-insufficient-evidence"}


@pytest.mark.parametrize("path", sorted(ROOT.glob("*/ValueSet-*.json")) + sorted(ROOT.glob("*/CodeSystem-*.json")),
                         ids=lambda p: p.name)
def test_every_valueset_and_codesystem_is_valid_r4_and_describes_its_scope(path):
    resource = json.loads(path.read_text(encoding="utf-8"))
    assert r4_problems(resource) == []
    assert resource["url"] == f"https://fhir.ldn-app.org/{resource['resourceType']}/{resource['id']}"
    assert len(resource.get("description", "")) > 40


def test_the_careplan_activity_codesystem_defines_every_code_the_builder_writes():
    codes = {c["code"] for c in json.loads((ROOT / "terminology/CodeSystem-ldn-careplan-activity.json").read_text())[
        "concept"]}
    cp = entries(build("ldn-fibromyalgia"))["CarePlan"]
    written = {c["code"] for a in cp["activity"] if "detail" in a for c in a["detail"]["code"]["coding"]}
    assert written == codes == {"efficacy-review", "withdrawal-monitoring", "side-effect-check", "procedure-hold"}


def test_the_careplan_activities_carry_the_codesystems_displays_so_the_plan_and_the_code_list_say_the_same():
    published = {c["code"]: c["display"] for c in json.loads(
        (ROOT / "terminology/CodeSystem-ldn-careplan-activity.json").read_text())["concept"]}
    cp = entries(build("ldn-fibromyalgia"))["CarePlan"]
    written = {c["code"]: c["display"] for a in cp["activity"] if "detail" in a for c in a["detail"]["code"]["coding"]}
    assert written == published
    assert published["efficacy-review"] == "LDN efficacy review (8-12 weeks)"


# --- CapabilityStatement and SMART registration -----------------------------------------------------------

def capability() -> dict:
    return json.loads((ROOT / "CapabilityStatement-ldn-app-client.json").read_text(encoding="utf-8"))


def test_capability_statement_is_a_valid_r4_client_requirements_statement():
    cs = capability()
    assert r4_problems(cs) == [] and problems(cs) == []
    assert (cs["kind"], cs["fhirVersion"], cs["format"], cs["rest"][0]["mode"]) == (
        "requirements", "4.0.1", ["json"], "client")
    assert cs["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert [i["code"] for i in cs["rest"][0]["interaction"]] == ["transaction"]


def test_capability_statement_lists_exactly_the_reads_and_conditional_creates_the_app_uses():
    resources = {r["type"]: r for r in capability()["rest"][0]["resource"]}
    assert set(resources) == {"Patient", "Condition", "MedicationRequest", "MedicationStatement",
                              "MedicationDispense", "Medication", "CarePlan", "Provenance", "Observation",
                              "Practitioner", "Organization"}  # the handout's prescriber and clinic: read only
    assert all([i["code"] for i in resources[t]["interaction"]] == ["read"] for t in ("Practitioner", "Organization"))
    for t in ("Condition", "MedicationStatement", "MedicationDispense"):
        assert {p["name"] for p in resources[t]["searchParam"]} == {"patient", "_count"}
    assert {p["name"] for p in resources["MedicationRequest"]["searchParam"]} == {"patient", "_count", "identifier"}
    for t in ("MedicationRequest", "MedicationStatement", "MedicationDispense"):
        assert resources[t]["searchInclude"] == [f"{t}:medication"]
    assert {p["name"] for p in resources["Medication"]["searchParam"]} == {"_id", "_count"}
    for t in ("MedicationRequest", "CarePlan", "Provenance", "Observation"):
        assert resources[t]["conditionalCreate"] is True
        assert "create" in [i["code"] for i in resources[t]["interaction"]]
    assert resources["MedicationRequest"]["supportedProfile"] == [PROFILE_MEDICATION_REQUEST]
    assert resources["CarePlan"]["supportedProfile"] == [PROFILE_CAREPLAN]


def test_registration_file_lists_the_scopes_the_app_requests_in_v2_and_v1_form():
    reg = json.loads((ROOT / "smart-app-registration.json").read_text(encoding="utf-8"))
    for form, caps in (("scopes_v2", ["permission-v2"]), ("scopes_v1", [])):
        requested = set(requested_scopes(caps, EHR_LAUNCH).split()) | set(
            requested_scopes(caps, STANDALONE_LAUNCH).split())
        assert set(reg[form]) == requested, form
    assert reg["scope"].split() == reg["scopes_v2"]
    assert reg["launch_uri"] == "https://ldn-app.example.org/launch"
    assert reg["redirect_uris"] == ["https://ldn-app.example.org/callback"]
    assert reg["jwks_uri"] == "https://ldn-app.example.org/.well-known/jwks.json"
    assert reg["token_endpoint_auth_methods"] == ["none", "client_secret_basic", "private_key_jwt"]


# --- broken instances: one per rule, each rejected with a message naming the element ------------------------

def entries(bundle: dict) -> dict[str, dict]:
    return {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}


GOOD = build("ldn-fibromyalgia")
RECORD = resolver_for(load_sample("ldn-fibromyalgia"), GOOD)
HYPERTENSION = {"resourceType": "Condition", "id": "htn", "subject": {"reference": "Patient/ldn-fibromyalgia"},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}],
                         "text": "Essential hypertension"}}


def dose(i):
    return lambda r: r["dosageInstruction"][i]["doseAndRate"][0]["doseQuantity"]


def review(r):
    return next(a["detail"] for a in r["activity"] if "detail" in a and a["detail"]["code"]["coding"][0]["code"]
                == "efficacy-review")


def without_activity(code):
    return lambda r: r.update(activity=[a for a in r["activity"] if "detail" not in a
                                        or a["detail"]["code"]["coding"][0]["code"] != code])


def set_(f, **values):
    return lambda r: f(r).update(values)


BROKEN = [
    # (name, resource, mutation, element path named in the message, rule)
    ("missing requester", "MedicationRequest", lambda r: r.pop("requester"), "MedicationRequest.requester",
     "cardinality"),
    ("missing identifier", "MedicationRequest", lambda r: r.pop("identifier"), "MedicationRequest.identifier",
     "cardinality"),
    ("identifier of another system", "MedicationRequest", lambda r: r["identifier"][0].update(system="urn:x"),
     "MedicationRequest", "ldn-mr-7"),
    ("missing authoredOn", "MedicationRequest", lambda r: r.pop("authoredOn"), "MedicationRequest.authoredOn",
     "cardinality"),
    ("status bogus", "MedicationRequest", lambda r: r.update(status="bogus"), "MedicationRequest.status", "r4-code"),
    ("intent plan", "MedicationRequest", lambda r: r.update(intent="plan"), "MedicationRequest.intent", "pattern"),
    ("subject a Group", "MedicationRequest", lambda r: r.update(subject={"reference": "Group/g1"}),
     "MedicationRequest.subject", "type"),
    ("dose 6 mg", "MedicationRequest", set_(dose(1), value=6),
     "MedicationRequest.dosageInstruction[1].doseAndRate[0].doseQuantity.value", "ldn-mr-3"),
    ("dose 0.25 mg", "MedicationRequest", set_(dose(0), value=0.25),
     "MedicationRequest.dosageInstruction[0].doseAndRate[0].doseQuantity.value", "ldn-mr-4"),
    ("dose unit g", "MedicationRequest", set_(dose(0), unit="g", code="g"),
     "MedicationRequest.dosageInstruction[0].doseAndRate[0].doseQuantity", "pattern"),
    ("dose as a range", "MedicationRequest",
     lambda r: r["dosageInstruction"][0]["doseAndRate"][0].update(
         doseRange={"low": {"value": 1, "code": "mg"}}) or r["dosageInstruction"][0]["doseAndRate"][0].pop(
         "doseQuantity"),
     "MedicationRequest.dosageInstruction[0].doseAndRate[0].doseRange", "type"),
    ("no dose", "MedicationRequest", lambda r: r["dosageInstruction"][2].pop("doseAndRate"),
     "MedicationRequest.dosageInstruction[2].doseAndRate", "cardinality"),
    ("when AM", "MedicationRequest", lambda r: r["dosageInstruction"][0]["timing"]["repeat"].update(when=["AM"]),
     "MedicationRequest.dosageInstruction[0].timing.repeat.when[0]", "r4-code"),
    ("when MORN", "MedicationRequest", lambda r: r["dosageInstruction"][0]["timing"]["repeat"].update(when=["MORN"]),
     "MedicationRequest.dosageInstruction[0].timing.repeat.when[0]", "pattern"),
    ("no timing", "MedicationRequest", lambda r: r["dosageInstruction"][1].pop("timing"),
     "MedicationRequest.dosageInstruction[1].timing", "cardinality"),
    ("no sequence", "MedicationRequest", lambda r: r["dosageInstruction"][0].pop("sequence"),
     "MedicationRequest.dosageInstruction[0].sequence", "cardinality"),
    ("sequences 1,3", "MedicationRequest", lambda r: r["dosageInstruction"].pop(1),
     "MedicationRequest.dosageInstruction[1]", "ldn-mr-5"),
    ("sequence repeated", "MedicationRequest", lambda r: r["dosageInstruction"][2].update(sequence=2),
     "MedicationRequest.dosageInstruction[1]", "ldn-mr-5"),
    ("step 3 lower than step 2", "MedicationRequest", set_(dose(2), value=1.0),
     "MedicationRequest.dosageInstruction[2]", "ldn-mr-6"),
    ("no dosage instruction", "MedicationRequest", lambda r: r.pop("dosageInstruction"),
     "MedicationRequest.dosageInstruction", "cardinality"),
    ("no reason", "MedicationRequest", lambda r: r.pop("reasonReference"), "MedicationRequest", "ldn-mr-8"),
    ("reason a Condition outside the indications", "MedicationRequest",
     lambda r: r.update(reasonReference=[{"reference": "Condition/htn"}]), "MedicationRequest", "ldn-mr-9"),
    ("reason code outside the ValueSet", "MedicationRequest",
     lambda r: r.pop("reasonReference") and r.update(reasonCode=[HYPERTENSION["code"]]),
     "MedicationRequest.reasonCode[0]", "binding"),
    ("no pharmacy note", "MedicationRequest", lambda r: r.pop("note"), "MedicationRequest.note", "cardinality"),
    ("note not for the pharmacy", "MedicationRequest", lambda r: r.update(note=[{"text": "Take at night."}]),
     "MedicationRequest", "ldn-mr-10"),
    ("contained ingredient not 7243", "MedicationRequest",
     lambda r: r["contained"][0]["ingredient"][0]["itemCodeableConcept"]["coding"][0].update(code="7804"),
     "MedicationRequest", "ldn-mr-1"),
    ("medication not the contained one", "MedicationRequest",
     lambda r: r.update(medicationReference={"reference": "Medication/other"}), "MedicationRequest", "ldn-mr-2"),
    ("unknown element", "MedicationRequest", lambda r: r.update(dosage=[]), "MedicationRequest.dosage", "r4"),
    ("CarePlan without addresses", "CarePlan", lambda r: r.pop("addresses"), "CarePlan.addresses", "cardinality"),
    ("CarePlan without identifier", "CarePlan", lambda r: r.pop("identifier"), "CarePlan", "ldn-cp-7"),
    ("CarePlan intent order", "CarePlan", lambda r: r.update(intent="order"), "CarePlan.intent", "pattern"),
    ("CarePlan status bogus", "CarePlan", lambda r: r.update(status="bogus"), "CarePlan.status", "r4-code"),
    ("CarePlan without period", "CarePlan", lambda r: r.pop("period"), "CarePlan.period", "cardinality"),
    ("review at 30 days", "CarePlan", lambda r: review(r).update(scheduledPeriod={"start": "2026-02-19"}),
     "CarePlan.activity[1]", "ldn-cp-3"),
    ("review at 100 days", "CarePlan", lambda r: review(r).update(scheduledPeriod={"start": "2026-04-30"}),
     "CarePlan", "ldn-cp-10"),
    ("review window ending after 12 weeks", "CarePlan", lambda r: review(r)["scheduledPeriod"].update(end="2026-05-01"),
     "CarePlan.activity[1]", "ldn-cp-3"),
    ("review activity status bogus", "CarePlan", lambda r: review(r).update(status="booked"),
     "CarePlan.activity[1].detail.status", "r4-code"),
    ("review activity kind bogus", "CarePlan", lambda r: review(r).update(kind="Visit"),
     "CarePlan.activity[1].detail.kind", "r4-code"),
    ("activity code outside the ValueSet", "CarePlan",
     lambda r: review(r).update(code={"coding": [{"system": ACTIVITY, "code": "coffee"}]}),
     "CarePlan.activity[1].detail.code", "binding"),
    ("no MedicationRequest activity", "CarePlan", lambda r: r["activity"].pop(0), "CarePlan", "ldn-cp-1"),
    ("MedicationRequest activity refers to a Condition", "CarePlan",
     lambda r: r["activity"][0]["reference"].update(reference="Condition/ldn-fibromyalgia-cond-1"),
     "CarePlan.activity[0].reference", "type"),
    ("missing efficacy review activity", "CarePlan", without_activity("efficacy-review"), "CarePlan", "ldn-cp-2"),
    ("missing withdrawal monitoring activity", "CarePlan", without_activity("withdrawal-monitoring"), "CarePlan",
     "ldn-cp-4"),
    ("missing side-effect check activity", "CarePlan", without_activity("side-effect-check"), "CarePlan", "ldn-cp-5"),
    ("missing surgery-hold activity", "CarePlan", without_activity("procedure-hold"), "CarePlan", "ldn-cp-6"),
    ("completed review without its outcome", "reviewed CarePlan", lambda r: r["activity"][1].pop(
        "outcomeCodeableConcept"), "CarePlan", "ldn-cp-8"),
    ("review outcome without a decision", "reviewed CarePlan", lambda r: r["activity"][1].update(
        outcomeCodeableConcept=r["activity"][1]["outcomeCodeableConcept"][:1]), "CarePlan", "ldn-cp-8"),
    ("plan completed by a stop without the reason", "reviewed CarePlan", lambda r: r.update(status="completed") or [
        c["coding"][0].update(code="stop") for c in r["activity"][1]["outcomeCodeableConcept"]
        if c["coding"][0]["code"] == "continue"], "CarePlan", "ldn-cp-9"),
    ("pain score of another LOINC code", "Observation", lambda r: r["code"]["coding"][0].update(code="38208-5"),
     "Observation", "ldn-ps-1"),
    ("pain score 11", "Observation", lambda r: r.update(valueInteger=11), "Observation", "ldn-ps-2"),
    ("pain score as text", "Observation", lambda r: r.pop("valueInteger") and r.update(valueString="7"),
     "Observation", "ldn-ps-2"),
    ("pain score without our identifier", "Observation", lambda r: r["identifier"][0].update(system="urn:x"),
     "Observation", "ldn-ps-3"),
    ("pain score without a date", "Observation", lambda r: r.pop("effectiveDateTime"), "Observation.effective[x]",
     "cardinality"),
]
EXAMPLES_BY_NAME = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLES}
BROKEN_BASES = {**entries(GOOD), "Observation": EXAMPLES_BY_NAME["Observation-ldn-pain-score-example.json"],
                "reviewed CarePlan": EXAMPLES_BY_NAME["CarePlan-ldn-reviewed-example.json"]}


@pytest.mark.parametrize(("name", "rtype", "mutate", "path", "rule"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_instance_is_rejected_with_a_message_naming_the_element(name, rtype, mutate, path, rule):
    resource = copy.deepcopy(BROKEN_BASES[rtype])
    mutate(resource)
    found = validate(resource, {**RECORD, "Condition/htn": HYPERTENSION})
    assert any(p.rule == rule and p.path == path for p in found), [str(p) for p in found]
    assert all(str(p).startswith(p.path + ": ") for p in found)


def test_every_invariant_of_every_profile_has_a_broken_instance_that_trips_it():
    keys = {c["key"] for sd in PROFILES for e in sd["differential"]["element"] for c in e.get("constraint", [])}
    assert keys <= {b[4] for b in BROKEN}


def test_dose_above_the_ceiling_names_the_element_the_value_and_the_rule():
    mr = copy.deepcopy(entries(GOOD)["MedicationRequest"])
    dose(1)(mr)["value"] = 6
    assert "MedicationRequest.dosageInstruction[1].doseAndRate[0].doseQuantity.value: dose must be at most 4.5 mg " \
           "(the LDN maximum, R1) (found 6) (ldn-mr-3)" in problems(mr)


def test_a_reason_that_cannot_be_resolved_is_only_checked_for_existence():
    mr = copy.deepcopy(entries(GOOD)["MedicationRequest"])
    mr["reasonReference"] = [{"reference": "Condition/not-in-this-record"}]
    assert problems(mr, RECORD) == []


def test_an_r4_reason_ordered_after_the_prescribers_reason_to_proceed_is_accepted():
    bundle = build("ldn-crohns-alone")
    assert problems(bundle, resolver_for(load_sample("ldn-crohns-alone"))) == []


def test_in_a_bundle_the_careplan_must_point_at_the_bundles_medication_request_not_another_entry():
    bundle = copy.deepcopy(GOOD)
    bundle["entry"][1]["resource"]["activity"][0]["reference"]["reference"] = bundle["entry"][2]["fullUrl"]
    found = validate(bundle)
    assert [(p.path, p.rule) for p in found] == [("Bundle.entry[1].resource", "ldn-cp-1")]


def test_in_a_bundle_each_problem_is_named_by_its_entry():
    bundle = copy.deepcopy(GOOD)
    bundle["entry"][0]["resource"]["status"] = "bogus"
    bundle["type"] = "bogus"
    found = {(p.path, p.rule) for p in validate(bundle)}
    assert {("Bundle.entry[0].resource.status", "r4-code"), ("Bundle.type", "r4-code")} <= found


def test_our_order_without_meta_profile_is_still_checked_against_our_profile_by_its_identifier():
    mr = copy.deepcopy(entries(GOOD)["MedicationRequest"])
    del mr["meta"]
    dose(0)(mr)["value"] = 9
    assert any(p.rule == "ldn-mr-3" for p in validate(mr))


def test_other_systems_resources_are_checked_against_base_r4_only():
    sample = load_sample("ldn-oxycodone-active")
    assert problems(sample) == []
    assert all(profile_for(e["resource"]) is None for e in sample["entry"])


# --- ldn-app validate -------------------------------------------------------------------------------------------

def test_validate_command_accepts_every_example(capsys):
    assert main(["validate", *map(str, EXAMPLES)]) == 0
    assert capsys.readouterr().out.count(": valid") == len(EXAMPLES)


def test_validate_command_rejects_a_broken_file_and_prints_each_problem_with_its_path(tmp_path, capsys):
    mr = copy.deepcopy(entries(GOOD)["MedicationRequest"])
    dose(1)(mr)["value"] = 6
    mr.pop("requester")
    path = tmp_path / "mr.json"
    path.write_text(json.dumps(mr))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "INVALID (3 problems)" in out
    assert "MedicationRequest.requester: required (min 1), found 0 (cardinality)" in out
    assert "MedicationRequest.dosageInstruction[1].doseAndRate[0].doseQuantity.value" in out


def test_validate_command_checks_reasons_against_the_record_given_with_resolve(tmp_path):
    mr = copy.deepcopy(entries(GOOD)["MedicationRequest"])
    mr["reasonReference"] = [{"reference": "Condition/htn"}]
    (tmp_path / "mr.json").write_text(json.dumps(mr))
    (tmp_path / "record.json").write_text(json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": HYPERTENSION}]}))
    assert main(["validate", str(tmp_path / "mr.json")]) == 0
    assert main(["validate", str(tmp_path / "mr.json"), "--resolve", str(tmp_path / "record.json")]) == 1


@pytest.mark.parametrize("content", ["not json {", "[1, 2]", '{"no": "resourceType"}'])
def test_validate_command_exits_2_on_a_file_that_is_not_a_fhir_resource(tmp_path, capsys, content):
    path = tmp_path / "x.json"
    path.write_text(content)
    assert main(["validate", str(EXAMPLES[0]), str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_validate_command_exits_2_on_a_missing_file(tmp_path):
    assert main(["validate", str(tmp_path / "missing.json")]) == 2
