"""R6 follow-up: the 8-12 week review window, monitoring, pain scores and where a written plan stands on a day.

Rule R6, quoted from docs/clinical-rules.md ("R6 Follow-up"), sources 000, 001, 003, 004:
    "Benefit takes time: two to four months of steady use (000), at least 8-10 weeks (003), several
    weeks (004). Efficacy is reviewed at 8-12 weeks and LDN stopped if there is no benefit (001);
    the care plan schedules that review."
    "On starting, watch for withdrawal signs or more pain (000)."
    "Side effects are usually mild and settle in the first weeks: vivid dreams (the most common),
    headache, poor sleep, fast heartbeat, drowsiness, dizziness, nausea and stomach upset (000, 001,
    004); about a third of patients report one (004)."
Sources: 000 "Recommended naltrexone dosing and management for pain control" (clinical Q&A, June
2025); 001 "Typical naltrexone dose for reducing inflammation" (clinical Q&A, July 2025); 003 "What
low-dose naltrexone does for chronic pain" (pain clinic patient article); 004 "Uses and dosing of
LDN in fibromyalgia, Crohn's disease and multiple sclerosis" (clinical Q&A, January 2026). An opioid
taken after the start is an R2 alert (`r2_opioid_washout.opioid_alerts`). Time is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from ..model import Finding, Severity, TitrationRequest

PAIN_MIN, PAIN_MAX = 0, 10  # 0-10 numeric rating scale
REVIEW_WINDOW_DAYS = (56, 84)  # 8-12 weeks after the first dose (R6; 001)
REVIEW_WINDOW_TEXT = "8-12 weeks"  # REVIEW_WINDOW_DAYS in words, wherever the review is named
REVIEW_ACTIVITY_DISPLAY = f"LDN efficacy review ({REVIEW_WINDOW_TEXT})"  # = CodeSystem ldn-careplan-activity
REVIEW_ACTIVITY_TEXT = (f"Review pain and function after {REVIEW_WINDOW_TEXT} of consistent use; with no benefit, "
                        "consider stopping (R6; 001, 003).")
MONITORING_DAYS = 14  # withdrawal or more pain: the first dose step
MONITORING_DISPLAY = "Monitor for withdrawal signs or increased pain"
MONITORING_TEXT = "On starting, watch for opioid withdrawal signs or increased pain (R6; 000)."
SIDE_EFFECT_CHECK_DAYS = 28
SIDE_EFFECT_CHECK_TEXT = ("Vivid dreams (most common), headache, sleep disturbance, tachycardia, dizziness, nausea; "
                          "usually settle in the first weeks (R6; 000, 001, 004).")
FOLLOW_UP_TEXT = (f"Review efficacy at {REVIEW_WINDOW_TEXT} (benefit takes 2-4 months); monitor for withdrawal "
                  "signs or increased pain on starting. Common side effects: vivid dreams, headache, sleep "
                  "disturbance. 64% get some relief (004); ~30% pain reduction in fibromyalgia (003).")
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
    """The efficacy review window a plan starting on `start` books (REVIEW_WINDOW_TEXT)."""
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
    titration: TitrationRequest | None = None  # the new schedule (adjust)

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


def follow_up_finding() -> Finding:
    """The review, monitoring and outcome figures, shown with every assessment."""
    return Finding("R6", "000, 001, 003, 004", Severity.INFO, FOLLOW_UP_TEXT, (), "follow-up")
