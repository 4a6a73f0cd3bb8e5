"""A recorded 8-12 week review -> one FHIR R4 transaction: pain Observation, review activity completed with its
outcome, the order replaced (continue, adjust) or stopped (stop), the CarePlan completed on stop, a Provenance.

Idempotent: creates are conditional on identifiers derived from the review key; updates are PUTs with
If-Match on the version the server gave, so a second send of the same review changes nothing.
"""

from __future__ import annotations

import copy
from datetime import date, datetime

from ..clinical.model import OrderPlan
from ..clinical.rules.r6_follow_up import BENEFITS, DECISIONS, SIDE_EFFECTS, review_window
from ..clinical.terminology import CANONICAL_BASE
from .build import (
    OBSERVATION_IDENTIFIER_SYSTEM,
    ORDER_IDENTIFIER_SYSTEM,
    ORDER_TAG_SYSTEM,
    _ref,
    _urn,
    described_steps,
    efficacy_review,
    medication_request,
    pain_observation,
    subject_id,
    validated_bundle,
)

REVIEW_OUTCOME_SYSTEM = CANONICAL_BASE + "/CodeSystem/ldn-review-outcome"
REVIEW_CODE = "efficacy-review"
OPEN_STATUSES = ("scheduled", "not-started", "in-progress", "on-hold")  # a CarePlan activity still to be done
NEW_ORDER_STATUS = {"continue": "completed", "adjust": "completed", "stop": "stopped"}


def outcome_concepts(benefit: str, decision: str, side_effects: tuple[str, ...]) -> list[dict]:
    """The review's outcome as codes of our CodeSystem ldn-review-outcome: benefit, decision, side effects."""
    names = dict(BENEFITS) | dict(DECISIONS) | dict(SIDE_EFFECTS)
    codes = [f"benefit-{benefit}", decision, *side_effects]
    shown = {f"benefit-{k}": v for k, v in BENEFITS} | names
    return [{"coding": [{"system": REVIEW_OUTCOME_SYSTEM, "code": c, "display": shown[c]}], "text": shown[c]}
            for c in codes]


def reviewed_care_plan(care_plan: dict, review, key: str, pain_urn: str | None, new_order_urn: str | None,
                       when: datetime, new_start: date | None = None) -> dict:
    """The CarePlan with its efficacy review completed and the outcome recorded (and completed on stop);
    an adjustment (a new titration from `new_start`) books the next efficacy review 8-12 weeks after it."""
    cp = copy.deepcopy(care_plan)
    cp["meta"] = {**(cp.get("meta") or {}), "tag": [*((cp.get("meta") or {}).get("tag") or []),
                                                    {"system": ORDER_TAG_SYSTEM, "code": key}]}
    cp["meta"].pop("lastUpdated", None)
    for activity in cp.get("activity") or []:
        detail = activity.get("detail") or {}
        if detail.get("status") in OPEN_STATUSES and any(
                c.get("code") == REVIEW_CODE for c in (detail.get("code") or {}).get("coding") or []):
            detail["status"] = "completed"  # the open review only: an earlier one keeps its outcome
            activity["outcomeCodeableConcept"] = outcome_concepts(review.benefit, review.decision,
                                                                  review.side_effects)
            if pain_urn:
                activity["outcomeReference"] = [{"reference": pain_urn, "display": "Pain score at the review"}]
            if review.side_effect_text:
                activity["progress"] = [{"time": when.isoformat(), "text": "Side effects: " + review.side_effect_text}]
    if new_order_urn:
        cp["activity"].append({"reference": {"reference": new_order_urn, "display": review.order_display}})
    if review.decision == "adjust" and new_start:
        cp["activity"].append(efficacy_review(review_window(new_start)))
    if review.decision == "stop":
        cp["status"] = "completed"
        cp.setdefault("period", {})["end"] = when.date().isoformat()
        cp["note"] = [*(cp.get("note") or []), {"time": when.isoformat(),
                                                "text": "LDN stopped at the efficacy review: " + review.stop_reason}]
    return cp


def closed_order(order: dict, review, when: datetime) -> dict:
    """The reviewed order, completed (replaced by a new one) or stopped, with the reason."""
    mr = copy.deepcopy(order)
    (mr.get("meta") or {}).pop("lastUpdated", None)
    mr["status"] = NEW_ORDER_STATUS[review.decision]
    if review.decision == "stop":
        mr["statusReason"] = {"text": review.stop_reason}
    else:
        mr["statusReason"] = {"text": f"Replaced at the efficacy review on {when.date().isoformat()} "
                                      f"({review.decision})."}
    return mr


def new_order(plan: OrderPlan, key: str, prior: str) -> dict:
    """The maintenance (continue) or new titration (adjust) order that replaces `prior`."""
    return {**medication_request(plan, key, described_steps(plan)), "priorPrescription": {"reference": prior}}


def _put(resource: dict, ref: str, base_url: str) -> dict:
    """An update entry; If-Match on the version the server gave (none given: an unconditional PUT)."""
    request = {"method": "PUT", "url": ref}
    version = (resource.get("meta") or {}).pop("versionId", None)
    if version:
        request["ifMatch"] = f'W/"{version}"'
    return {"fullUrl": f"{base_url.rstrip('/')}/{ref}", "resource": resource, "request": request}


def _post(urn: str, resource: dict, condition: str) -> dict:
    return {"fullUrl": urn, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": condition}}


def review_bundle(written, review, key: str, when: datetime, requester: str | None, base_url: str,
                  new_plan: OrderPlan | None) -> dict:
    """The one transaction of a recorded review; validated against R4 before it is returned."""
    entries, targets = [], []
    pain_urn = _urn(key, "pain") if review.pain is not None else None
    if pain_urn:
        obs = pain_observation(subject_id(written.care_plan) or "", review.pain, when,
                               requester, key, "review")
        entries.append(_post(pain_urn, obs, f"identifier={OBSERVATION_IDENTIFIER_SYSTEM}|{key}-review"))
        targets.append(pain_urn)
    order_urn = None
    if new_plan:
        order_urn = _urn(key, "mr")
        entries.append(_post(order_urn, new_order(new_plan, key, written.order_ref),
                             f"identifier={ORDER_IDENTIFIER_SYSTEM}|{key}"))
        targets.append(order_urn)
    if written.order is not None:
        entries.append(_put(closed_order(written.order, review, when), written.order_ref, base_url))
        targets.append(written.order_ref)
    cp = reviewed_care_plan(written.care_plan, review, key, pain_urn, order_urn, when,
                            new_plan.titration.start if new_plan else None)
    entries.append(_put(cp, written.care_plan_ref, base_url))
    targets.append(written.care_plan_ref)
    entries.append(_post(_urn(key, "pv"), review_provenance(key, targets, when, requester, review),
                         f"_tag={ORDER_TAG_SYSTEM}|{key}"))
    return validated_bundle(entries)


def review_provenance(key: str, targets: list[str], when: datetime, requester: str | None, review) -> dict:
    return {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": ORDER_TAG_SYSTEM, "code": key}]},
        "target": [{"reference": t} for t in targets],
        "recorded": when.isoformat(),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "UPDATE", "display": "revise"}]},
        "agent": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                  "code": "author", "display": "Author"}]},
             "who": _ref(requester, "Prescriber not identified")},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                  "code": "assembler", "display": "Assembler"}]},
             "who": {"display": "LDN decision-support app"}},
        ],
        "reason": [{"text": f"LDN efficacy review (R6): decision {review.decision}"}],
    }
