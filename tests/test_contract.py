"""The FHIR contract module: types read/written match the CapabilityStatement; one reference parser for every form."""

import importlib
import inspect
import json
from pathlib import Path

import pytest
import yaml

from smart_app.fhir.contract import (
    CONTACT_READ_TYPES,
    DELETED_TYPES,
    FOLLOW_UP_READ_TYPES,
    FOLLOW_UP_UPDATED_TYPES,
    ORDER_TYPES,
    READ_TYPES,
    SEARCHED_TYPES,
    UPDATED_TYPES,
    WRITTEN_TYPES,
    Gateway,
    index_keys,
    parse_reference,
    resolve,
    rewrite_references,
)
from smart_app.smart.scopes import EHR_LAUNCH, requested_scopes

CAPABILITY = Path(__file__).resolve().parents[1] / "fhir_profiles" / "CapabilityStatement-ldn-app-client.json"
RECORDINGS = Path(__file__).resolve().parent / "recordings"


def _interactions() -> dict[str, set[str]]:
    statement = json.loads(CAPABILITY.read_text(encoding="utf-8"))
    return {r["type"]: {i["code"] for i in r.get("interaction", [])}
            for rest in statement["rest"] for r in rest["resource"]}


def test_every_type_the_app_reads_is_declared_readable_in_the_capability_statement():
    declared = {t for t, codes in _interactions().items() if codes & {"read", "search-type"}}
    assert set(READ_TYPES) | UPDATED_TYPES | set(FOLLOW_UP_READ_TYPES) | set(CONTACT_READ_TYPES) == declared


def test_only_the_draft_order_the_app_activates_is_declared_updatable():
    assert {t for t, codes in _interactions().items() if "update" in codes} == UPDATED_TYPES | FOLLOW_UP_UPDATED_TYPES


def test_only_the_types_a_failed_sequential_write_undoes_are_declared_deletable():
    assert {t for t, codes in _interactions().items() if "delete" in codes} == DELETED_TYPES


def test_every_type_searched_by_patient_is_declared_searchable():
    assert all("search-type" in _interactions()[t] for t in SEARCHED_TYPES)


def test_every_type_the_app_writes_is_declared_creatable():
    assert {t for t, codes in _interactions().items() if "create" in codes} == set(WRITTEN_TYPES)


def _recorded_server_statement() -> dict:
    """sekmet's CapabilityStatement as `ldn-app record` captured it (tests/recordings)."""
    recorded = yaml.safe_load((RECORDINGS / "ldn-crps.yaml").read_text(encoding="utf-8"))["responses"]
    return json.loads(next(r["response"]["body"] for r in recorded if r["response"]["url"].endswith("/metadata")))


def test_a_real_servers_capability_statement_offers_every_interaction_the_contract_needs():
    statement = _recorded_server_statement()
    [rest] = [r for r in statement["rest"] if r["mode"] == "server"]
    offered = {r["type"]: {i["code"] for i in r.get("interaction", [])} for r in rest["resource"]}
    needs = [(t, "read") for t in READ_TYPES] + [(t, "search-type") for t in (*SEARCHED_TYPES, *FOLLOW_UP_READ_TYPES)]
    needs += [(t, "create") for t in WRITTEN_TYPES] + [(t, "delete") for t in DELETED_TYPES]
    needs += [(t, "update") for t in UPDATED_TYPES | FOLLOW_UP_UPDATED_TYPES]
    assert [(t, code) for t, code in needs if code not in offered.get(t, set())] == []
    assert "transaction" in {i["code"] for i in rest.get("interaction", [])}


def test_the_scopes_requested_name_exactly_the_contracts_read_and_order_types():
    requested = requested_scopes(["permission-v2"], EHR_LAUNCH).split()
    assert {s.split("/")[1].split(".")[0] for s in requested if s.endswith(".rs")} == set(READ_TYPES)
    assert {s.split("/")[1].split(".")[0] for s in requested if ".c" in s} >= set(ORDER_TYPES)


