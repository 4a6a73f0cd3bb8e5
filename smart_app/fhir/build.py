"""Signed plan -> one FHIR R4 transaction Bundle: MedicationRequest + CarePlan + Provenance.

Both or neither: one transaction. Never twice: each entry is a conditional create
(`ifNoneExist`) on a business identifier derived from the decision itself, so the same
signed plan sent again matches what the first send created.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ..clinical.model import OWN_ORDER_SYSTEM, OrderPlan, TitrationStep
from ..clinical.rules.r1_titration import PHARMACY_NOTE, describe_step
from ..clinical.rules.r5_contraindications import HOLD_ACTIVITY_DISPLAY, HOLD_ACTIVITY_TEXT
from ..clinical.rules.r6_follow_up import (
    MONITORING_DAYS,
    MONITORING_DISPLAY,
    MONITORING_TEXT,
    REVIEW_ACTIVITY_DISPLAY,
    REVIEW_ACTIVITY_TEXT,
    REVIEW_WINDOW_TEXT,
    SIDE_EFFECT_CHECK_DAYS,
    SIDE_EFFECT_CHECK_TEXT,
    review_window,
)
from ..clinical.terminology import CANONICAL_BASE, RXNORM, SNOMED, UCUM
from .contract import parse_reference, reference_of
from .models import validate_r4

ORDER_IDENTIFIER_SYSTEM = OWN_ORDER_SYSTEM
ORDER_TAG_SYSTEM = CANONICAL_BASE + "/CodeSystem/ldn-order-key"
PROFILE_MEDICATION_REQUEST = CANONICAL_BASE + "/StructureDefinition/ldn-medicationrequest"
PROFILE_CAREPLAN = CANONICAL_BASE + "/StructureDefinition/ldn-careplan"
CAREPLAN_ACTIVITY_SYSTEM = CANONICAL_BASE + "/CodeSystem/ldn-careplan-activity"
OBSERVATION_IDENTIFIER_SYSTEM = CANONICAL_BASE + "/identifier/ldn-observation"
PROFILE_PAIN_OBSERVATION = CANONICAL_BASE + "/StructureDefinition/ldn-pain-score"
LOINC = "http://loinc.org"
PAIN_NRS = {"system": LOINC, "code": "72514-3",
            "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported"}
ORAL = {"system": SNOMED, "code": "26643006", "display": "Oral route"}
_UUID_NS = uuid.UUID("6f1c2a52-3d0e-4b8e-9a57-2f6f0b1d5c11")


@dataclass(frozen=True)
class PlannedOrder:
    """A checked plan and what its pages and its write share, computed once: key, review window, step texts."""

    plan: OrderPlan
    key: str
    review_from: date
    review_to: date
    steps: tuple[tuple[TitrationStep, str], ...]  # each step and the words that describe it

    @classmethod
    def of(cls, plan: OrderPlan) -> PlannedOrder:
        return cls(plan, order_key(plan), *review_window(plan.titration.start), described_steps(plan))


def described_steps(plan: OrderPlan) -> tuple[tuple[TitrationStep, str], ...]:
    """Each step of the plan with the words the order, the preview and the patient read."""
    return tuple((s, describe_step(s, plan.titration.start)) for s in plan.steps)


def order_key(plan: OrderPlan) -> str:
    """Deterministic id of one decision: same patient, schedule, reasons, supply -> same key."""
    return decision_key(plan.patient, plan.steps, plan.titration, plan.reasons)


def decision_key(patient: str, steps, titration, reasons) -> str:
    basis = {
        "patient": patient,
        "steps": [(s.sequence, s.dose_mg, s.start.isoformat()) for s in steps],
        "interval": titration.interval_days,
        "supply": titration.supply_days,
        "reasons": sorted(reasons),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:32]


def _urn(key: str, kind: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_UUID_NS, key + kind)}"


def _ref(reference: str | None, fallback_display: str) -> dict:
    if parse_reference(reference) is not None:
        return {"reference": reference}
    return {"display": reference or fallback_display}


def _mg(value: float) -> dict:
    return {"value": value, "unit": "mg", "system": UCUM, "code": "mg"}


def dosage(step: TitrationStep, text: str) -> dict:
    bounds = {"start": step.start.isoformat()}
    if step.end:
        bounds["end"] = step.end.isoformat()
    return {
        "sequence": step.sequence,
        "text": text,
        "patientInstruction": text + " Take it at the same time every night.",
        "timing": {"repeat": {"boundsPeriod": bounds, "frequency": 1, "period": 1, "periodUnit": "d",
                              "when": ["HS"]}},
        "route": {"coding": [ORAL]},
        "doseAndRate": [{"doseQuantity": _mg(step.dose_mg)}],
    }


def medication_request(plan: OrderPlan, key: str, steps: tuple[tuple[TitrationStep, str], ...]) -> dict:
    t = plan.titration
    notes = [{"text": PHARMACY_NOTE}]
    if plan.override_reason:
        notes.append({"text": f"Prescriber's reason to proceed despite R4 (recommended against): "
                              f"{plan.override_reason}"})
    if plan.other_reason:
        notes.append({"text": f"Prescriber's reason for ordering LDN for a condition that is not a qualifying "
                              f"indication (R3): {plan.other_reason}"})
    if plan.attestation:
        notes.append({"text": f"Prescriber attestation (assessment could not determine all data): "
                              f"{plan.attestation}"})
    return {
        "resourceType": "MedicationRequest",
        "meta": {"profile": [PROFILE_MEDICATION_REQUEST], "tag": [{"system": ORDER_TAG_SYSTEM, "code": key}]},
        "contained": [{
            "resourceType": "Medication",
            "id": "ldn",
            "code": {"text": "Naltrexone, low-dose, compounded (oral)"},
            "form": {"text": "Compounded oral capsule or liquid"},
            "ingredient": [{"itemCodeableConcept": {"coding": [
                {"system": RXNORM, "code": "7243", "display": "naltrexone"}]}, "isActive": True}],
        }],
        "identifier": [{"system": ORDER_IDENTIFIER_SYSTEM, "value": key}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                  "code": "community", "display": "Community"}]}],
        "medicationReference": {"reference": "#ldn", "display": "Naltrexone, low-dose, compounded"},
        "subject": {"reference": f"Patient/{plan.patient}"},
        "authoredOn": plan.authored_on.isoformat(),
        "requester": _ref(plan.requester, "Prescriber not identified"),
        "reasonReference": [{"reference": r} for r in plan.reasons],
        "note": notes,
        "dosageInstruction": [dosage(s, text) for s, text in steps],
        "dispenseRequest": {
            "validityPeriod": {"start": t.start.isoformat(), "end": (t.start + timedelta(days=365)).isoformat()},
            "expectedSupplyDuration": {"value": t.supply_days, "unit": "days", "system": UCUM, "code": "d"},
        },
    }


def _activity(code: str, text: str, status: str, start: date, end: date | None, description: str,
              kind: str = "Task"):
    period = {"start": start.isoformat()}
    if end:
        period["end"] = end.isoformat()
    concept = {"coding": [{"system": CAREPLAN_ACTIVITY_SYSTEM, "code": code, "display": text}], "text": text}
    return {"detail": {"kind": kind, "code": concept, "status": status, "scheduledPeriod": period,
                       "description": description}}


def efficacy_review(window: tuple[date, date]) -> dict:
    """The CarePlan activity booking the efficacy review in its `window` (`review_window`)."""
    return _activity("efficacy-review", REVIEW_ACTIVITY_DISPLAY, "scheduled", *window, REVIEW_ACTIVITY_TEXT,
                     kind="Appointment")


def pain_observation(patient: str, score: int, when: datetime, performer: str | None, key: str,
                     kind: str) -> dict:
    """A 0-10 NRS pain score (LOINC 72514-3); `kind` (baseline, review) and `key` make its identifier."""
    return {
        "resourceType": "Observation",
        "meta": {"profile": [PROFILE_PAIN_OBSERVATION], "tag": [{"system": ORDER_TAG_SYSTEM, "code": key}]},
        "identifier": [{"system": OBSERVATION_IDENTIFIER_SYSTEM, "value": f"{key}-{kind}"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "survey", "display": "Survey"}]}],
        "code": {"coding": [PAIN_NRS], "text": f"Pain score, 0-10 ({kind})"},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when.isoformat(),
        "performer": [_ref(performer, "Prescriber not identified")],
        "valueInteger": score,
    }


def care_plan(order: PlannedOrder, mr_urn: str, baseline_urn: str | None = None) -> dict:
    plan, key, start = order.plan, order.key, order.plan.titration.start
    supporting = [{"reference": baseline_urn, "display": "Baseline pain score (0-10)"}] if baseline_urn else None
    return _without_none({
        "resourceType": "CarePlan",
        "meta": {"profile": [PROFILE_CAREPLAN], "tag": [{"system": ORDER_TAG_SYSTEM, "code": key}]},
        "identifier": [{"system": ORDER_IDENTIFIER_SYSTEM, "value": key}],
        "status": "active",
        "intent": "plan",
        "title": "Low-dose naltrexone: titration, monitoring and efficacy review",
        "description": f"LDN titration per R1; efficacy review {REVIEW_WINDOW_TEXT} after the start (R6); hold "
                       "before procedures needing opioids (R5).",
        "subject": {"reference": f"Patient/{plan.patient}"},
        "period": {"start": start.isoformat()},
        "created": plan.authored_on.isoformat(),
        "author": _ref(plan.requester, "Prescriber not identified"),
        "addresses": [{"reference": r} for r in plan.reasons],
        "activity": [
            {"reference": {"reference": mr_urn, "display": "Low-dose naltrexone titration"}},
            efficacy_review((order.review_from, order.review_to)),
            _activity("withdrawal-monitoring", MONITORING_DISPLAY, "not-started", start,
                      start + timedelta(days=MONITORING_DAYS), MONITORING_TEXT, kind="CommunicationRequest"),
            _activity("side-effect-check", "Side-effect check", "not-started", start,
                      start + timedelta(days=SIDE_EFFECT_CHECK_DAYS), SIDE_EFFECT_CHECK_TEXT,
                      kind="CommunicationRequest"),
            _activity("procedure-hold", HOLD_ACTIVITY_DISPLAY, "not-started", start, None, HOLD_ACTIVITY_TEXT,
                      kind="Task"),
        ],
        "supportingInfo": supporting,
    })


def _without_none(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if v is not None}


def provenance(plan: OrderPlan, key: str, targets: list[str], recorded: datetime) -> dict:
    return {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": ORDER_TAG_SYSTEM, "code": key}]},
        "target": [{"reference": t} for t in targets],
        "recorded": recorded.isoformat(),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "CREATE", "display": "create"}]},
        "agent": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                  "code": "author", "display": "Author"}]},
             "who": _ref(plan.requester, "Prescriber not identified")},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                  "code": "assembler", "display": "Assembler"}]},
             "who": {"display": "LDN decision-support app"}},
        ],
        "reason": [{"text": f"LDN assessment decision: {plan.assessment.decision.value}"}],
    }


def _entry(urn: str, resource: dict, type_: str, condition: str) -> dict:
    return {"fullUrl": urn, "resource": resource,
            "request": {"method": "POST", "url": type_, "ifNoneExist": condition}}


def transaction_bundle(order: PlannedOrder, recorded: datetime) -> dict:
    """The write-back, validated against R4 before it is returned (built only to be sent: Sign, `ldn-app plan`)."""
    plan, key = order.plan, order.key
    mr_urn, cp_urn, pv_urn = _urn(key, "mr"), _urn(key, "cp"), _urn(key, "pv")
    by_identifier = f"identifier={ORDER_IDENTIFIER_SYSTEM}|{key}"
    baseline = _baseline_entry(plan, key, recorded)
    resources = [
        (mr_urn, medication_request(plan, key, order.steps), "MedicationRequest", by_identifier),
        *([baseline] if baseline else []),  # before the CarePlan that refers to it (a sequential write needs this)
        (cp_urn, care_plan(order, mr_urn, baseline[0] if baseline else None), "CarePlan", by_identifier),
        (pv_urn, provenance(plan, key, [mr_urn, cp_urn, *([baseline[0]] if baseline else [])], recorded),
         "Provenance", f"_tag={ORDER_TAG_SYSTEM}|{key}"),
    ]
    return validated_bundle([_entry(u, r, t, c) for u, r, t, c in resources])


def _baseline_entry(plan: OrderPlan, key: str, recorded: datetime) -> tuple | None:
    """The baseline pain score's transaction entry, when the clinician gave one."""
    if plan.baseline_pain is None:
        return None
    urn = _urn(key, "baseline")
    obs = pain_observation(plan.patient, plan.baseline_pain, recorded, plan.requester, key, "baseline")
    return urn, obs, "Observation", f"identifier={OBSERVATION_IDENTIFIER_SYSTEM}|{key}-baseline"


