"""R2 opioids and the washout: opioid exposure, opioid use disorder and unreadable data, as findings.

Rule R2, quoted from docs/clinical-rules.md ("R2 Opioids"), sources 000-004:
    "Naltrexone blocks opioid receptors: with an opioid it removes pain relief and can bring on
    withdrawal; 004 says prescribing it to a patient on opioids defeats both treatments."
    "A patient who has taken an opioid must be free of it for 7-10 days before the first LDN dose
    (004; 'at least a week', 003). The app uses 10 days unless configured to 7-10, and reports the
    first safe start date counted from the last day of use."
    "An active diagnosis of opioid use disorder, abuse or dependence with no documented remission is
    therefore cannot-determine ... A diagnosis documented as in remission ... is a caution."
    "A medicine with no recognised code and no readable name is listed as unclassified; while it is
    active or inside the washout, the decision is cannot-determine."
Sources: 003 "What low-dose naltrexone does for chronic pain" (pain clinic patient article); 004
"Uses and dosing of LDN in fibromyalgia, Crohn's disease and multiple sclerosis" (clinical Q&A,
January 2026). What a record says about the dates of use: `r2_record_dates`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta

from ..classify import NOT_COUNTED_VERIFICATION, names_of
from ..errors import InvalidWashout
from ..model import (
    Classification,
    ConditionRole,
    ConditionSummary,
    ExposureState,
    Finding,
    MedClass,
    MedicationExposure,
    MedicationSummary,
    Severity,
)

WASHOUT_DEFAULT = 10
WASHOUT_RANGE = (7, 10)


def validate_washout(days: int) -> int:
    """The washout, when R2 allows it (7-10 days); InvalidWashout otherwise."""
    low, high = WASHOUT_RANGE
    if not isinstance(days, int) or not low <= days <= high:
        raise InvalidWashout(f"washout must be {low}-{high} days (R2, 004), got {days!r}")
    return days


def safe_from(last_exposure: date, washout_days: int) -> date:
    """First day a dose may be given after the last opioid day (opioid-free for washout days)."""
    return last_exposure + timedelta(days=washout_days)


def is_undated(med: MedicationExposure) -> bool:
    """Use whose last day is not known: an unknown state, or an end with no last day (never 'no exposure')."""
    return med.state is ExposureState.UNKNOWN or (med.state is ExposureState.ENDED and med.last_exposure is None)


def has_exposure_within(med: MedicationExposure, start: date, washout_days: int) -> bool:
    """Current use, or use ended too recently (or on a day not known) for a first dose on `start`."""
    if med.state is ExposureState.CURRENT:
        return True
    last = med.last_exposure
    return med.state is ExposureState.ENDED and (last is None or start < safe_from(last, washout_days))


def earliest_start(opioids: Iterable[MedicationExposure], washout_days: int) -> date | None:
    """Latest washout end over ended opioid use; None if any use is current or undated."""
    ends = []
    for med in opioids:
        if med.state is ExposureState.CURRENT or is_undated(med):
            return None
        if med.state is ExposureState.ENDED and med.last_exposure is not None:
            ends.append(safe_from(med.last_exposure, washout_days))
    return max(ends) if ends else None


def _finding(severity: Severity, code: str, text: str, med: MedicationExposure, *, source: str = "003, 004"
             ) -> Finding:
    return Finding("R2", source, severity, text, (med.resource,), code)


def record_words(med: MedicationExposure) -> str:
    """The record as findings name it: drug, resource type and status."""
    return f"{med.name} ({med.resource_type}, status {med.status or 'missing'})"


def is_oud_treatment(cls: Classification, med: MedicationExposure) -> bool:
    """Methadone or buprenorphine: possibly opioid use disorder treatment, never to be stopped for LDN."""
    text = " ".join((cls.evidence, *med.names)).lower()
    return "methadone" in text or "buprenorphine" in text


def opioid_findings(med: MedicationExposure, start: date, washout_days: int,
                    cls: Classification | None = None) -> list[Finding]:
    what = record_words(med)
    if med.state is ExposureState.CURRENT and cls and is_oud_treatment(cls, med):
        return [_finding(Severity.CONTRAINDICATION, "opioid-current",
                         f"Current opioid: {what}. LDN is not for patients who need opioid therapy (004): it "
                         "blocks opioid effects and can precipitate withdrawal. This is not a reason to stop or "
                         "change methadone or buprenorphine treatment.", med, source="004")]
    if med.state is ExposureState.CURRENT:
        return [_finding(Severity.CONTRAINDICATION, "opioid-current",
                         f"Current opioid: {what}. LDN blocks opioid analgesia and can precipitate "
                         f"withdrawal; the opioid must be stopped and the patient opioid-free for "
                         f"{washout_days} days before the first dose.", med)]
    if is_undated(med):
        return [_finding(Severity.CANNOT_DETERMINE, "opioid-undated",
                         f"Opioid {what}: {med.date_problem or 'no date tells when use ended'}. Cannot determine "
                         f"whether the patient has been opioid-free for {washout_days} days; confirm with the "
                         "patient.", med)]
    last = med.last_exposure
    if med.state is ExposureState.ENDED and last is not None and med.bound:
        return bounded_opioid_findings(med, last, what, start, washout_days)
    if med.state is ExposureState.ENDED and last is not None:
        ok_from = safe_from(last, washout_days)
        if start < ok_from:
            return [_finding(Severity.WAIT, "opioid-washout",
                             f"Opioid exposure until {med.last_exposure}: {what}. The patient must be "
                             f"opioid-free for {washout_days} days; earliest safe start {ok_from}.", med)]
        return [_finding(Severity.INFO, "opioid-past",
                         f"Past opioid use ended {med.last_exposure}: {what}; the {washout_days}-day "
                         f"washout is complete by {ok_from}.", med)]
    return [_finding(Severity.INFO, "opioid-not-exposure",
                     f"Not counted as exposure: {what}.", med)]


def bounded_opioid_findings(med: MedicationExposure, last: date, what: str, start: date,
                            washout_days: int) -> list[Finding]:
    """An ended opioid record with no recorded end: blocks while its latest possible day (`last`) is inside the
    washout."""
    ok_from = safe_from(last, washout_days)
    since = f" (written {med.start})" if med.start else ""
    if start < ok_from:
        return [_finding(Severity.CANNOT_DETERMINE, "opioid-undated",
                         f"Opioid {what}{since}: the record does not say when use ended. Bounded by "
                         f"{med.bound}, use may have continued until {med.last_exposure} at the latest, so the "
                         f"patient may not yet be opioid-free for {washout_days} days; confirm with the patient "
                         f"(opioid-free for certain from {ok_from}).", med)]
    return [_finding(Severity.INFO, "opioid-past",
                     f"Past opioid use{since} ended no later than {med.last_exposure} (the record gives no end; "
                     f"bounded by {med.bound}): {what}; the {washout_days}-day washout is complete.", med)]


def unclassified_findings(med: MedicationExposure, start: date, washout_days: int) -> list[Finding]:
    what = record_words(med)
    if med.state is ExposureState.NONE:
        return []
    if med.state is ExposureState.UNKNOWN or has_exposure_within(med, start, washout_days):
        return [_finding(Severity.CANNOT_DETERMINE, "unclassified-medication",
                         f"Unclassified medication {what}: no recognised code and no readable name. "
                         "The clinician must confirm it is not an opioid before signing.", med)]
    return [_finding(Severity.INFO, "unclassified-old",
                     f"Unclassified medication {what} ended {med.last_exposure}, outside the washout window.",
                     med)]


def antidiarrheal_findings(med: MedicationExposure, start: date, washout_days: int) -> list[Finding]:
    if med.state is ExposureState.UNKNOWN or has_exposure_within(med, start, washout_days):
        return [_finding(Severity.CAUTION, "opioid-antidiarrheal",
                         f"{med.name} is an opioid antidiarrheal (not a contraindication): LDN may "
                         "reduce its effect or cause mild withdrawal-like GI symptoms; review its use.",
                         med, source="CLINICAL_RULES R2")]
    return []


def antagonist_findings(med: MedicationExposure, start: date, washout_days: int) -> list[Finding]:
    if med.state is ExposureState.NONE:
        return []
    return [_finding(Severity.INFO, "opioid-antagonist",
                     f"{med.name} is an opioid antagonist, not opioid exposure.", med,
                     source="CLINICAL_RULES R2")]


def reading_findings(med: MedicationExposure, cls: Classification, start: date, washout_days: int) -> list[Finding]:
    """Whatever the class: readings of the drug that disagree, opioids named only in free text."""
    out = []
    if cls.conflict:
        out.append(_finding(Severity.INFO, "code-name-conflict",
                            f"The record's codes and names disagree on {med.name} ({med.resource_type}): "
                            f"{cls.conflict}", med))
    if cls.text_mentions:
        out.extend(text_mention_findings(med, cls.text_mentions, start, washout_days))
    return out


def unreadable_findings(med: MedicationExposure) -> list[Finding]:
    if not med.unreadable:
        return []
    return [_finding(Severity.CANNOT_DETERMINE, "medication-unreadable",
                     f"The drug of {med.resource} could not be read: {med.unreadable}. It may be an opioid; "
                     "the clinician must check the record before signing.", med)]


def text_mention_findings(med: MedicationExposure, mentions: str, start: date, washout_days: int) -> list[Finding]:
    """An opioid named in words only: not proof of use, but in the washout window it cannot be ruled out."""
    what = record_words(med)
    text = (f"{what} is not coded as an opioid, but its dosage text or note names one: {mentions}. "
            "That is not proof of opioid use")
    if med.state is ExposureState.NONE or not (med.state is ExposureState.UNKNOWN
                                              or has_exposure_within(med, start, washout_days)):
        return [_finding(Severity.INFO, "opioid-named-in-text", text + "; the record is outside the washout window.",
                         med)]
    return [_finding(Severity.CANNOT_DETERMINE, "opioid-named-in-text",
                     text + f", but it cannot be ruled out: confirm with the patient that no opioid was taken in "
                     f"the last {washout_days} days.", med)]


def opioid_alerts(medications: Iterable[MedicationSummary], since: date) -> tuple[Finding, ...]:
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


def _alert(severity: Severity, code: str, med: MedicationSummary, text: str) -> Finding:
    return Finding("R2", "004, 003", severity, text, (med.resource,), code)


def oud_refs(conds: Sequence[ConditionSummary]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(active OUD with no documented remission, OUD in remission or past).

    Remission is documented by a remission code or clinicalStatus; an inactive, resolved or
    abated OUD diagnosis counts as past (a caution), never as nothing.
    """
    active: list[str] = []
    remission: list[str] = []
    for c in conds:
        if ConditionRole.OUD not in c.categories or c.verification_status in NOT_COUNTED_VERIFICATION:
            continue
        in_remission = ConditionRole.OUD_REMISSION in c.categories or not c.counts
        (remission if in_remission else active).append(c.resource)
    return tuple(active), tuple(remission)


