"""The LDN plan this app wrote, read back from the EHR: CarePlan, order, baseline, review window (JSON -> values)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from ..clinical.rules.r6_follow_up import PlanStep
from ..errors import AppError, FhirServerError
from .build import ORDER_IDENTIFIER_SYSTEM, ORDER_TAG_SYSTEM, PAIN_NRS, own_order_key
from .contract import Gateway, reference_of
from .parse import PatientBanner, patient_banner
from .review import OPEN_STATUSES, REVIEW_CODE

log = logging.getLogger(__name__)
SUBJECT_INCLUDE = "CarePlan:subject:Patient"


@dataclass(frozen=True)
class WrittenPlan:
    """An active LDN CarePlan this app wrote, with the MedicationRequest it refers to, read back from the EHR
    (the resources kept for the review's updates; everything the use cases read, parsed)."""

    care_plan: dict
    order: dict | None
    key: str
    start: date
    steps: tuple[PlanStep, ...]
    review: tuple[date, date] | None
    baseline: int | None
    authored_on: date  # the order's authoredOn (else the start): dispenses since then are this plan's
    supply_days: int | None  # the order's expected supply duration
    reasons: tuple[str, ...]  # "Condition/id" the plan addresses
    problems: tuple[str, ...] = ()

    @property
    def care_plan_ref(self) -> str:
        return f"CarePlan/{self.care_plan['id']}"

    @property
    def order_ref(self) -> str | None:
        return f"MedicationRequest/{self.order['id']}" if self.order else None


def active_care_plans(gateway, patient_id: str) -> list[dict]:
    """The patient's active CarePlans this app wrote, newest start first (filtered here too:
    a server may ignore a search parameter)."""
    found = gateway.search("CarePlan", {"patient": patient_id, "status": "active"})
    ours = [cp for cp in found if own_order_key(cp) and cp.get("status") == "active"]
    return sorted(ours, key=lambda cp: (cp.get("period") or {}).get("start") or "", reverse=True)


def find_written_plan(gateway: Gateway, patient_id: str) -> WrittenPlan | None:
    """The newest active LDN plan this app wrote for the patient, or None (none, or it cannot be read)."""
    try:
        plans = active_care_plans(gateway, patient_id)
    except AppError as err:
        log.warning("CarePlan search for Patient/%s failed: %s", patient_id, type(err).__name__)
        return None
    return read_plan(gateway, plans[0]) if plans else None


def read_plan(gateway, care_plan: dict) -> WrittenPlan:
    problems: list[str] = []
    order = _read_target(gateway, _order_reference(care_plan), "MedicationRequest", problems)
    baseline_obs = _read_target(gateway, _baseline_reference(care_plan), "Observation", problems)
    steps = plan_steps(order) if order else ()
    start = _date((care_plan.get("period") or {}).get("start")) or min((s.start for s in steps), default=None)
    key = own_order_key(care_plan)
    if key is None or start is None:
        raise FhirServerError(f"CarePlan/{care_plan.get('id')}: no order key or no start", user_message=(
            "The LDN care plan in the chart has no order key or no start date; it cannot be followed up here."))
    supply = ((order or {}).get("dispenseRequest") or {}).get("expectedSupplyDuration", {}).get("value")
    reasons = tuple(r.local for r in map(reference_of, care_plan.get("addresses") or []) if r and r.local)
    return WrittenPlan(care_plan, order, key, start, steps, open_review(care_plan), pain_value(baseline_obs),
                       _date((order or {}).get("authoredOn")) or start, supply if isinstance(supply, int) else None,
                       reasons, tuple(problems))


def _order_reference(care_plan: dict):
    """The plan's current order: its last MedicationRequest activity (a review's new order is appended)."""
    refs = [reference_of(a.get("reference")) for a in care_plan.get("activity") or [] if isinstance(a, dict)]
    orders = [r for r in refs if r and r.resource_type == "MedicationRequest"]
    return orders[-1] if orders else None


def open_review(care_plan: dict) -> tuple[date, date] | None:
    """The scheduled period of the plan's efficacy review not yet completed, or None."""
    for activity in care_plan.get("activity") or []:
        detail = activity.get("detail") or {} if isinstance(activity, dict) else {}
        codes = {c.get("code") for c in (detail.get("code") or {}).get("coding") or []}
        period = detail.get("scheduledPeriod") or {}
        opens = _date(period.get("start"))
        if REVIEW_CODE in codes and detail.get("status") in OPEN_STATUSES and opens:
            return opens, _date(period.get("end")) or opens
    return None


def _baseline_reference(care_plan: dict):
    refs = [reference_of(i) for i in care_plan.get("supportingInfo") or []]
    return next((r for r in refs if r and r.resource_type == "Observation"), None)


def _read_target(gateway, ref, resource_type: str, problems: list[str]) -> dict | None:
    if ref is None:
        return None
    try:
        return gateway.read(resource_type, ref.id)
    except FhirServerError as err:
        problems.append(f"{ref.local} could not be read ({err.user_message})")
        return None


def pain_value(obs: dict | None) -> int | None:
    """The 0-10 score of a pain Observation (LOINC 72514-3), else None."""
    if not obs or not any(c.get("system") == PAIN_NRS["system"] and c.get("code") == PAIN_NRS["code"]
                          for c in (obs.get("code") or {}).get("coding") or []):
        return None
    value = obs.get("valueInteger")
    return value if isinstance(value, int) and 0 <= value <= 10 else None


def plan_steps(order: dict) -> tuple[PlanStep, ...]:
    """The titration steps of a MedicationRequest this app wrote (one dosage per step)."""
    steps: list[PlanStep] = []
    for d in order.get("dosageInstruction") or []:
        bounds = ((d.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}
        dose = ((d.get("doseAndRate") or [{}])[0].get("doseQuantity") or {}).get("value")
        start = _date(bounds.get("start"))
        if isinstance(dose, (int, float)) and start:
            steps.append(PlanStep(d.get("sequence") or len(steps) + 1, float(dose), start, _date(bounds.get("end"))))
    return tuple(sorted(steps, key=lambda s: s.start))


def _date(text: object) -> date | None:
    try:
        return date.fromisoformat(text[:10]) if isinstance(text, str) else None
    except ValueError:
        return None


def recorded_earlier(gateway, key: str) -> tuple[str, ...] | None:
    """The targets of the Provenance of review `key` when it was already written, else None."""
    found = [p for p in gateway.search("Provenance", {"_tag": f"{ORDER_TAG_SYSTEM}|{key}"})
             if any(t.get("code") == key for t in (p.get("meta") or {}).get("tag") or [])]
    if not found:
        return None
    return tuple(r.local for r in (reference_of(t) for t in found[0].get("target") or []) if r and r.local)


@dataclass(frozen=True)
class ScheduledReview:
    """An active LDN plan this app wrote and its open efficacy review, as one CarePlan search returns it."""

    patient: str  # "Patient/id"
    care_plan: str
    start: date | None
    review: tuple[date, date]
    banner: PatientBanner  # read only when the server included the Patient


def scheduled_reviews(gateway) -> list[ScheduledReview]:
    """Every active LDN plan this app wrote with an open review, from one CarePlan search (all pages, with the
    patients when the server can include them)."""
    params = {"identifier": f"{ORDER_IDENTIFIER_SYSTEM}|", "status": "active"}
    if gateway.supports_include(SUBJECT_INCLUDE):
        params["_include"] = SUBJECT_INCLUDE
    found = gateway.search_with_includes("CarePlan", params)
    rows = []
    for cp in found.matches:
        review, subject = open_review(cp), reference_of(cp.get("subject"))
        if own_order_key(cp) and cp.get("status") == "active" and subject and subject.local and review:
            rows.append(ScheduledReview(subject.local, f"CarePlan/{cp.get('id')}",
                                        _date((cp.get("period") or {}).get("start")), review,
                                        patient_banner(found.included.get(subject.local), subject.id or "")))
    return rows
