"""The LDN decision: conditions (R3, R4, R5) and medications (R2) combined into one Assessment.

Sources (CLINICAL_RULES): R3 "No qualifying indication on the problem list is a caution,
not a block." R4 (004) "should NOT be used in Crohn's disease or multiple sclerosis" - as
the reason for the order only. R5 (004, 001) acute hepatitis / decompensated cirrhosis:
avoid; chronic liver disease without decompensation: a caution (naltrexone US label,
"use in active liver disease must be carefully considered"). R2 (issue 8): an active opioid
use disorder with no documented remission cannot be ruled out from a medication list
(illicit use is never in it): cannot-determine; in remission: a caution. Decision
precedence: contraindicated > cannot-determine > not-recommended > eligible-with-cautions >
eligible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from .model import (
    DECISION_ORDER,
    SEVERITY_DECISION,
    Assessment,
    ConditionSummary,
    Decision,
    Diagnosis,
    Finding,
    MedClass,
    MedicationExposure,
    MedicationSummary,
    Severity,
)
from .opioids import WASHOUT_DEFAULT, classify, earliest_start, medication_findings, validate_washout
from .terminology import Terminology

CONDITION_VALUESETS = {
    "ldn-indications": "indication",
    "ldn-likely-responders": "likely-responder",
    "ldn-unlikely-responders": "unlikely-responder",
    "ldn-recommended-against": "crohns",
    "ldn-insufficient-evidence": "ms",
    "ldn-contraindicated-conditions": "hepatic",
    "ldn-liver-caution": "liver-caution",
    "opioid-use-disorder": "oud",
    "opioid-use-disorder-remission": "oud-remission",
}
NOT_COUNTED_VERIFICATION = {"entered-in-error", "refuted"}
NOT_COUNTED_CLINICAL = {"inactive", "remission", "resolved"}


def condition_categories(dx: Diagnosis, terminology: Terminology) -> tuple[str, ...]:
    """The rule roles of a diagnosis (memoized per distinct coding + text)."""
    key = ("condition", dx.codings, dx.text)
    found = terminology.memo.get(key)
    if found is None:
        found = terminology.memo[key] = _condition_categories(dx, terminology)
    return found


def _condition_categories(dx: Diagnosis, terminology: Terminology) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for c in dx.codings:
        for m in terminology.code_matches(c.system, c.code):
            if m.valueset in CONDITION_VALUESETS:
                found[CONDITION_VALUESETS[m.valueset]] = None
    for name in (dx.text, *(c.display for c in dx.codings)):
        for m in terminology.name_matches(name):
            if m.valueset in CONDITION_VALUESETS:
                found[CONDITION_VALUESETS[m.valueset]] = None
    return tuple(found)


def condition_counts(dx: Diagnosis, as_of: date) -> bool:
    """Active, not refuted or entered in error, not abated. Missing status counts (conservative)."""
    if dx.verification_status in NOT_COUNTED_VERIFICATION:
        return False
    if dx.clinical_status in NOT_COUNTED_CLINICAL:
        return False
    return not (dx.abatement and dx.abatement <= as_of)


def summarize_conditions(conditions: Iterable[Diagnosis], as_of: date, terminology: Terminology):
    return tuple(
        ConditionSummary(dx.resource, dx.name, condition_categories(dx, terminology), condition_counts(dx, as_of),
                         dx.clinical_status, dx.verification_status)
        for dx in conditions
    )


def _refs(conds: Sequence[ConditionSummary], category: str) -> tuple[str, ...]:
    return tuple(c.resource for c in conds if c.counts and category in c.categories)


def oud_refs(conds: Sequence[ConditionSummary]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(active OUD with no documented remission, OUD in remission or past).

    Remission is documented by a remission code or clinicalStatus; an inactive, resolved or
    abated OUD diagnosis counts as past (a caution), never as nothing.
    """
    active, remission = [], []
    for c in conds:
        if "oud" not in c.categories or c.verification_status in NOT_COUNTED_VERIFICATION:
            continue
        in_remission = "oud-remission" in c.categories or not c.counts
        (remission if in_remission else active).append(c.resource)
    return tuple(active), tuple(remission)


