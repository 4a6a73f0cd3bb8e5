"""What each decision requires before signing (clinical.signing), and how the services report it."""

from __future__ import annotations

from datetime import date

import pytest

from smart_app.clinical.model import TitrationRequest
from smart_app.clinical.signing import Need, Refusal, signing_verdict
from smart_app.errors import InputError, WriteRefused
from smart_app.fhir.parse import patients_from_bundle
from smart_app.samples import SAMPLE_AS_OF, load_sample
from smart_app.services import SignRequest, assess_data, plan_order

START = date(2026, 1, 20)


def data(pid):
    return patients_from_bundle(load_sample(pid))[pid]


def verdict(pid, *, start=START, override_reason=None, attestation=None):
    assessment = assess_data(data(pid), as_of=SAMPLE_AS_OF, start=start)
    return signing_verdict(assessment, override_reason=override_reason, attestation=attestation)


def test_crohns_as_the_only_reason_needs_a_written_reason_and_blank_space_is_not_one():
    assert verdict("ldn-crohns-alone") is Need.OVERRIDE_REASON
    assert verdict("ldn-crohns-alone", override_reason="   ") is Need.OVERRIDE_REASON
    assert verdict("ldn-crohns-alone", override_reason="failed three lines of therapy") is None


def test_an_unclassified_drug_needs_the_clinicians_attestation():
    assert verdict("ldn-unknown-code") is Need.ATTESTATION
    assert verdict("ldn-unknown-code", attestation="X123 is a vitamin") is None


def test_an_order_without_any_condition_it_is_for_needs_one_chosen():
    assert verdict("ldn-no-indication") is Need.ORDER_REASON


def test_a_current_opioid_is_refused_whatever_the_clinician_enters():
    refused = verdict("ldn-oxycodone-active", override_reason="because", attestation="checked")
    assert isinstance(refused, Refusal) and refused.lead.startswith("Contraindicated")
    assert any(reason.startswith("R2: Current opioid") for reason in refused.reasons)


def test_a_start_inside_the_washout_is_refused_as_not_yet_and_the_day_it_ends_is_signable():
    refused = verdict("ldn-tramadol-5-days", start=date(2026, 1, 19), attestation="checked")
    assert isinstance(refused, Refusal) and refused.lead.startswith("Not yet - opioid washout")
    assert verdict("ldn-tramadol-5-days", start=date(2026, 1, 20)) is None


def plan(pid, **kwargs):
    req = SignRequest(titration=TitrationRequest(start=START), requester="Practitioner/dr-1", **kwargs)
    return plan_order(data(pid), req, as_of=SAMPLE_AS_OF)


def test_signing_crohns_alone_asks_for_the_reason_then_writes_it_on_the_order():
    with pytest.raises(InputError, match="recommended against for the chosen reason"):
        plan("ldn-crohns-alone")
    order, bundle = plan("ldn-crohns-alone", override_reason="failed three lines of therapy")
    notes = [n["text"] for e in bundle["entry"] for n in e["resource"].get("note", [])]
    assert any("failed three lines of therapy" in n for n in notes) and order.override_reason


def test_signing_without_a_condition_to_treat_asks_the_clinician_to_choose_one():
    with pytest.raises(InputError, match="Choose the condition this order is for"):
        plan("ldn-no-indication")


def test_signing_a_contraindicated_patient_is_refused_with_the_rule_that_blocks():
    with pytest.raises(WriteRefused) as refused:
        plan("ldn-acute-hepatitis", attestation="checked")
    assert refused.value.user_message.startswith("Contraindicated - cannot be signed. R5: Avoid LDN")


def test_a_titration_the_rules_refuse_reaches_the_user_as_every_problem_in_plain_words():
    req = SignRequest(titration=TitrationRequest(start=START, start_dose_mg=6, step_mg=0), reasons=())
    with pytest.raises(InputError) as refused:
        plan_order(data("ldn-fibromyalgia"), req, as_of=SAMPLE_AS_OF)
    assert any("above the LDN maximum" in p for p in refused.value.problems)
    assert any("must be positive" in p for p in refused.value.problems)


def test_a_washout_outside_7_to_10_days_reaches_the_user_as_an_input_error():
    with pytest.raises(InputError, match="7-10 days"):
        assess_data(data("ldn-fibromyalgia"), as_of=SAMPLE_AS_OF, washout_days=14)
