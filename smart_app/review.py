"""What the review page and the patient handout show: the deciding headline, cautions, drug groups, sources."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from .clinical.mme import Dosing, Mme, mme_per_day
from .clinical.model import SEVERITY_DECISION, Assessment, Decision, Finding, MedClass, MedicationExposure, Severity

PROTOCOL_CODES = ("protocol", "surgery-hold", "follow-up")  # standing R1/R5/R6 information, same for everyone
SEVERITY_RANK = (Severity.CONTRAINDICATION, Severity.CANNOT_DETERMINE, Severity.WAIT, Severity.NOT_RECOMMENDED,
                 Severity.CAUTION, Severity.INFO)
SOURCES = {  # id -> title; the seeds CLINICAL_RULES cites (004, January 2026, wins where they disagree)
    "000": "What is the recommended dosage and management strategy for naltrexone in pain control? "
           "(clinical Q&A summary, updated 3 June 2025)",
    "001": "What is the typical dose of naltrexone for reducing inflammation? (clinical Q&A summary, "
           "updated 14 July 2025)",
    "002": "Low Dose Naltrexone for Pain (compounding pharmacy article)",
    "003": "5 things low-dose naltrexone does for chronic pain (pain clinic article)",
    "004": "Low Dose Naltrexone: Clinical Uses and Dosing (guideline summary, January 2026 - the newest, "
           "it wins where sources disagree)",
    "rules": "The app's clinical rules R1-R6, distilled from sources 000-004",
    "label": "Naltrexone hydrochloride US prescribing information (hepatotoxicity)",
}
SHORT = {  # finding code -> the few words a headline uses
    "opioid-current": "current opioid", "opioid-washout": "opioid washout", "opioid-undated": "opioid use undated",
    "unclassified-medication": "unclassified medication", "naltrexone-duplicate": "already on naltrexone",
    "naltrexone-undated": "naltrexone record undated", "hepatic-contraindication": "acute or decompensated liver "
    "disease", "liver-caution": "chronic liver disease", "opioid-use-disorder-active": "opioid use disorder",
    "opioid-use-disorder-remission": "past opioid use disorder", "no-indication": "no qualifying indication",
    "crohns-reason": "Crohn's disease as the reason", "ms-reason": "multiple sclerosis as the reason",
    "opioid-antidiarrheal": "opioid antidiarrheal", "data-unreadable": "data could not be read",
}
VERDICT = {
    Decision.ELIGIBLE: "Yes - LDN can be started",
    Decision.ELIGIBLE_WITH_CAUTIONS: "Yes, with cautions",
    Decision.NOT_RECOMMENDED: "Recommended against",
    Decision.WAIT_WASHOUT: "Not yet",
    Decision.CANNOT_DETERMINE: "Cannot determine",
    Decision.CONTRAINDICATED: "Do not start",
}


def long_date(d: date | None) -> str:
    """'Tue 17 Nov 2026': weekday, day, month name - never ambiguous between countries."""
    return f"{d:%a} {d.day} {d:%b %Y}" if d else "unknown"


def full_date(d: date | None) -> str:
    """'Tuesday 17 November 2026', for the patient."""
    return f"{d:%A} {d.day} {d:%B %Y}" if d else "unknown"


@dataclass(frozen=True)
class SourceRef:
    label: str
    anchor: str | None  # "src-004", or None for a source without an entry in SOURCES


def source_refs(source: str) -> tuple[SourceRef, ...]:
    """'naltrexone US label (hepatotoxicity); 004' -> links into the source list."""
    refs = []
    for part in (p.strip() for p in re.split(r"[,;]", source) if p.strip()):
        key = part if part in SOURCES else "rules" if part.startswith("CLINICAL_RULES") else (
            "label" if "label" in part else None)
        refs.append(SourceRef(part, f"src-{key}" if key else None))
    return tuple(refs)


@dataclass(frozen=True)
class Headline:
    verdict: str  # "Not yet - opioid washout"
    reason: str  # the one deciding reason, one or two sentences
    next_step: str
    finding: Finding | None  # the deciding finding (None for a clean eligible)


@dataclass(frozen=True)
class Shown:
    """A finding as listed, and how many more of the same kind (same code) are folded under it."""

    finding: Finding
    more: int = 0


@dataclass(frozen=True)
class ReviewSummary:
    headline: Headline
    cautions: tuple[Shown, ...]  # above info, most important first, without the deciding one
    notes: tuple[Shown, ...]  # patient-specific information
    protocol: tuple[Finding, ...]  # standing R1/R5/R6 information
    first_start: date  # the first-dose date to offer


SAME_KIND_SHOWN = 3  # findings of one code listed in full; the rest are counted (a 5,000-record patient)


def fold(findings: Iterable[Finding]) -> tuple[Shown, ...]:
    """Keep order; after SAME_KIND_SHOWN findings of one code, count the rest on the last one shown."""
    shown: list[Shown] = []
    seen: dict[str, int] = {}
    for f in findings:
        n = seen[f.code] = seen.get(f.code, 0) + 1
        if n <= SAME_KIND_SHOWN:
            shown.append(Shown(f))
            continue
        last = max(i for i, s in enumerate(shown) if s.finding.code == f.code)
        shown[last] = Shown(shown[last].finding, shown[last].more + 1)
    return tuple(shown)


def _rank(f: Finding) -> int:
    return SEVERITY_RANK.index(f.severity)


def deciding_finding(a: Assessment) -> Finding | None:
    """The finding that sets the decision; for a washout, the one that ends last."""
    forcing = [f for f in a.findings if f.severity is not Severity.INFO and SEVERITY_DECISION[f.severity] is a.decision]
    if a.decision is Decision.WAIT_WASHOUT:
        last = {m.resource: m.last_exposure or date.min for m in a.medications}
        forcing.sort(key=lambda f: max((last.get(r, date.min) for r in f.resources), default=date.min), reverse=True)
    return forcing[0] if forcing else None


def _names(a: Assessment, refs: Iterable[str]) -> str:
    by_ref = {c.resource: c.name for c in a.conditions}
    return ", ".join(by_ref.get(r, r) for r in refs)


def headline(a: Assessment, first_start: date) -> Headline:
    f = deciding_finding(a)
    short = SHORT.get(f.code, f.rule) if f else ""
    verdict = f"{VERDICT[a.decision]} - {short}" if f else VERDICT[a.decision]
    if a.decision is Decision.ELIGIBLE:
        why = (f"Qualifying indication: {_names(a, a.indications)}." if a.indications
               else "No contraindication or caution found.")
        return Headline(verdict, why, f"First dose from {long_date(first_start)}: preview the plan below.", None)
    if a.decision is Decision.WAIT_WASHOUT:
        med = next((m for m in a.medications if f and m.resource in f.resources), None)
        drug = med.name if med else "The opioid"
        why = (f"{drug[:1].upper()}{drug[1:]} last taken {long_date(med.last_exposure if med else None)}; first "
               f"LDN dose from {long_date(a.earliest_start_date)}.")
        return Headline(verdict, why, f"The start date below is set to {long_date(a.earliest_start_date)} "
                        f"({a.washout_days} opioid-free days); preview and sign for that date.", f)
    return Headline(verdict, f.text if f else "", NEXT_STEP[a.decision], f)


NEXT_STEP = {
    Decision.ELIGIBLE_WITH_CAUTIONS: "Check the cautions below with the patient, then preview the plan.",
    Decision.NOT_RECOMMENDED: "Choose a qualifying indication as the reason, or record why you proceed (R4).",
    Decision.CANNOT_DETERMINE: "Check the record with the patient; signing needs your attestation that it is "
                               "not opioid exposure.",
    Decision.CONTRAINDICATED: "Do not order LDN while this applies; nothing can be signed.",
}


def summarize(a: Assessment, today: date) -> ReviewSummary:
    """The review page's reading of an assessment: headline first, then cautions by weight."""
    first_start = max(today, a.earliest_start_date or today)
    head = headline(a, first_start)
    protocol = tuple(f for f in a.findings if f.code in PROTOCOL_CODES)
    rest = [f for f in a.findings if f.code not in PROTOCOL_CODES and f is not head.finding]
    cautions = fold(sorted((f for f in rest if f.severity is not Severity.INFO), key=_rank))
    notes = fold(f for f in rest if f.severity is Severity.INFO)
    return ReviewSummary(head, cautions, notes, protocol, first_start)


