"""R2 (and R5 duplicate naltrexone): classify medications, find opioid exposure, compute the washout.

Source (CLINICAL_RULES R2; 000-004): "LDN must not be used in patients taking opioids: it
blocks opioid analgesia and can precipitate withdrawal." "Patients currently on opioids
must be opioid-free for at least 7-10 days before any naltrexone dose (004)." "A medication
the app cannot classify (unknown code and no readable name) is listed as unclassified.
While one is active or inside the washout window, the decision is 'cannot determine'."
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, timedelta

from .model import (
    Classification,
    ExposureState,
    Finding,
    MedClass,
    MedicationExposure,
    Severity,
)
from .terminology import Match, Terminology

WASHOUT_DEFAULT = 10
WASHOUT_RANGE = (7, 10)

MEDICATION_VALUESETS = {
    "opioids": MedClass.OPIOID,
    "naltrexone-products": MedClass.NALTREXONE,
    "opioid-antidiarrheals": MedClass.OPIOID_ANTIDIARRHEAL,
    "opioid-antagonists": MedClass.OPIOID_ANTAGONIST,
}
# When one product hits several sets (buprenorphine/naloxone), the most dangerous wins.
PRECEDENCE = (MedClass.OPIOID, MedClass.NALTREXONE, MedClass.OPIOID_ANTIDIARRHEAL, MedClass.OPIOID_ANTAGONIST)
# Names that say nothing about the drug.
UNINFORMATIVE = re.compile(
    r"^\W*(unknown|unk|medication|medicine|drug|other|see notes?|n/?a|none|test|\(no readable name\))?\W*$",
    re.IGNORECASE,
)


def is_readable_name(name: str) -> bool:
    return bool(name and re.search(r"[a-zA-Z]{3,}", name) and not UNINFORMATIVE.match(name))


def classify(med: MedicationExposure, terminology: Terminology) -> Classification:
    """Every reading of the drug (codes, names, both medication[x], ingredients); the most dangerous wins."""
    key = (med.readings or (med.codings, med.names), med.free_text)  # readings hold every coding and name
    found = terminology.memo.get(key)
    if found is None:
        found = terminology.memo[key] = _classify(med, terminology)
    return found


def _classes(matches: Iterable[Match]) -> set[MedClass]:
    return {MEDICATION_VALUESETS[m.valueset] for m in matches if m.valueset in MEDICATION_VALUESETS}


def _classify(med: MedicationExposure, terminology: Terminology) -> Classification:
    hits: list[Match] = []
    for c in med.codings:
        hits.extend(terminology.code_matches(c.system, c.code))
    for name in med.names:
        hits.extend(terminology.name_matches(name))
    by_class: dict[MedClass, list[Match]] = {}
    for m in hits:
        cls = MEDICATION_VALUESETS.get(m.valueset)
        if cls:
            by_class.setdefault(cls, []).append(m)
    mentions = text_mentions(med, terminology)
    for cls in PRECEDENCE:
        if cls in by_class:
            matches = by_class[cls]
            evidence = "; ".join(dict.fromkeys(f"{m.via} -> {m.display} ({m.valueset})" for m in matches))
            conflict = disagreement(med, cls, terminology)
            return Classification(cls, evidence + (f". Conflict: {conflict}" if conflict else ""),
                                  matches[0].display, conflict, mentions if cls is not MedClass.OPIOID else None)
    readable = [n for n in med.names if is_readable_name(n)]
    if readable:
        return Classification(
            MedClass.NON_OPIOID, f"name '{readable[0]}' matches no opioid, antagonist or naltrexone code or term",
            text_mentions=mentions)
    codes = ", ".join(f"{c.system or '?'}|{c.code or '?'}" for c in med.codings) or "no coding"
    return Classification(MedClass.UNCLASSIFIED, f"no recognised code ({codes}) and no readable name",
                          text_mentions=mentions)


def disagreement(med: MedicationExposure, cls: MedClass, terminology: Terminology) -> str | None:
    """Plain words for the readings of the product (not its ingredients) that do not say `cls`.

    A code we recognise as something else, or a readable name naming no drug of that class, disagrees
    (e.g. an opioid RxNorm code whose display names ibuprofen; both medication[x] naming different drugs).
    """
    agree, disagree = [], []
    for reading in med.readings:
        if reading.ingredient:
            continue
        for c in reading.codings:
            found = _classes(terminology.code_matches(c.system, c.code))
            if found:
                (agree if cls in found else disagree).append(f"{reading.source} code {c.code} reads as "
                                                             f"{_class_words(found)}")
        for name in reading.names:
            if is_readable_name(name):
                found = _classes(terminology.name_matches(name))
                (agree if cls in found else disagree).append(f"{reading.source} '{name}' reads as "
                                                             f"{_class_words(found) or 'no drug of that kind'}")
    if not (agree and disagree):
        return None
    return (f"{'; '.join(disagree)} - but {'; '.join(agree)}. Classified as {cls.value}, the more dangerous "
            "reading; check which drug the patient takes.")


def _class_words(classes: set[MedClass]) -> str:
    return " and ".join(c.value for c in PRECEDENCE if c in classes)


def text_mentions(med: MedicationExposure, terminology: Terminology) -> str | None:
    """Opioids named in the record's free text (dosage text, notes), with the words that name them."""
    found = []
    for text in med.free_text:
        for m in terminology.name_matches(text):
            if MEDICATION_VALUESETS.get(m.valueset) is MedClass.OPIOID:
                found.append(f"{m.display} ({m.via} in '{_excerpt(text)}')")
    return "; ".join(dict.fromkeys(found)) or None