def oud_findings(conds: Sequence[ConditionSummary]) -> list[Finding]:
    active, remission = oud_refs(conds)
    out = []
    if active:
        out.append(Finding("R2", "003, 004", Severity.CANNOT_DETERMINE,
                           f"Active opioid use disorder with no documented remission ({names_of(conds, active)}). "
                           "Illicit opioid use never appears in a medication list, so opioid exposure cannot be "
                           "ruled out from the record: the clinician must confirm with the patient that there is no "
                           "current opioid use (including methadone or buprenorphine treatment) and attest it.",
                           active, "opioid-use-disorder-active"))
    if remission:
        out.append(Finding("R2", "003, 004", Severity.CAUTION,
                           f"Opioid use disorder in remission or past ({names_of(conds, remission)}): confirm there "
                           "is no current opioid use before starting; LDN precipitates withdrawal in anyone who "
                           "still takes opioids.", remission, "opioid-use-disorder-remission"))
    return out


def data_problem_findings(problems: Iterable[str]) -> list[Finding]:
    return [Finding("R2", "docs/clinical-rules.md", Severity.CANNOT_DETERMINE,
                    f"Data could not be read: {p}. Opioid exposure and contraindications cannot be "
                    "ruled out.", (), "data-unreadable")
            for p in problems]
