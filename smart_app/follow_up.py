"""Use cases of the 8-12 week review (issue 12): the LDN plan this app wrote, where it stands, the review."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import date, datetime

from .clinical.model import Assessment, Finding, MedClass, OrderPlan, TitrationRequest
from .clinical.rules.r1_titration import build_schedule, validation_problems
from .clinical.rules.r2_opioid_washout import opioid_alerts
from .clinical.rules.r6_follow_up import (
    PlanStep,
    Review,
    Standing,
    is_due_within,
    review_problems,
    standing,
    window_state,
)
from .clinical.signing import new_order_blockers
from .errors import AppError, FhirServerError, InputError, WriteRefused
from .fhir.build import ORDER_IDENTIFIER_SYSTEM, ORDER_TAG_SYSTEM, PAIN_NRS, own_order_key
from .fhir.contract import parse_reference, reference_of
from .fhir.parse import PatientData, patient_banner
from .fhir.review import OPEN_STATUSES, REVIEW_CODE, review_bundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WrittenPlan:
    """An active LDN CarePlan this app wrote, with the MedicationRequest it refers to, read back from the EHR."""

    care_plan: dict
    order: dict | None
    key: str
    start: date
    steps: tuple[PlanStep, ...]
    review: tuple[date, date] | None
    baseline: int | None
    problems: tuple[str, ...] = ()

    @property
    def care_plan_ref(self) -> str:
        return f"CarePlan/{self.care_plan['id']}"

    @property
    def order_ref(self) -> str | None:
        return f"MedicationRequest/{self.order['id']}" if self.order else None


@dataclass(frozen=True)
class FollowUp:
    """What the follow-up page shows: the plan, where it stands today, dispenses, R2 alerts."""

    plan: WrittenPlan
    standing: Standing
    dispenses: tuple[tuple[str, str, date | None], ...]  # (resource, name, date) since the order
    alerts: tuple[Finding, ...]
    problems: tuple[str, ...]  # what could not be read: the alerts may be incomplete


def active_care_plans(gateway, patient_id: str) -> list[dict]:
    """The patient's active CarePlans this app wrote, newest start first (filtered here too:
    a server may ignore a search parameter)."""
    found = gateway.search("CarePlan", {"patient": patient_id, "status": "active"})
    ours = [cp for cp in found if own_order_key(cp) and cp.get("status") == "active"]
    return sorted(ours, key=lambda cp: (cp.get("period") or {}).get("start") or "", reverse=True)


def own_order_keys(data: PatientData) -> set[str]:
    """Keys of the active orders this app wrote for the patient (recognised by our identifier system)."""
    return {m.own_order_key for m in data.medications if m.own_order_key and m.status == "active"}


def may_have_written_plan(data: PatientData) -> bool:
    """Whether the record holds an active order this app wrote (`own_order_keys`), the only case in
    which the app looks for its own plan: a launch for any other patient costs no extra request."""
    return bool(own_order_keys(data))


def find_written_plan(gateway, patient_id: str) -> WrittenPlan | None:
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
    return WrittenPlan(care_plan, order, key, start, steps, open_review(care_plan),
                       pain_value(baseline_obs), tuple(problems))


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


def follow_up(plan: WrittenPlan, data: PatientData, assessment: Assessment, problems: tuple[str, ...],
              as_of: date) -> FollowUp:
    """Where the plan stands on `as_of`: today's step, the review window, dispenses, new opioids (R2)."""
    authored = _date((plan.order or {}).get("authoredOn")) or plan.start
    starts = {m.resource: m.start for m in data.medications}
    dispenses = tuple((m.resource, m.name, starts.get(m.resource) or m.last_exposure)
                      for m in assessment.medications
                      if m.resource.startswith("MedicationDispense/") and m.classification is MedClass.NALTREXONE
                      and (starts.get(m.resource) or m.last_exposure or authored) >= authored)
    return FollowUp(plan, standing(plan.start, plan.steps, plan.review, as_of), dispenses,
                    opioid_alerts(assessment.medications, plan.start), (*plan.problems, *problems))


@dataclass(frozen=True)
class ReviewOutcome:
    """What a recorded review wrote: "Type/id" of each resource, and whether an earlier send had written it."""

    key: str
    refs: tuple[str, ...]
    decision: str
    earlier: bool = False


def review_key(plan: WrittenPlan, review: Review, as_of: date) -> str:
    """Deterministic id of one recorded review: the same review of the same plan on the same day -> same key."""
    t = review.titration
    basis = [plan.key, as_of.isoformat(), review.pain, review.benefit, sorted(review.side_effects),
             review.side_effect_text, review.decision, review.stop_reason,
             [t.start.isoformat(), t.start_dose_mg, t.step_mg, t.interval_days, t.target_mg, t.supply_days] if t
             else None]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:32]


def maintenance_titration(plan: WrittenPlan, as_of: date) -> TitrationRequest:
    """Continue: the plan's last (target) dose from `as_of` on, one step (R1 limits still checked)."""
    supply = ((plan.order or {}).get("dispenseRequest") or {}).get("expectedSupplyDuration", {}).get("value")
    dose = plan.steps[-1].dose_mg if plan.steps else 0.0
    return TitrationRequest(start=as_of, start_dose_mg=dose, step_mg=dose, interval_days=1, target_mg=dose,
                            supply_days=supply if isinstance(supply, int) else 30)