def validated_bundle(entries: list[dict]) -> dict:
    """A transaction Bundle of `entries`, each resource and the Bundle validated against R4."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    for entry in entries:
        validate_r4(entry["resource"])
    validate_r4(bundle)
    return bundle


def own_order_key(resource: dict) -> str | None:
    """The order key of a resource this app wrote (our identifier system), else None."""
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == ORDER_IDENTIFIER_SYSTEM:
            value = identifier.get("value")
            return value if isinstance(value, str) else None
    return None


def written_order(mr: dict) -> dict:
    """What the confirmation page shows, read back from a MedicationRequest this app wrote."""
    steps = [_written_step(d) for d in mr.get("dosageInstruction") or [] if isinstance(d, dict)]
    start = min((s["start"] for s in steps if s["start"]), default=None)
    window = review_window(date.fromisoformat(start)) if start else (None, None)
    supply = ((mr.get("dispenseRequest") or {}).get("expectedSupplyDuration") or {}).get("value")
    return {"key": own_order_key(mr), "refs": {"MedicationRequest": f"MedicationRequest/{mr.get('id')}"},
            "status": mr.get("status"), "patient": subject_id(mr),
            "requester": (mr.get("requester") or {}).get("reference"),
            "start": start, "steps": steps, "supply_days": supply,
            "review_from": window[0] and window[0].isoformat(), "review_to": window[1] and window[1].isoformat()}


def subject_id(resource: dict) -> str | None:
    """The id of the patient a resource's `subject` names, or None."""
    ref = reference_of(resource.get("subject"))
    return ref.id if ref else None


def _written_step(d: dict) -> dict:
    bounds = ((d.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}
    dose = ((d.get("doseAndRate") or [{}])[0].get("doseQuantity") or {}).get("value")
    return {"sequence": d.get("sequence"), "dose": dose, "start": bounds.get("start"), "end": bounds.get("end"),
            "text": d.get("text")}


def todays_step(order: dict, today: date) -> dict | None:
    """The step of a written order that covers `today` (None before the start)."""
    for step in order["steps"]:
        if step["start"] and step["start"] <= today.isoformat() and (not step["end"] or today.isoformat()
                                                                     <= step["end"]):
            return step
    return None