@pytest.mark.parametrize(("text", "kind", "local", "version"), [
    ("Patient/p1", "relative", "Patient/p1", None),
    ("Patient/p1/", "relative", "Patient/p1", None),
    ("Patient/p1/_history/2", "relative", "Patient/p1", "2"),
    ("Patient/p1/_history/2/", "relative", "Patient/p1", "2"),
    ("https://ehr.example/fhir/r4/Patient/p1", "absolute", "Patient/p1", None),
    ("https://ehr.example/fhir/Patient/p1/_history/7", "absolute", "Patient/p1", "7"),
    ("http://127.0.0.1:8080/fhir/Medication/m.1-a/", "absolute", "Medication/m.1-a", None),
    (" Patient/p1 ", "relative", "Patient/p1", None),
])
def test_literal_references_in_every_valid_form_name_the_same_resource(text, kind, local, version):
    ref = parse_reference(text)
    assert (ref.kind, ref.local, ref.version) == (kind, local, version)


def test_an_absolute_reference_keeps_its_server_base():
    assert parse_reference("https://ehr.example/fhir/Patient/p1/_history/2").base == "https://ehr.example/fhir"


@pytest.mark.parametrize(("text", "kind", "key"), [
    ("urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e", "urn", "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"),
    ("urn:oid:2.16.840.1.113883.6.88", "urn", "urn:oid:2.16.840.1.113883.6.88"),
    ("#med1", "contained", "#med1"),
])
def test_bundle_local_and_contained_references_are_recognised(text, kind, key):
    ref = parse_reference(text)
    assert (ref.kind, ref.key, ref.local) == (kind, key, None)


@pytest.mark.parametrize("text", [
    None, 7, "", "Patient", "patient/p1", "Patient/", "Patient/p 1", "Patient/" + "x" * 65, "urn:uuid:nope",
    "#", "ftp://x/Patient/p1", "Patient/p1/_history/", "Patient/p1?x=1", {"reference": "Patient/p1"},
    "https://ehr/fhir/" * 300 + "Patient/p1",
])
def test_strings_that_are_not_references_parse_to_nothing(text):
    assert parse_reference(text) is None


def test_a_contained_reference_resolves_inside_its_container_only():
    med = {"resourceType": "Medication", "id": "m1"}
    container = {"contained": [{"resourceType": "Medication", "id": "other"}, med]}
    assert resolve(parse_reference("#m1"), {"Medication/m1": {"wrong": True}}, container) is med
    assert resolve(parse_reference("#m1"), {}, {"contained": {"id": "m1"}}) is None


def test_a_reference_resolves_by_full_url_first_then_by_type_and_id_in_any_form():
    patient = {"resourceType": "Patient", "id": "p1"}
    index = dict.fromkeys(index_keys(patient, "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"), patient)
    for text in ("urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e", "Patient/p1/_history/3", "Patient/p1/",
                 "https://elsewhere.example/Patient/p1"):
        assert resolve(parse_reference(text), index) is patient


def test_index_keys_skip_ids_that_are_not_fhir_ids():
    assert index_keys({"resourceType": "Patient", "id": 5}, None) == ()
    assert index_keys({"resourceType": "Patient", "id": "a b"}, "Patient/x") == ("Patient/x",)


def test_the_rewriter_replaces_only_reference_values_it_was_given():
    urn = "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"
    resource = {"basedOn": [{"reference": urn}], "note": [{"text": urn}], "subject": {"reference": "Patient/p1"}}
    out = rewrite_references(resource, {urn: "MedicationRequest/42"})
    assert out == {"basedOn": [{"reference": "MedicationRequest/42"}], "note": [{"text": urn}],
                   "subject": {"reference": "Patient/p1"}}
    assert resource["basedOn"][0]["reference"] == urn


@pytest.mark.parametrize("implementation", ["smart_app.fhir.gateway:FhirGateway", "fake_ehr:FakeGateway"])
def test_the_http_gateway_and_the_tests_fake_both_offer_every_method_of_the_gateway_protocol(implementation):
    module, name = implementation.split(":")
    cls = getattr(importlib.import_module(module), name)
    members = sorted(n for n in vars(Gateway) if not n.startswith("_"))
    assert len(members) == 11, members
    for member in members:
        wanted = inspect.signature(getattr(Gateway, member))
        assert list(inspect.signature(getattr(cls, member)).parameters) == list(wanted.parameters), member
