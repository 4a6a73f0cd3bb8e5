"""R6 follow-up: pain scores, the 8-12 week review window and where a written LDN plan stands on a given day.

Source (CLINICAL_RULES R6; 000, 001, 003, 004): "Review efficacy at 8-12 weeks; with no benefit,
consider stopping (001)." R2 (004): an opioid "negates both therapies" - a new opioid exposure
after the start is an alert. R1: the titration steps. Time is a parameter (`as_of`); stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from .model import ExposureState, Finding, MedClass, Severity

PAIN_MIN, PAIN_MAX = 0, 10  # 0-10 numeric rating scale
REVIEW_WINDOW_DAYS = (56, 84)  # 8-12 weeks after the first dose (R6; 001)
SIDE_EFFECTS = (  # R6 (000, 001, 004): the common side effects, most common first
    ("vivid-dreams", "Vivid dreams"), ("headache", "Headache"), ("sleep-disturbance", "Sleep disturbance or insomnia"),
    ("tachycardia", "Tachycardia"), ("drowsiness", "Drowsiness"), ("dizziness", "Dizziness"), ("nausea", "Nausea"),
    ("gi-upset", "GI upset"),
)
BENEFITS = (("clear", "Clear benefit"), ("partial", "Partial benefit"), ("none", "No benefit"))
DECISIONS = (("continue", "Continue at the maintenance dose"), ("adjust", "Adjust: a new titration"),
             ("stop", "Stop LDN"))


class ReviewWindow(StrEnum):
    NOT_YET_DUE = "not yet due"
    DUE = "due"
    OVERDUE = "overdue"
    RECORDED = "recorded"  # no review left open on the plan


def pain_score(raw: str, label: str) -> tuple[int | None, str | None]:
    """A 0-10 NRS score typed into a form: (score or None when blank, problem or None)."""
    text = (raw or "").strip()
    if not text:
        return None, None
    if not text.isdigit() or not PAIN_MIN <= int(text) <= PAIN_MAX:
        return None, f"{label}: '{text[:12]}' is not a whole number from {PAIN_MIN} to {PAIN_MAX}."
    return int(text), None


def review_window(start: date) -> tuple[date, date]:
    """The efficacy review window a plan starting on `start` books (8-12 weeks)."""
    low, high = REVIEW_WINDOW_DAYS
    return start + timedelta(days=low), start + timedelta(days=high)


def window_state(window: tuple[date, date] | None, as_of: date) -> ReviewWindow:
    """Where `as_of` falls against an open review window (None: the review was recorded)."""
    if window is None:
        return ReviewWindow.RECORDED
    opens, closes = window
    if as_of < opens:
        return ReviewWindow.NOT_YET_DUE
    return ReviewWindow.DUE if as_of <= closes else ReviewWindow.OVERDUE


def is_due_within(window: tuple[date, date] | None, as_of: date, days: int) -> bool:
    """The review window is open or overdue on `as_of`, or opens within `days`."""
    return window is not None and window[0] <= as_of + timedelta(days=days)


@dataclass(frozen=True)
class PlanStep:
    sequence: int
    dose_mg: float
    start: date
    end: date | None

    def covers(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass(frozen=True)
class Standing:
    """Where a written plan stands on `as_of`."""

    start: date
    as_of: date
    day: int  # days on therapy, the first dose day counting as day 1 (0 before the start)
    step: PlanStep | None
    window: ReviewWindow
    review: tuple[date, date] | None  # the open review window, None once recorded


def standing(start: date, steps: tuple[PlanStep, ...], review: tuple[date, date] | None, as_of: date) -> Standing:
    day = (as_of - start).days + 1 if as_of >= start else 0
    step = next((s for s in steps if s.covers(as_of)), None)
    return Standing(start, as_of, day, step, window_state(review, as_of), review)


def change_in_pain(baseline: int | None, current: int | None) -> str:
    """The current score against the baseline, in words."""
    if baseline is None or current is None:
        return "no baseline to compare with" if current is not None else "not scored"
    diff = current - baseline
    if diff == 0:
        return f"unchanged at {current}/10"
    return f"{'down' if diff < 0 else 'up'} {abs(diff)} from {baseline}/10 to {current}/10"


def opioid_alerts(medications, since: date) -> tuple[Finding, ...]:
    """R2 alerts for opioid exposure on or after the LDN start (`medications`: an Assessment's
    MedicationSummary list): current, or last used on or after `since`; undatable -> cannot-determine."""
    alerts = []
    for med in medications:
        if med.classification is not MedClass.OPIOID or med.state is ExposureState.NONE:
            continue
        if med.state is ExposureState.UNKNOWN:
            alerts.append(_alert(Severity.CANNOT_DETERMINE, "opioid-dates-unknown", med,
                                 f"{med.name}: an opioid whose use cannot be dated ({med.date_problem or 'no date'}); "
                                 "check whether it was taken with LDN."))
        elif med.state is ExposureState.CURRENT or (med.last_exposure and med.last_exposure >= since):
            alerts.append(_alert(Severity.CONTRAINDICATION, "opioid-since-start", med,
                                 f"{med.name} ({med.resource}) since the LDN start on {since}: the opioid and "
                                 "naltrexone block each other - LDN blocks the analgesia and can precipitate "
                                 "withdrawal. Hold LDN or stop the opioid."))
    return tuple(alerts)


def _alert(severity: Severity, code: str, med, text: str) -> Finding:
    return Finding("R2", "004, 003", severity, text, (med.resource,), code)


TEXT_MAX = 1000  # every free-text field the clinician types (order form and review form)


@dataclass(frozen=True)
class Review:
    """What the clinician records at the efficacy review (R6). `titration`: the new schedule (adjust)."""

    pain: int | None
    benefit: str
    side_effects: tuple[str, ...]
    side_effect_text: str
    decision: str
    stop_reason: str = ""
    titration: object = None  # TitrationRequest for adjust

    @property
    def order_display(self) -> str:
        return "Low-dose naltrexone maintenance" if self.decision == "continue" else "Low-dose naltrexone titration"


def review_problems(review: Review) -> list[str]:
    """Every problem with a recorded review, in plain words (empty when it can be written)."""
    problems = []
    if review.benefit not in dict(BENEFITS):
        problems.append("Benefit: choose clear, partial or none.")
    if review.decision not in dict(DECISIONS):
        problems.append("Decision: choose continue, adjust or stop.")
    unknown = [s for s in review.side_effects if s not in dict(SIDE_EFFECTS)]
    if unknown:
        problems.append("Side effects: unknown choice(s) " + ", ".join(u[:20] for u in unknown[:3]) + ".")
    for label, text in (("Other side effects", review.side_effect_text), ("Reason to stop", review.stop_reason)):
        if len(text) > TEXT_MAX:
            problems.append(f"{label}: at most {TEXT_MAX} characters (got {len(text)}).")
    if review.decision == "stop" and not review.stop_reason.strip():
        problems.append("Stopping LDN: give the reason (it is written to the order and the care plan).")
    if review.decision == "adjust" and review.titration is None:
        problems.append("Adjusting: give the new titration (start, doses, interval).")
    return problems