def refuse_new_order_while_blocked(plan: WrittenPlan, review: Review, assessment: Assessment) -> None:
    """Continue and adjust write a new LDN order: refused while an opioid (or anything else) blocks one now,
    or while an opioid's use since the start cannot be dated (R2: the opioid and LDN block each other)."""
    blocking = new_order_blockers(assessment, plan.start)
    if blocking:
        reasons = " ".join(f"{f.rule}: {f.text}" for f in blocking)
        raise WriteRefused(reasons, user_message=f"A new LDN order ({review.decision}) cannot be written now; "
                           f"nothing was written. {reasons} Record 'stop' to end LDN, or review again once the "
                           "opioid is stopped and its washout is over.")


def new_order_plan(plan: WrittenPlan, review: Review, assessment: Assessment, as_of: date,
                   requester: str | None) -> OrderPlan | None:
    """The order that replaces the reviewed one (continue, adjust), checked against R1; None for stop."""
    if review.decision == "stop":
        return None
    refuse_new_order_while_blocked(plan, review, assessment)
    titration = (review.titration if review.decision == "adjust" else None) or maintenance_titration(plan, as_of)
    problems = [] if titration.start >= as_of else [f"The new start date {titration.start} is in the past."]
    problems += validation_problems(titration)
    if problems:
        raise InputError(problems)
    steps = build_schedule(titration)
    reasons = tuple(r.local for r in (reference_of(a) for a in plan.care_plan.get("addresses") or []) if r and r.local)
    return OrderPlan(patient=assessment.patient, assessment=assessment, titration=titration, steps=steps,
                     reasons=reasons, requester=requester, authored_on=as_of)


def recorded_earlier(gateway, key: str) -> tuple[str, ...] | None:
    """The targets of the Provenance of review `key` when it was already written, else None."""
    found = [p for p in gateway.search("Provenance", {"_tag": f"{ORDER_TAG_SYSTEM}|{key}"})
             if any(t.get("code") == key for t in (p.get("meta") or {}).get("tag") or [])]
    if not found:
        return None
    return tuple(r.local for r in (reference_of(t) for t in found[0].get("target") or []) if r and r.local)


def record_review(gateway, patient_id: str, review: Review, assessment: Assessment, *, as_of: date,
                  requester: str | None, recorded: datetime | None = None) -> ReviewOutcome:
    """Write one recorded review in one idempotent transaction; nothing is written when anything is wrong."""
    problems = review_problems(review)
    if problems:
        raise InputError(problems)
    plan = find_written_plan(gateway, patient_id)
    if plan is None:
        raise InputError("There is no active LDN plan written by this app for this patient (or it could not be "
                         "read), so there is no review to record.")
    key = review_key(plan, review, as_of)
    earlier = recorded_earlier(gateway, key)
    if earlier is not None:
        return ReviewOutcome(key, earlier, review.decision, earlier=True)
    if plan.review is None or plan.order is None:
        raise InputError("The efficacy review of this plan was already recorded (or its order cannot be read): "
                         "nothing was written. Reload the page to see the plan as the EHR holds it now.")
    if not gateway.supports_transaction():
        raise WriteRefused("no transaction support", user_message="This EHR's FHIR server does not support "
                           "transactions; the review changes several resources at once, so it was not written.")
    new_plan = new_order_plan(plan, review, assessment, as_of, requester)
    bundle = review_bundle(plan, review, key, recorded or datetime.now().astimezone(), requester,
                           gateway.base_url, new_plan)
    response = gateway.transaction(bundle)
    refs = tuple(_written_ref(sent, got) for sent, got in zip(bundle["entry"], response.get("entry") or [],
                                                              strict=False))
    log.info("review %s of %s recorded (%s): %s", key, plan.care_plan_ref, review.decision, ", ".join(refs))
    return ReviewOutcome(key, refs, review.decision)


def _written_ref(sent: dict, got: dict) -> str:
    ref = parse_reference((got.get("response") or {}).get("location"))
    return ref.local if ref and ref.local else sent["request"]["url"]


@dataclass(frozen=True)
class DueReview:
    """One patient whose LDN efficacy review is open, overdue, or opens soon (`ldn-app due`)."""

    patient: str
    care_plan: str
    start: date | None
    review: tuple[date, date]
    window: str
    name: str | None = None  # from the Patient the search included, when the server includes it
    birth_date: str | None = None

    def to_json(self) -> dict:
        return {"patient": self.patient, "name": self.name, "birth_date": self.birth_date,
                "care_plan": self.care_plan, "start": _iso(self.start),
                "review_from": self.review[0].isoformat(), "review_to": self.review[1].isoformat(),
                "window": self.window}


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


SUBJECT_INCLUDE = "CarePlan:subject:Patient"


def due_reviews(gateway, *, as_of: date, within: int = 0) -> list[DueReview]:
    """Every active LDN plan this app wrote whose review is open or overdue on `as_of`, or opens within
    `within` days, from one CarePlan search (all pages, with the patients when the server can include them),
    earliest window first."""
    params = {"identifier": f"{ORDER_IDENTIFIER_SYSTEM}|", "status": "active"}
    if gateway.supports_include(SUBJECT_INCLUDE):
        params["_include"] = SUBJECT_INCLUDE
    found = gateway.search_with_includes("CarePlan", params)
    rows = []
    for cp in found.matches:
        review = open_review(cp)
        subject = reference_of(cp.get("subject"))
        if own_order_key(cp) and cp.get("status") == "active" and subject and subject.local and review \
                and is_due_within(review, as_of, within):
            banner = patient_banner(found.included.get(subject.local), subject.id or "")
            rows.append(DueReview(subject.local, f"CarePlan/{cp.get('id')}",
                                  _date((cp.get("period") or {}).get("start")), review,
                                  window_state(review, as_of).value, banner.name if banner.read else None,
                                  banner.birth_date))
    return sorted(rows, key=lambda r: (r.review, r.patient))