# --- medication history, one row per drug --------------------------------------------------------

RELEVANT = (MedClass.OPIOID, MedClass.UNCLASSIFIED, MedClass.NALTREXONE, MedClass.OPIOID_ANTIDIARRHEAL,
            MedClass.OPIOID_ANTAGONIST)
SOURCE_WORDS = {"MedicationRequest": "order", "MedicationStatement": "statement", "MedicationDispense": "dispense"}
TIMELINE_DAYS = 365


@dataclass(frozen=True)
class Record:
    resource: str
    kind: str  # order / statement / dispense
    status: str
    start: date | None
    last: date | None
    current: bool
    problem: str | None
    evidence: str
    supply_days: float | None = None  # one fill
    prescriber: str | None = None
    prescriber_ref: str | None = None


@dataclass(frozen=True)
class DrugRow:
    """All records of one drug: first and last dates, where each comes from, a 12-month strip."""

    name: str
    classification: str
    records: tuple[Record, ...]
    first: Record | None
    last: Record | None
    current: bool
    spans: tuple[tuple[float, float], ...]  # timeline: (left %, width %) over the 12 months to today
    latest: Record | None = None  # the current record started last, else the one that ended last
    mme: Mme | None = None  # MME/day of `latest` (opioids only)

    @property
    def count(self) -> int:
        return len(self.records)


