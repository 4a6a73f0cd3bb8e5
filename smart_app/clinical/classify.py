"""What a medication or a diagnosis is to the rules: its ValueSet class or roles (shared by R2-R5)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date

from .model import (
    Classification,
    ConditionRole,
    ConditionSummary,
    Diagnosis,
    MedClass,
    MedicationExposure,
)
from .terminology import Match, Terminology

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
    agree: list[str] = []
    disagree: list[str] = []
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


CONDITION_VALUESETS = {
    "ldn-indications": ConditionRole.INDICATION,
    "ldn-likely-responders": ConditionRole.LIKELY_RESPONDER,
    "ldn-unlikely-responders": ConditionRole.UNLIKELY_RESPONDER,
    "ldn-recommended-against": ConditionRole.CROHNS,
    "ldn-insufficient-evidence": ConditionRole.MS,
    "ldn-contraindicated-conditions": ConditionRole.HEPATIC,
    "ldn-liver-caution": ConditionRole.LIVER_CAUTION,
    "opioid-use-disorder": ConditionRole.OUD,
    "opioid-use-disorder-remission": ConditionRole.OUD_REMISSION,
}
NOT_COUNTED_VERIFICATION = {"entered-in-error", "refuted"}
NOT_COUNTED_CLINICAL = {"inactive", "remission", "resolved"}


def condition_categories(dx: Diagnosis, terminology: Terminology) -> tuple[ConditionRole, ...]:
    """The rule roles of a diagnosis (memoized per distinct coding + text)."""
    key = ("condition", dx.codings, dx.text)
    found = terminology.memo.get(key)
    if found is None:
        found = terminology.memo[key] = _condition_categories(dx, terminology)
    return found


def _condition_categories(dx: Diagnosis, terminology: Terminology) -> tuple[ConditionRole, ...]:
    found: dict[ConditionRole, None] = {}
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


def summarize_conditions(conditions: Iterable[Diagnosis], as_of: date,
                         terminology: Terminology) -> tuple[ConditionSummary, ...]:
    return tuple(
        ConditionSummary(dx.resource, dx.name, condition_categories(dx, terminology), condition_counts(dx, as_of),
                         dx.clinical_status, dx.verification_status)
        for dx in conditions
    )


def refs_with(conds: Sequence[ConditionSummary], role: ConditionRole) -> tuple[str, ...]:
    """The counted diagnoses (active, not refuted) that have `role`."""
    return tuple(c.resource for c in conds if c.counts and role in c.categories)


def names_of(conds: Sequence[ConditionSummary], refs: Iterable[str]) -> str:
    """The diagnoses' names, for a finding's text."""
    by_ref = {c.resource: c.name for c in conds}
    return ", ".join(by_ref.get(r, r) for r in refs)
