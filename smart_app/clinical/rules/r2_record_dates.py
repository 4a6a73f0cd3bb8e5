"""R2 record dates: what a medication record's status and dates say about when the drug was used.

Rule R2, quoted from docs/clinical-rules.md ("What the record says about use"), sources 003, 004:
    "Medication statements, orders and dispenses all count. Active, intended and on-hold records,
    and completed use that ended inside the washout, are exposure. Entered-in-error, not-taken,
    cancelled and declined records are not. An unknown status, or an ended record whose dates
    cannot be read, is cannot-determine."
Sources: 003 "What low-dose naltrexone does for chronic pain" (pain clinic patient article); 004
"Uses and dosing of LDN in fibromyalgia, Crohn's disease and multiple sclerosis" (clinical Q&A,
January 2026); 21 CFR 1306.12 and 1306.22 (US controlled-substance prescription rules).

Undated orders and dispenses (issue 8): a stopped or completed order that says when it was
written but not when use ended is bounded, not guessed. What the order says comes first (its
validity period, supply per fill from expectedSupplyDuration or quantity / daily dose, number
of fills); where it says nothing, the US federal limits on controlled-substance prescriptions
give the latest possible day of use:
- 21 CFR 1306.22(a): a Schedule III or IV prescription is not filled or refilled more than six
  months after the date it was issued, nor refilled more than five times;
- 21 CFR 1306.12: a Schedule II prescription is never refilled, and (b) multiple Schedule II
  prescriptions may together authorise at most a 90-day supply.
So the last fill happens within 6 months (183 days) of the order, and hands over at most a 90-day
supply (the 1306.12(b) ceiling, taken as the most any one fill supplies): use ends no later than
273 days after the order was written. A dispense supplies at most 90 days from hand-over.
Assumptions, stated in docs/clinical-rules.md: federal law sets no fill deadline for Schedule II
(state limits found run from 7 days to 6 months) and no refill limit for Schedule V; refills are
taken when the previous supply runs out, at the prescribed rate. The bound is an upper bound:
a record whose bound reaches into the washout window still blocks (cannot-determine); one whose
bound is long past stops blocking.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

from ..errors import InvalidDate
from ..model import ExposureState

# Per resource type: status -> state. A status not listed (or missing) is UNKNOWN.
STATUS_STATES: dict[str, dict[str, ExposureState]] = {
    "MedicationStatement": {
        "active": ExposureState.CURRENT,
        "intended": ExposureState.CURRENT,
        "on-hold": ExposureState.CURRENT,
        "completed": ExposureState.ENDED,
        "stopped": ExposureState.ENDED,
        "entered-in-error": ExposureState.NONE,
        "not-taken": ExposureState.NONE,
    },
    "MedicationRequest": {
        "active": ExposureState.CURRENT,
        "on-hold": ExposureState.CURRENT,
        "draft": ExposureState.CURRENT,
        "completed": ExposureState.ENDED,
        "stopped": ExposureState.ENDED,
        "entered-in-error": ExposureState.NONE,
        "cancelled": ExposureState.NONE,
    },
    "MedicationDispense": {
        "preparation": ExposureState.CURRENT,
        "in-progress": ExposureState.CURRENT,
        "on-hold": ExposureState.CURRENT,
        "completed": ExposureState.ENDED,
        "stopped": ExposureState.ENDED,
        "entered-in-error": ExposureState.NONE,
        "cancelled": ExposureState.NONE,
        "declined": ExposureState.NONE,
    },
}


MAX_FILL_DAYS = 90  # 21 CFR 1306.12(b): the most a Schedule II prescription series may supply
FILL_WINDOW_DAYS = 183  # 21 CFR 1306.22(a): no fill or refill more than six months after issue
REGULATORY_BOUND = (f"US limits on controlled-substance prescriptions: no fill more than 6 months after the order "
                    f"(21 CFR 1306.22(a)), and at most a {MAX_FILL_DAYS}-day supply per fill (21 CFR 1306.12(b))")
DISPENSE_BOUND = f"one dispense supplying at most {MAX_FILL_DAYS} days (the 21 CFR 1306.12(b) ceiling)"
BOUNDED_TYPES = {"MedicationRequest": FILL_WINDOW_DAYS + MAX_FILL_DAYS, "MedicationDispense": MAX_FILL_DAYS}


@dataclass(frozen=True)
class RecordDates:
    """The dates a medication record carries, already reduced to calendar days."""

    start: date | None = None  # effective start, authoredOn, whenHandedOver
    end: date | None = None  # effective end / effectiveDateTime, dosage bounds end
    asserted: date | None = None  # MedicationStatement.dateAsserted (an upper bound on past use)
    supply_days: float | None = None  # daysSupply / expectedSupplyDuration x fills
    problem: str | None = None  # a date that was present but unreadable
    fill_by: date | None = None  # dispenseRequest.validityPeriod.end: the last day a fill may happen
    fill_days: float | None = None  # one fill's supply (expectedSupplyDuration), when given
    fills: int | None = None  # 1 + numberOfRepeatsAllowed, when given


@dataclass(frozen=True)
class Interpretation:
    state: ExposureState
    start: date | None
    last_exposure: date | None
    problem: str | None
    bound: str | None = None  # why last_exposure is only the latest possible day, not a recorded one


def interpret(resource_type: str, status: str | None, dates: RecordDates) -> Interpretation:
    """Status + dates -> exposure state and last day of use."""
    state = STATUS_STATES.get(resource_type, {}).get(status or "")
    if state is None:
        why = f"status '{status}' is not one we can interpret" if status else "the record has no status"
        return Interpretation(ExposureState.UNKNOWN, dates.start, None, why)
    if state is not ExposureState.ENDED:  # current use or no use: dates cannot change that
        return Interpretation(state, dates.start, None, None)
    if dates.problem:
        return Interpretation(ExposureState.UNKNOWN, dates.start, None, dates.problem)
    if dates.start and dates.end and dates.end < dates.start:
        why = f"the record ends ({dates.end}) before it starts ({dates.start})"
        return Interpretation(ExposureState.UNKNOWN, dates.start, None, why)
    last = last_day_of_use(dates)
    latest, bound = bounded_last_day(resource_type, dates, last)
    if latest is not None:
        return Interpretation(ExposureState.ENDED, dates.start, latest, None, bound)
    if last is None:
        why = f"status '{status}' but no date tells when use ended"
        return Interpretation(ExposureState.UNKNOWN, dates.start, None, why)
    return Interpretation(ExposureState.ENDED, dates.start, last, None)


def last_day_of_use(dates: RecordDates) -> date | None:
    """The latest day the record itself allows use on (conservative: the latest candidate).

    dateAsserted is only a fallback: use ended no later than the day it was reported.
    """
    candidates = [dates.end] if dates.end else []
    if dates.start and dates.supply_days:
        candidates.append(dates.start + timedelta(days=dates.supply_days))
    if dates.fill_by and dates.fill_days:
        candidates.append(dates.fill_by + timedelta(days=dates.fill_days))
    if not candidates and dates.asserted:
        candidates.append(dates.asserted)
    return max(candidates) if candidates else None


def bounded_last_day(resource_type: str, dates: RecordDates, recorded: date | None) -> tuple[date | None, str | None]:
    """The latest possible day of use, and why, where the record leaves it open; (None, None) where it does not."""
    if dates.fill_by and not dates.fill_days:
        latest = dates.fill_by + timedelta(days=MAX_FILL_DAYS)
        if recorded is None or latest > recorded:
            return latest, (f"a last fill on {dates.fill_by} (end of the order's validity period) of at most "
                            f"{MAX_FILL_DAYS} days")
        return None, None
    if recorded is not None or dates.start is None or resource_type not in BOUNDED_TYPES:
        return None, None
    if resource_type == "MedicationDispense":
        return dates.start + timedelta(days=MAX_FILL_DAYS), DISPENSE_BOUND
    longest = BOUNDED_TYPES[resource_type]
    if dates.fills and dates.fills * MAX_FILL_DAYS < longest:
        return (dates.start + timedelta(days=dates.fills * MAX_FILL_DAYS),
                f"its {dates.fills} fill(s) of at most {MAX_FILL_DAYS} days each")
    return dates.start + timedelta(days=longest), REGULATORY_BOUND


def parse_fhir_date(value: object, *, end_of_period: bool = False) -> date:
    """FHIR date/dateTime/instant -> date; partial dates widen to their first or last day.

    Raises InvalidDate on anything that is not a FHIR date.
    """
    if not isinstance(value, str):
        raise InvalidDate(f"not a date: {value!r}")
    try:
        return _calendar_day(value, end_of_period)
    except ValueError as exc:  # int() / date() on a malformed part
        raise InvalidDate(f"not a date: {value!r}") from exc


def _calendar_day(value: str, end_of_period: bool) -> date:
    head = value[:10]
    parts = head.split("-")
    if len(parts) == 3:
        return date.fromisoformat(head)
    year = int(parts[0])
    if len(parts) == 2:
        month = int(parts[1])
        day = calendar.monthrange(year, month)[1] if end_of_period else 1
        return date(year, month, day)
    if len(parts) == 1 and len(parts[0]) == 4:
        return date(year, 12, 31) if end_of_period else date(year, 1, 1)
    raise InvalidDate(f"not a date: {value!r}")
