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
    Review,
    Standing,
    is_due_within,
    review_problems,
    standing,
    window_state,
)
from .clinical.signing import new_order_blockers
from .errors import InputError, WriteRefused
from .fhir.parse import PatientData
from .fhir.plan import WrittenPlan, find_written_plan, recorded_earlier, scheduled_reviews
from .fhir.review import review_bundle
from .fhir.write import written_refs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FollowUp:
    """What the follow-up page shows: the plan, where it stands today, dispenses, R2 alerts."""

    plan: WrittenPlan
    standing: Standing
    dispenses: tuple[tuple[str, str, date | None], ...]  # (resource, name, date) since the order
    alerts: tuple[Finding, ...]
    problems: tuple[str, ...]  # what could not be read: the alerts may be incomplete


def own_order_keys(data: PatientData) -> set[str]:
    """Keys of the active orders this app wrote for the patient (recognised by our identifier system)."""
    return {m.own_order_key for m in data.medications if m.own_order_key and m.status == "active"}


def may_have_written_plan(data: PatientData) -> bool:
    """Whether the record holds an active order this app wrote (`own_order_keys`), the only case in
    which the app looks for its own plan: a launch for any other patient costs no extra request."""
    return bool(own_order_keys(data))


def follow_up(plan: WrittenPlan, data: PatientData, assessment: Assessment, problems: tuple[str, ...],
              as_of: date) -> FollowUp:
    """Where the plan stands on `as_of`: today's step, the review window, dispenses, new opioids (R2)."""
    authored = plan.authored_on
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
    dose = plan.steps[-1].dose_mg if plan.steps else 0.0
    return TitrationRequest(start=as_of, start_dose_mg=dose, step_mg=dose, interval_days=1, target_mg=dose,
                            supply_days=plan.supply_days or 30)


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
    return OrderPlan(patient=assessment.patient, assessment=assessment, titration=titration, steps=steps,
                     reasons=plan.reasons, requester=requester, authored_on=as_of)


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
    refs = written_refs(bundle, gateway.transaction(bundle))
    log.info("review %s of %s recorded (%s): %s", key, plan.care_plan_ref, review.decision, ", ".join(refs))
    return ReviewOutcome(key, refs, review.decision)


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


def due_reviews(gateway, *, as_of: date, within: int = 0) -> list[DueReview]:
    """Every active LDN plan this app wrote whose review is open or overdue on `as_of`, or opens within
    `within` days (`fhir.plan.scheduled_reviews`: one CarePlan search), earliest window first."""
    rows = [DueReview(r.patient, r.care_plan, r.start, r.review, window_state(r.review, as_of).value,
                      r.banner.name if r.banner.read else None, r.banner.birth_date)
            for r in scheduled_reviews(gateway) if is_due_within(r.review, as_of, within)]
    return sorted(rows, key=lambda r: (r.review, r.patient))