def _names(conds: Sequence[ConditionSummary], refs: Iterable[str]) -> str:
    by_ref = {c.resource: c.name for c in conds}
    return ", ".join(by_ref.get(r, r) for r in refs)


def default_reasons(conds: Sequence[ConditionSummary]) -> tuple[str, ...]:
    """The order's reason: qualifying indications, else the Crohn's/MS diagnoses (R4)."""
    return _refs(conds, "indication") or (_refs(conds, "crohns") + _refs(conds, "ms"))


def condition_findings(conds: Sequence[ConditionSummary], reasons: Sequence[str]) -> list[Finding]:
    out: list[Finding] = []
    hepatic = _refs(conds, "hepatic")
    if hepatic:
        out.append(Finding("R5", "004, 001", Severity.CONTRAINDICATION,
                           f"Avoid LDN: {_names(conds, hepatic)} (acute hepatitis or decompensated liver disease).",
                           hepatic, "hepatic-contraindication"))
    chronic = tuple(r for r in _refs(conds, "liver-caution") if r not in hepatic)
    if chronic:
        out.append(Finding("R5", "naltrexone US label (hepatotoxicity); 004", Severity.CAUTION,
                           f"Chronic liver disease without documented decompensation ({_names(conds, chronic)}): "
                           "the naltrexone label asks that use in active liver disease be carefully considered; "
                           "004 names only acute hepatitis and decompensated cirrhosis as reasons to avoid LDN. "
                           "Check for decompensation and liver tests before starting.", chronic, "liver-caution"))
    out.extend(oud_findings(conds))
    out.extend(indication_findings(conds))
    out.extend(r4_findings(conds, reasons))
    return out


def oud_findings(conds: Sequence[ConditionSummary]) -> list[Finding]:
    active, remission = oud_refs(conds)
    out = []
    if active:
        out.append(Finding("R2", "003, 004", Severity.CANNOT_DETERMINE,
                           f"Active opioid use disorder with no documented remission ({_names(conds, active)}). "
                           "Illicit opioid use never appears in a medication list, so opioid exposure cannot be "
                           "ruled out from the record: the clinician must confirm with the patient that there is no "
                           "current opioid use (including methadone or buprenorphine treatment) and attest it.",
                           active, "opioid-use-disorder-active"))
    if remission:
        out.append(Finding("R2", "003, 004", Severity.CAUTION,
                           f"Opioid use disorder in remission or past ({_names(conds, remission)}): confirm there "
                           "is no current opioid use before starting; LDN precipitates withdrawal in anyone who "
                           "still takes opioids.", remission, "opioid-use-disorder-remission"))
    return out


def indication_findings(conds: Sequence[ConditionSummary]) -> list[Finding]:
    indications = _refs(conds, "indication")
    if not indications:
        return [Finding("R3", "000, 004", Severity.CAUTION,
                        "No qualifying indication on the active problem list (fibromyalgia, CRPS, painful "
                        "diabetic neuropathy, low back pain, neuropathic corneal pain, chronic neuropathic "
                        "pain). LDN is off-label, considered after failed lines of therapy and a risk/benefit "
                        "discussion.", (), "no-indication")]
    out = [Finding("R3", "000, 002, 004", Severity.INFO,
                   f"Qualifying off-label indication: {_names(conds, indications)}. LDN is considered after "
                   "multiple failed lines of therapy, after a risk/benefit discussion.", indications,
                   "indication")]
    likely = _refs(conds, "likely-responder")
    if likely:
        out.append(Finding("R3", "004", Severity.INFO,
                           f"Neuropathic pain or CRPS ({_names(conds, likely)}): more likely to respond (p=0.018).",
                           likely, "likely-responder"))
    unlikely = _refs(conds, "unlikely-responder")
    if unlikely:
        out.append(Finding("R3", "004", Severity.INFO,
                           f"Spondylosis ({_names(conds, unlikely)}): much less likely to respond (p=0.00435).",
                           unlikely, "unlikely-responder"))
    return out


