"""The LDN decision: every rule's findings (rules/r1-r6) combined into one Assessment, the most severe deciding.

Decision precedence (docs/clinical-rules.md "How a decision is reached"): contraindicated >
cannot-determine > not-recommended > eligible-with-cautions > eligible; a washout (wait) blocks
only the start date it is for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from .classify import classify, refs_with, summarize_conditions
from .model import (
    DECISION_ORDER,
    SEVERITY_DECISION,
    Assessment,
    Classification,
    ConditionRole,
    ConditionSummary,
    Decision,
    Diagnosis,
    Finding,
    MedClass,
    MedicationExposure,
    MedicationSummary,
)
from .rules.r1_titration import protocol_finding
from .rules.r2_opioid_washout import (
    WASHOUT_DEFAULT,
    antagonist_findings,
    antidiarrheal_findings,
    data_problem_findings,
    earliest_start,
    opioid_findings,
    oud_findings,
    reading_findings,
    unclassified_findings,
    unreadable_findings,
    validate_washout,
)
from .rules.r3_indications import default_reasons, indication_findings
from .rules.r4_guidelines_against import guideline_findings
from .rules.r5_contraindications import liver_findings, naltrexone_findings, surgery_hold_finding
from .rules.r6_follow_up import follow_up_finding
from .terminology import Terminology

FINDERS = {  # opioids go through opioid_findings with their classification (methadone/buprenorphine wording)
    MedClass.UNCLASSIFIED: unclassified_findings,
    MedClass.OPIOID_ANTIDIARRHEAL: antidiarrheal_findings,
    MedClass.OPIOID_ANTAGONIST: antagonist_findings,
    MedClass.NALTREXONE: naltrexone_findings,
}


def medication_findings(med: MedicationExposure, cls: Classification, start: date, washout_days: int) -> list[Finding]:
    """The class's findings (R2, R5), plus: a drug that could not be read, readings that disagree, text mentions."""
    out = unreadable_findings(med)
    finder = FINDERS.get(cls.category)
    if cls.category is MedClass.OPIOID:
        out.extend(opioid_findings(med, start, washout_days, cls))
    elif finder and not (out and cls.category is MedClass.UNCLASSIFIED):
        out.extend(finder(med, start, washout_days))
    return out + reading_findings(med, cls, start, washout_days)


def condition_findings(conds: Sequence[ConditionSummary], reasons: Sequence[str]) -> list[Finding]:
    """R5 liver, R2 opioid use disorder, R3 indications, R4 Crohn's / MS as the reason."""
    return [*liver_findings(conds), *oud_findings(conds), *indication_findings(conds),
            *guideline_findings(conds, reasons)]


def standing_findings() -> list[Finding]:
    """R1 protocol, R5 surgery hold and R6 follow-up, shown with every assessment."""
    return [protocol_finding(), surgery_hold_finding(), follow_up_finding()]


def decide(findings: Iterable[Finding]) -> Decision:
    """The decision the most severe finding forces."""
    worst = Decision.ELIGIBLE
    for f in findings:
        d = SEVERITY_DECISION[f.severity]
        if DECISION_ORDER.index(d) > DECISION_ORDER.index(worst):
            worst = d
    return worst


def assess(
    patient: str,
    medications: Sequence[MedicationExposure],
    conditions: Sequence[Diagnosis],
    *,
    as_of: date,
    terminology: Terminology,
    washout_days: int = WASHOUT_DEFAULT,
    start: date | None = None,
    reasons: Sequence[str] | None = None,
    data_problems: Sequence[str] = (),
) -> Assessment:
    """Assess LDN for a first dose on `start` (default `as_of`), with data known on `as_of`."""
    validate_washout(washout_days)
    start = start or as_of
    findings: list[Finding] = data_problem_findings(data_problems)
    summaries, opioids = [], []
    for med in medications:
        cls = classify(med, terminology)
        summaries.append(MedicationSummary(med.resource, med.name, cls.category, cls.evidence, med.status,
                                           med.state, med.last_exposure, med.date_problem))
        if cls.category is MedClass.OPIOID:
            opioids.append(med)
        findings.extend(medication_findings(med, cls, start, washout_days))
    conds = summarize_conditions(conditions, as_of, terminology)
    chosen = tuple(reasons) if reasons else default_reasons(conds)
    findings.extend(condition_findings(conds, chosen))
    findings.extend(standing_findings())
    return Assessment(
        patient=patient, as_of=as_of, start_date=start, washout_days=washout_days, decision=decide(findings),
        findings=tuple(findings), medications=tuple(summaries), conditions=conds,
        earliest_start_date=earliest_start(opioids, washout_days),
        indications=refs_with(conds, ConditionRole.INDICATION), reasons=chosen,
    )