def _drug_name(name: str) -> str:
    """'oxycodone 10 MG Oral Tablet' -> 'oxycodone': the drug, without strength and form."""
    return re.split(r"\s+\d", name.strip(), maxsplit=1)[0] or name.strip()


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", _drug_name(name).lower())


def drug_rows(a: Assessment, medications: Sequence[MedicationExposure], today: date,
              classes: Sequence[MedClass] = RELEVANT) -> tuple[DrugRow, ...]:
    """Group the records of the given classes by drug name, most recent first."""
    exposures = {m.resource: m for m in medications}
    groups: dict[tuple[str, str], list[Record]] = {}
    names: dict[tuple[str, str], str] = {}
    for m in a.medications:
        if m.classification not in classes:
            continue
        med = exposures.get(m.resource)
        dosing = med.dosing if med and med.dosing else Dosing()
        key = (m.classification.value, _key(m.name))
        names.setdefault(key, _drug_name(m.name))
        groups.setdefault(key, []).append(Record(
            m.resource, SOURCE_WORDS.get(m.resource.split("/", 1)[0], m.resource.split("/", 1)[0]),
            m.status or "missing", med.start if med else None, m.last_exposure, m.state.value == "current",
            m.date_problem, m.evidence, dosing.supply_days, dosing.prescriber, dosing.prescriber_ref))
    rows = [_row(names[k], k[0], recs, today, exposures) for k, recs in groups.items()]
    return tuple(sorted(rows, key=lambda r: (not r.current, -(_last_day(r) or date.min).toordinal())))


def _last_day(row: DrugRow) -> date | None:
    return row.last.last if row.last else None