def r4_findings(conds: Sequence[ConditionSummary], reasons: Sequence[str]) -> list[Finding]:
    out: list[Finding] = []
    crohns, ms = _refs(conds, "crohns"), _refs(conds, "ms")
    crohns_reason = tuple(r for r in reasons if r in crohns)
    ms_reason = tuple(r for r in reasons if r in ms)
    if crohns_reason:
        out.append(Finding("R4", "004", Severity.NOT_RECOMMENDED,
                           f"Recommended against: {_names(conds, crohns_reason)} as the reason for LDN. The "
                           "Canadian Association of Gastroenterology recommends against naltrexone to induce or "
                           "maintain remission (conditional; low / very low quality evidence). Proceeding "
                           "requires a recorded reason.", crohns_reason, "crohns-reason"))
    elif crohns:
        out.append(Finding("R4", "004", Severity.INFO,
                           f"{_names(conds, crohns)}: guidelines recommend against LDN for Crohn's itself; the "
                           "order is for another indication.", crohns, "crohns-context"))
    if crohns:
        out.append(Finding("R4", "001, 002", Severity.INFO,
                           "Context: older sources (001, 002) report anti-inflammatory benefit in Crohn's; the "
                           "newer guideline summary (004, January 2026) overrides them.", crohns,
                           "crohns-older-sources"))
    if ms_reason:
        out.append(Finding("R4", "004", Severity.CAUTION,
                           f"Insufficient evidence: {_names(conds, ms_reason)} as the reason for LDN - efficacy "
                           "is not shown despite safety and tolerability data.", ms_reason, "ms-reason"))
    elif ms:
        out.append(Finding("R4", "004", Severity.INFO,
                           f"{_names(conds, ms)}: insufficient evidence for LDN in MS itself; the order is for "
                           "another indication.", ms, "ms-context"))
    return out


def standing_findings() -> list[Finding]:
    """R1, R5 surgery hold and R6 context shown with every assessment."""
    return [
        Finding("R1", "001, 004", Severity.INFO,
                "Protocol: 1.5 mg at bedtime, +1.5 mg every 2 weeks, target and maximum 4.5 mg; oral, "
                "compounded (commercial tablets are 50 mg).", (), "protocol"),
        Finding("R5", "004, 001", Severity.INFO,
                "Hold LDN 2-3 days before elective procedures needing opioids; stop before any procedure "
                "needing opioid analgesia.", (), "surgery-hold"),
        Finding("R6", "000, 001, 003, 004", Severity.INFO,
                "Review efficacy at 8-12 weeks (benefit takes 2-4 months); monitor for withdrawal signs or "
                "increased pain on starting. Common side effects: vivid dreams, headache, sleep disturbance. "
                "64% get some relief (004); ~30% pain reduction in fibromyalgia (003).", (), "follow-up"),
    ]


def decide(findings: Iterable[Finding]) -> Decision:
    worst = Decision.ELIGIBLE
    for f in findings:
        d = SEVERITY_DECISION[f.severity]
        if DECISION_ORDER.index(d) > DECISION_ORDER.index(worst):
            worst = d
    return worst


def data_problem_findings(problems: Iterable[str]) -> list[Finding]:
    return [Finding("R2", "docs/clinical-rules.md", Severity.CANNOT_DETERMINE,
                    f"Data could not be read: {p}. Opioid exposure and contraindications cannot be "
                    "ruled out.", (), "data-unreadable")
            for p in problems]


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
        earliest_start_date=earliest_start(opioids, washout_days), indications=_refs(conds, "indication"),
        reasons=chosen,
    )
