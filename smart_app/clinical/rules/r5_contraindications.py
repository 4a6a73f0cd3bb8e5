"""R5 contraindications and holds: liver disease, duplicate naltrexone, the hold before procedures.

Rule R5, quoted from docs/clinical-rules.md ("R5 Contraindications and holds"), sources 004, 001 and
the naltrexone label:
    "Acute hepatitis (viral A, B, D, E or unspecified; alcoholic, toxic), fulminant hepatitis, hepatic
    coma and encephalopathy, hepatic failure and end-stage liver disease, and decompensated cirrhosis
    ... are contraindications (004: avoid LDN; the naltrexone label contraindicates naltrexone in
    acute hepatitis and liver failure)."
    "Chronic hepatitis or cirrhosis without decompensation is a caution."
    "Already taking naltrexone in any form (LDN, 50 mg, naltrexone-bupropion): duplicate therapy; the
    app shows it and does not write a second order."
    "Before elective procedures that will need opioids, LDN is held for 2-3 days (004), and stopped
    before any procedure needing opioid pain relief (001). This goes into the care plan and the
    patient instructions."
Sources: 004 "Uses and dosing of LDN in fibromyalgia, Crohn's disease and multiple sclerosis"
(clinical Q&A, January 2026); 001 "Typical naltrexone dose for reducing inflammation" (clinical Q&A,
July 2025); US prescribing information for naltrexone hydrochloride 50 mg tablets. Current opioid
use, the first contraindication of R5, is found by `r2_opioid_washout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from ..classify import names_of, refs_with
from ..model import ConditionRole, ConditionSummary, ExposureState, Finding, MedicationExposure, Severity
from .r2_opioid_washout import record_words

SOURCE = "004, 001"
HOLD_DAYS_TEXT = "2-3 days"  # before elective procedures needing opioids (004)
SURGERY_HOLD_TEXT = (f"Hold LDN {HOLD_DAYS_TEXT} before elective procedures needing opioids; stop before any "
                     "procedure needing opioid analgesia")
HOLD_ACTIVITY_DISPLAY = "Hold LDN before procedures needing opioids"
HOLD_ACTIVITY_TEXT = SURGERY_HOLD_TEXT + "; avoid alcohol (R5; 001, 003, 004)."


def liver_findings(conds: Sequence[ConditionSummary]) -> list[Finding]:
    """Acute or decompensated liver disease: avoid LDN; chronic liver disease without decompensation: caution."""
    out: list[Finding] = []
    hepatic = refs_with(conds, ConditionRole.HEPATIC)
    if hepatic:
        out.append(Finding("R5", SOURCE, Severity.CONTRAINDICATION,
                           f"Avoid LDN: {names_of(conds, hepatic)} (acute hepatitis or decompensated liver disease).",
                           hepatic, "hepatic-contraindication"))
    chronic = tuple(r for r in refs_with(conds, ConditionRole.LIVER_CAUTION) if r not in hepatic)
    if chronic:
        out.append(Finding("R5", "naltrexone US label (hepatotoxicity); 004", Severity.CAUTION,
                           f"Chronic liver disease without documented decompensation ({names_of(conds, chronic)}): "
                           "the naltrexone label asks that use in active liver disease be carefully considered; "
                           "004 names only acute hepatitis and decompensated cirrhosis as reasons to avoid LDN. "
                           "Check for decompensation and liver tests before starting.", chronic, "liver-caution"))
    return out


def _duplicate(severity: Severity, code: str, text: str, med: MedicationExposure) -> Finding:
    return Finding("R5", SOURCE, severity, text, (med.resource,), code)


def naltrexone_findings(med: MedicationExposure, start: date, washout_days: int) -> list[Finding]:
    """Duplicate therapy: a current naltrexone record blocks, an undated one cannot be ruled out."""
    what = record_words(med)
    if med.own_order_key and med.state is not ExposureState.ENDED:  # this app's own order: not a duplicate
        return [_duplicate(Severity.CAUTION, "own-order",
                            f"This app's own earlier LDN order: {what}. Signing a different plan adds a second "
                            "order: stop this one in the EHR first.", med)]
    if med.state is ExposureState.CURRENT:
        return [_duplicate(Severity.CONTRAINDICATION, "naltrexone-duplicate",
                            f"Already on naltrexone: {what}. Duplicate therapy; no second order "
                            "will be written.", med)]
    if med.state is ExposureState.UNKNOWN:
        return [_duplicate(Severity.CANNOT_DETERMINE, "naltrexone-undated",
                            f"Naltrexone record {what}: {med.date_problem}. Confirm the patient is "
                            "not still taking it (duplicate therapy).", med)]
    if med.state is ExposureState.ENDED:
        return [_duplicate(Severity.INFO, "naltrexone-past",
                            f"Previous naltrexone use ended {med.last_exposure}: {what}.", med)]
    return []


def surgery_hold_finding() -> Finding:
    """The hold before procedures, shown with every assessment."""
    return Finding("R5", SOURCE, Severity.INFO, SURGERY_HOLD_TEXT + ".", (), "surgery-hold")
