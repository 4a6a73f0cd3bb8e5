"""R1 dose, timing and titration: the schedule, its limits, and the words the order and findings share.

Rule R1, quoted from docs/clinical-rules.md ("R1 Dose and titration"), sources 000, 001, 002, 004:
    "LDN doses run from 1 to 4.5 mg once a day (000). The default schedule (001, 004) starts at
    1.5 mg at bedtime and rises by 1.5 mg every two weeks to 4.5 mg, which is also the ceiling."
    "The app refuses a dose above 4.5 mg or below 0.5 mg, a step or interval that is not positive,
    and a target lower than the starting dose; nothing is written in that case."
    "LDN is taken by mouth and must be compounded (capsules or liquid), because naltrexone tablets
    are only sold as 50 mg (000, 001, 002) ... Compounded LDN keeps for about a year at room
    temperature away from light, and supplies of 30, 60 or 90 days are usual (002)."
Sources: 000 "Recommended naltrexone dosing and management for pain control" (clinical Q&A, June
2025); 001 "Typical naltrexone dose for reducing inflammation" (clinical Q&A, July 2025); 002
"Low-dose naltrexone for pain" (compounding pharmacy article); 004 "Uses and dosing of LDN in
fibromyalgia, Crohn's disease and multiple sclerosis" (clinical Q&A, January 2026).
"""

from __future__ import annotations

from datetime import timedelta

from ..errors import InvalidTitration
from ..model import Finding, Severity, TitrationRequest, TitrationStep

MIN_DOSE_MG = 0.5
MAX_DOSE_MG = 4.5
MAX_STEPS = 12  # beyond this the schedule is unreadable for a patient; no source allows more
MAX_SUPPLY_DAYS = 365  # compounded LDN potency limit (002)
DOSE_RANGE_TEXT = f"{MIN_DOSE_MG:g}-{MAX_DOSE_MG:g} mg"
PROTOCOL_TEXT = ("Protocol: 1.5 mg at bedtime, +1.5 mg every 2 weeks, target and maximum 4.5 mg; oral, "
                 "compounded (commercial tablets are 50 mg).")
PHARMACY_NOTE = (
    "Compounded low-dose naltrexone: commercial naltrexone tablets are 50 mg, so LDN must be compounded "
    "(capsules or liquid). Oral; potency up to one year at room temperature away from light (R1; 000, 001, 002)."
)


def validation_problems(req: TitrationRequest) -> list[str]:
    """Every R1 problem with the requested values, in plain words (empty when valid)."""
    problems = []
    for label, dose in (("Start dose", req.start_dose_mg), ("Target dose", req.target_mg)):
        if dose > MAX_DOSE_MG:
            problems.append(f"{label} {dose:g} mg is above the LDN maximum of {MAX_DOSE_MG:g} mg (R1).")
        if dose < MIN_DOSE_MG:
            problems.append(f"{label} {dose:g} mg is below the minimum of {MIN_DOSE_MG:g} mg (R1).")
    if req.step_mg <= 0:
        problems.append(f"Step {req.step_mg:g} mg must be positive (R1).")
    if req.interval_days <= 0:
        problems.append(f"Interval {req.interval_days} days must be positive (R1).")
    if req.target_mg < req.start_dose_mg:
        problems.append(f"Target {req.target_mg:g} mg is below the start dose {req.start_dose_mg:g} mg (R1).")
    if not 1 <= req.supply_days <= MAX_SUPPLY_DAYS:
        problems.append(f"Supply of {req.supply_days} days must be 1-{MAX_SUPPLY_DAYS} days (R1, 002).")
    if not problems and _step_count(req) > MAX_STEPS:
        problems.append(f"The schedule would have {_step_count(req)} steps; at most {MAX_STEPS} are allowed - "
                        "use a larger step.")
    return problems


def _doses(req: TitrationRequest) -> list[float]:
    doses = [round(req.start_dose_mg, 2)]
    while doses[-1] < req.target_mg - 1e-9 and len(doses) <= MAX_STEPS:
        doses.append(round(min(doses[-1] + req.step_mg, req.target_mg), 2))
    return doses


def _step_count(req: TitrationRequest) -> int:
    return len(_doses(req))


def build_schedule(req: TitrationRequest) -> tuple[TitrationStep, ...]:
    """The steps; raises InvalidTitration listing every problem when the request breaks R1."""
    problems = validation_problems(req)
    if problems:
        raise InvalidTitration(tuple(problems))
    doses = _doses(req)
    steps = []
    for i, dose in enumerate(doses):
        begin = req.start + timedelta(days=i * req.interval_days)
        last = i == len(doses) - 1
        end = None if last else begin + timedelta(days=req.interval_days - 1)
        steps.append(TitrationStep(i + 1, dose, begin, end))
    return tuple(steps)


def describe_step(step: TitrationStep, first_day) -> str:
    """Patient-readable text: 'Take 1.5 mg by mouth at bedtime, days 1-14 (...)'."""
    day_from = (step.start - first_day).days + 1
    if step.end is None:
        return (f"Take {step.dose_mg:g} mg by mouth at bedtime every night from day {day_from} "
                f"({step.start.isoformat()}) on.")
    day_to = (step.end - first_day).days + 1
    return (f"Take {step.dose_mg:g} mg by mouth at bedtime, days {day_from}-{day_to} "
            f"({step.start.isoformat()} to {step.end.isoformat()}).")


def protocol_finding() -> Finding:
    """The default protocol, shown with every assessment."""
    return Finding("R1", "001, 004", Severity.INFO, PROTOCOL_TEXT, (), "protocol")