def _excerpt(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_washout(days: int) -> int:
    low, high = WASHOUT_RANGE
    if not isinstance(days, int) or not low <= days <= high:
        raise ValueError(f"washout must be {low}-{high} days (R2, 004), got {days!r}")
    return days


def safe_from(last_exposure: date, washout_days: int) -> date:
    """First day a dose may be given after the last opioid day (opioid-free for washout days)."""
    return last_exposure + timedelta(days=washout_days)


def has_exposure_within(med: MedicationExposure, start: date, washout_days: int) -> bool:
    """Current use, or use ended too recently for a first dose on `start`."""
    if med.state is ExposureState.CURRENT:
        return True
    return med.state is ExposureState.ENDED and start < safe_from(med.last_exposure, washout_days)


def earliest_start(opioids: Iterable[MedicationExposure], washout_days: int) -> date | None:
    """Latest washout end over ended opioid use; None if any use is current or undated."""
    ends = []
    for med in opioids:
        if med.state in (ExposureState.CURRENT, ExposureState.UNKNOWN):
            return None
        if med.state is ExposureState.ENDED:
            ends.append(safe_from(med.last_exposure, washout_days))
    return max(ends) if ends else None


def _finding(severity: Severity, code: str, text: str, med: MedicationExposure, *, rule="R2", source="003, 004"):
    return Finding(rule, source, severity, text, (med.resource,), code)


def is_oud_treatment(cls: Classification, med: MedicationExposure) -> bool:
    """Methadone or buprenorphine: possibly opioid use disorder treatment, never to be stopped for LDN."""
    text = " ".join((cls.evidence, *med.names)).lower()
    return "methadone" in text or "buprenorphine" in text


def opioid_findings(med: MedicationExposure, start: date, washout_days: int,
                    cls: Classification | None = None) -> list[Finding]:
    what = f"{med.name} ({med.resource_type}, status {med.status or 'missing'})"
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
    if med.state is ExposureState.UNKNOWN:
        return [_finding(Severity.CANNOT_DETERMINE, "opioid-undated",
                         f"Opioid {what}: {med.date_problem}. Cannot determine whether the patient "
                         f"has been opioid-free for {washout_days} days; confirm with the patient.", med)]
    if med.state is ExposureState.ENDED and med.bound:
        return bounded_opioid_findings(med, what, start, washout_days)
    if med.state is ExposureState.ENDED:
        ok_from = safe_from(med.last_exposure, washout_days)
        if start < ok_from:
            return [_finding(Severity.WAIT, "opioid-washout",
                             f"Opioid exposure until {med.last_exposure}: {what}. The patient must be "
                             f"opioid-free for {washout_days} days; earliest safe start {ok_from}.", med)]
        return [_finding(Severity.INFO, "opioid-past",
                         f"Past opioid use ended {med.last_exposure}: {what}; the {washout_days}-day "
                         f"washout is complete by {ok_from}.", med)]
    return [_finding(Severity.INFO, "opioid-not-exposure",
                     f"Not counted as exposure: {what}.", med)]


def bounded_opioid_findings(med: MedicationExposure, what: str, start: date, washout_days: int) -> list[Finding]:
    """An ended opioid record with no recorded end: blocks while its latest possible day is inside the washout."""
    ok_from = safe_from(med.last_exposure, washout_days)
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
    what = f"{med.name} ({med.resource_type}, status {med.status or 'missing'})"
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


def naltrexone_findings(med: MedicationExposure, start: date, washout_days: int) -> list[Finding]:
    what = f"{med.name} ({med.resource_type}, status {med.status or 'missing'})"
    if med.own_order_key and med.state is not ExposureState.ENDED:  # this app's own order: not a duplicate
        return [_finding(Severity.CAUTION, "own-order",
                         f"This app's own earlier LDN order: {what}. Signing a different plan adds a second "
                         "order: stop this one in the EHR first.", med, rule="R5", source="004, 001")]
    if med.state is ExposureState.CURRENT:
        return [_finding(Severity.CONTRAINDICATION, "naltrexone-duplicate",
                         f"Already on naltrexone: {what}. Duplicate therapy; no second order "
                         "will be written.", med, rule="R5", source="004, 001")]
    if med.state is ExposureState.UNKNOWN:
        return [_finding(Severity.CANNOT_DETERMINE, "naltrexone-undated",
                         f"Naltrexone record {what}: {med.date_problem}. Confirm the patient is "
                         "not still taking it (duplicate therapy).", med, rule="R5", source="004, 001")]
    if med.state is ExposureState.ENDED:
        return [_finding(Severity.INFO, "naltrexone-past",
                         f"Previous naltrexone use ended {med.last_exposure}: {what}.", med, rule="R5",
                         source="004, 001")]
    return []


FINDERS = {  # opioids go through opioid_findings with their classification (methadone/buprenorphine wording)
    MedClass.UNCLASSIFIED: unclassified_findings,
    MedClass.OPIOID_ANTIDIARRHEAL: antidiarrheal_findings,
    MedClass.OPIOID_ANTAGONIST: antagonist_findings,
    MedClass.NALTREXONE: naltrexone_findings,
}


def medication_findings(med: MedicationExposure, cls: Classification, start: date, washout_days: int) -> list[Finding]:
    """The class's findings, plus: a drug that could not be read, readings that disagree, opioids named in text."""
    out = unreadable_findings(med)
    finder = FINDERS.get(cls.category)
    if cls.category is MedClass.OPIOID:
        out.extend(opioid_findings(med, start, washout_days, cls))
    elif finder and not (out and cls.category is MedClass.UNCLASSIFIED):
        out.extend(finder(med, start, washout_days))
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
    what = f"{med.name} ({med.resource_type}, status {med.status or 'missing'})"
    text = (f"{what} is not coded as an opioid, but its dosage text or note names one: {mentions}. "
            "That is not proof of opioid use")
    if med.state is ExposureState.NONE or not (med.state is ExposureState.UNKNOWN
                                              or has_exposure_within(med, start, washout_days)):
        return [_finding(Severity.INFO, "opioid-named-in-text", text + "; the record is outside the washout window.",
                         med)]
    return [_finding(Severity.CANNOT_DETERMINE, "opioid-named-in-text",
                     text + f", but it cannot be ruled out: confirm with the patient that no opioid was taken in "
                     f"the last {washout_days} days.", med)]
