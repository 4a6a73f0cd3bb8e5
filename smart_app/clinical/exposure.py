"""R2 status and date semantics: what a medication record says about when the drug was used.

Source (CLINICAL_RULES R2; 003, 004): "active / intended / on-hold / recent completed use is
exposure; entered-in-error is not; not-taken is not; an unknown status or a missing date is
'cannot determine', never 'no exposure'."
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

from .model import ExposureState

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


@dataclass(frozen=True)
class RecordDates:
    """The dates a medication record carries, already reduced to calendar days."""

    start: date | None = None  # effective start, authoredOn, whenHandedOver
    end: date | None = None  # effective end / effectiveDateTime, validity end, bounds end
    asserted: date | None = None  # MedicationStatement.dateAsserted (an upper bound on past use)
    supply_days: float | None = None  # daysSupply / expectedSupplyDuration x fills
    problem: str | None = None  # a date that was present but unreadable


@dataclass(frozen=True)
class Interpretation:
    state: ExposureState
    start: date | None
    last_exposure: date | None
    problem: str | None


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
    if last is None:
        why = f"status '{status}' but no date tells when use ended"
        return Interpretation(ExposureState.UNKNOWN, dates.start, None, why)
    return Interpretation(ExposureState.ENDED, dates.start, last, None)


def last_day_of_use(dates: RecordDates) -> date | None:
    """The latest day the record allows use on (conservative: the latest candidate).

    dateAsserted is only a fallback: use ended no later than the day it was reported.
    """
    candidates = [dates.end] if dates.end else []
    if dates.start and dates.supply_days:
        candidates.append(dates.start + timedelta(days=dates.supply_days))
    if not candidates and dates.asserted:
        candidates.append(dates.asserted)
    return max(candidates) if candidates else None


def parse_fhir_date(value: object, *, end_of_period: bool = False) -> date | None:
    """FHIR date/dateTime/instant -> date; partial dates widen to their first or last day.

    Raises ValueError on a string that is not a FHIR date.
    """
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
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
    raise ValueError(f"not a date: {value!r}")