def _row(name: str, classification: str, records: list[Record], today: date,
         exposures: dict[str, MedicationExposure]) -> DrugRow:
    dated = [r for r in records if r.start or r.last]
    first = min(dated, key=lambda r: r.start or r.last or date.min, default=None)
    last = max((r for r in records if r.last), key=lambda r: r.last or date.min, default=None)
    current = [r for r in records if r.current]
    latest = max(current, key=lambda r: r.start or date.min) if current else last or (records[-1] if records else None)
    spans = (_span(r, today) for r in records)
    return DrugRow(name, classification, tuple(records), first, last, bool(current), tuple(s for s in spans if s),
                   latest, _mme(exposures.get(latest.resource)) if latest and classification == MedClass.OPIOID
                   else None)


def _mme(med: MedicationExposure | None) -> Mme:
    return mme_per_day(med.names, med.dosing or Dosing()) if med else Mme(None, "the record could not be read")


def _span(r: Record, today: date) -> tuple[float, float] | None:
    """Where a record sits on the strip of the last 12 months (percent), or None when outside or undated."""
    begin = r.start or r.last
    end = today if r.current else (r.last or r.start)
    origin = today - timedelta(days=TIMELINE_DAYS)
    if begin is None or end is None or end < origin:
        return None
    left = max(0, (begin - origin).days) / TIMELINE_DAYS * 100
    right = min(TIMELINE_DAYS, (end - origin).days + 1) / TIMELINE_DAYS * 100
    return round(left, 1), round(max(right - left, 0.6), 1)


def other_medications(a: Assessment, medications: Sequence[MedicationExposure], today: date):
    """Non-opioid records grouped by drug (shown collapsed, behind a filter)."""
    return drug_rows(a, medications, today, (MedClass.NON_OPIOID,))


# --- the page as a whole ---------------------------------------------------------------------------

RECORD_LIMIT = 20  # records shown per drug before the "all records" filter link
OTHERS_LIMIT = 50  # non-opioid drugs listed before "show every record"


@dataclass(frozen=True)
class ReasonChoices:
    main: tuple  # the patient's R3 indications
    other: tuple  # every other active condition ("Other": free text required), the R4 diagnoses among them
    other_checked: bool
    against_offered: bool  # a condition the guideline recommends against (R4, Crohn's) is among the choices
    against_checked: bool  # ... and is chosen: the R4 justification is required


def reason_choices(a: Assessment, chosen: Sequence[str]) -> ReasonChoices:
    counted = [c for c in a.conditions if c.counts]
    main = tuple(c for c in counted if "indication" in c.categories)
    other = tuple(c for c in counted if c not in main)
    against = [c for c in counted if "crohns" in c.categories]
    return ReasonChoices(main, other, any(c.resource in chosen for c in other), bool(against),
                         any(c.resource in chosen for c in against))


def filtered_records(a: Assessment, medications: Sequence[MedicationExposure], today: date, drug: str | None):
    """Every record of one drug ('*': of every drug), for the filter behind the grouped view."""
    if not drug:
        return ()
    rows = drug_rows(a, medications, today, tuple(MedClass))
    return tuple(r for row in rows if drug == "*" or _key(row.name) == _key(drug) for r in row.records)


def page_context(a: Assessment, medications: Sequence[MedicationExposure], today: date, *, chosen: Sequence[str],
                 drug: str | None = None, override: str = "", attest: bool = False) -> dict:
    """Everything review.html shows beyond the assessment itself."""
    others = other_medications(a, medications, today)
    choices = reason_choices(a, chosen)
    return {
        "summary": summarize(a, today), "drugs": drug_rows(a, medications, today), "others": others,
        "others_count": sum(r.count for r in others), "timeline_from": today - timedelta(days=TIMELINE_DAYS),
        "drug_filter": drug, "filtered": filtered_records(a, medications, today, drug),
        "reason_choices": choices, "sources": SOURCES, "record_limit": RECORD_LIMIT, "others_limit": OTHERS_LIMIT,
        "needs_override": bool(override) or choices.against_checked,
        "needs_attestation": attest or any(f.severity is Severity.CANNOT_DETERMINE for f in a.findings),
    }


def verdict_of(a: Assessment) -> str:
    """The headline words of a decision, for a preview."""
    return headline(a, a.start_date).verdict
