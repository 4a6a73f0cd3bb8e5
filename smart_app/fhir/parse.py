"""Raw FHIR R4 JSON -> the clinical model. Forgiving: odd data becomes 'unknown', never an exception.

Only what the rules need is read (full model parsing costs ~45x json.loads on big records).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from ..clinical.exposure import RecordDates, interpret, parse_fhir_date
from ..clinical.model import Coding, Diagnosis, MedicationExposure
from ..errors import UnreadableInput
from .contract import MEDICATION_USE_TYPES, SEARCHED_TYPES, index_keys, parse_reference, resolve

BUNDLE_TYPES = {"searchset", "collection", "transaction", "batch", "transaction-response", "batch-response",
                "document", "message", "history"}
DAYS_PER_UNIT = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30, "month": 30,
                 "months": 30, "a": 365, "year": 365, "years": 365, "h": 1 / 24}


@dataclass
class PatientData:
    """One patient's resources, in the model the rules read."""

    patient_id: str
    patient: dict | None = None
    medications: list[MedicationExposure] = field(default_factory=list)
    conditions: list[Diagnosis] = field(default_factory=list)
    warnings: tuple[str, ...] = ()  # what the EHR noted about the searches (OperationOutcome warnings), shown as is


@lru_cache(maxsize=4096)
def _date(value: str, end_of_period: bool = False):
    return parse_fhir_date(value, end_of_period=end_of_period)


class _Dates:
    """Collects dates from one resource, remembering the first unreadable one."""

    def __init__(self, resource: dict):
        self.resource = resource
        self.problem: str | None = None

    def get(self, *path: str, end: bool = False):
        value = self.resource
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return self.day(value, path, end)

    def day(self, value, path: tuple[str, ...], end: bool = False):
        """One already-fetched date value (the hot path for large records)."""
        if value is None:
            return None
        try:
            return _date(value, end) if isinstance(value, str) else _date(repr(value))
        except ValueError:
            self.problem = self.problem or f"unreadable date {value!r} in {'.'.join(path)}"
            return None


@lru_cache(maxsize=8192)
def _coding(system, code, display) -> Coding:
    return Coding(system, code, display)


def codings_of(concept: object) -> tuple[Coding, ...]:
    if not isinstance(concept, dict):
        return ()
    return tuple(_coding(c.get("system"), c.get("code"), c.get("display"))
                 for c in concept.get("coding") or () if isinstance(c, dict))


def names_of(concept: object, codings: tuple[Coding, ...] | None = None) -> list[str]:
    if not isinstance(concept, dict):
        return []
    names = [concept["text"]] if isinstance(concept.get("text"), str) else []
    names.extend(c.display for c in (codings_of(concept) if codings is None else codings) if c.display)
    return names


def duration_days(q: object) -> float | None:
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
        return None
    factor = DAYS_PER_UNIT.get(str(q.get("code") or q.get("unit") or "d").lower())
    return q["value"] * factor if factor else None


def medication_dates(rtype: str, r: dict) -> RecordDates:
    d = _Dates(r)
    if rtype == "MedicationStatement":
        point = d.day(r.get("effectiveDateTime"), ("effectiveDateTime",))
        period = r.get("effectivePeriod")
        period = period if isinstance(period, dict) else {}
        start = d.day(period.get("start"), ("effectivePeriod", "start")) or point
        end = d.day(period.get("end"), ("effectivePeriod", "end"), end=True) or point
        return RecordDates(start, end, d.day(r.get("dateAsserted"), ("dateAsserted",)), None, d.problem)
    if rtype == "MedicationRequest":
        start = d.get("authoredOn") or d.get("dispenseRequest", "validityPeriod", "start")
        ends = [d.get("dispenseRequest", "validityPeriod", "end", end=True)]
        for dosage in r.get("dosageInstruction") or ():
            ends.append(_Dates(dosage).get("timing", "repeat", "boundsPeriod", "end", end=True))
        dispense = r.get("dispenseRequest") or {}
        supply = duration_days(dispense.get("expectedSupplyDuration"))
        if supply is not None:
            repeats = dispense.get("numberOfRepeatsAllowed")
            supply *= 1 + (repeats if isinstance(repeats, int) and repeats > 0 else 0)
        real_ends = [e for e in ends if e]
        return RecordDates(start, max(real_ends) if real_ends else None, None, supply, d.problem)
    start = d.get("whenHandedOver") or d.get("whenPrepared")
    return RecordDates(start, None, None, duration_days(r.get("daysSupply")), d.problem)


def _medication_concepts(r: dict, medications: dict[str, dict]) -> tuple[list[dict], str | None, list[str]]:
    """The CodeableConcepts naming the drug: the resource's own, or its referenced Medication's."""
    concept = r.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        return [concept], None, []
    ref = r.get("medicationReference") or {}
    target = ref.get("reference") if isinstance(ref, dict) else None
    extra = [ref["display"]] if isinstance(ref, dict) and isinstance(ref.get("display"), str) else []
    med = resolve_medication(target, r, medications) if target else None
    if not isinstance(med, dict):
        return [], target, extra
    concepts = [med.get("code")]
    for ing in med.get("ingredient") or ():
        if isinstance(ing, dict):
            concepts.append(ing.get("itemCodeableConcept"))
            item = ing.get("itemReference")
            if isinstance(item, dict) and isinstance(item.get("display"), str):
                extra.append(item["display"])
    return [c for c in concepts if isinstance(c, dict)], target, extra


def resolve_medication(target: str, r: dict, medications: dict[str, dict]) -> dict | None:
    return resolve(parse_reference(target), medications, container=r)


def exposure_from(r: dict, medications: dict[str, dict]) -> MedicationExposure:
    rtype = r.get("resourceType", "")
    concepts, ref, extra = _medication_concepts(r, medications)
    codings: tuple[Coding, ...] = ()
    names: list[str] = []
    for concept in concepts:
        own = codings_of(concept)
        codings += own
        names.extend(names_of(concept, own))
    names = tuple(dict.fromkeys(names + extra))
    status = r.get("status") if isinstance(r.get("status"), str) else None
    meaning = interpret(rtype, status, medication_dates(rtype, r))
    return MedicationExposure(
        resource=f"{rtype}/{r.get('id', '?')}", codings=codings, names=names, status=status, state=meaning.state,
        start=meaning.start, last_exposure=meaning.last_exposure, date_problem=meaning.problem,
        medication_ref=ref,
    )


def _status_code(concept: object) -> str | None:
    for c in codings_of(concept):
        if c.code:
            return c.code
    return None


def diagnosis_from(r: dict) -> Diagnosis:
    d = _Dates(r)
    code = r.get("code")
    return Diagnosis(
        resource=f"Condition/{r.get('id', '?')}", codings=codings_of(code),
        text=code.get("text") if isinstance(code, dict) and isinstance(code.get("text"), str) else None,
        clinical_status=_status_code(r.get("clinicalStatus")),
        verification_status=_status_code(r.get("verificationStatus")),
        onset=d.get("onsetDateTime") or d.get("onsetPeriod", "start"),
        abatement=d.get("abatementDateTime", end=True) or d.get("abatementPeriod", "end", end=True),
    )


def patient_ref_of(r: dict) -> str | None:
    for key in ("subject", "patient"):
        ref = r.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return ref["reference"]
    return None


def patient_data(patient_id: str, patient: dict | None, resources: Iterable[dict],
                 medications: dict[str, dict]) -> PatientData:
    data = PatientData(patient_id, patient)
    for r in resources:
        rtype = r.get("resourceType")
        if rtype in MEDICATION_USE_TYPES:
            data.medications.append(exposure_from(r, medications))
        elif rtype == "Condition":
            data.conditions.append(diagnosis_from(r))
    return data


def patients_from_bundle(bundle: object, source: str = "input") -> dict[str, PatientData]:
    """Group a Bundle's resources by patient. Raises UnreadableInput naming the problem."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise UnreadableInput(f"{source}: not a FHIR Bundle")
    if bundle.get("type") not in BUNDLE_TYPES:
        raise UnreadableInput(f"{source}: unsupported Bundle type {bundle.get('type')!r}")
    patients: dict[str, dict] = {}
    aliases: dict[str, dict] = {}
    medications: dict[str, dict] = {}
    clinical: list[dict] = []
    for entry in bundle.get("entry") or ():
        r = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(r, dict):
            continue
        rtype, rid, full = r.get("resourceType"), r.get("id"), entry.get("fullUrl")
        if rtype == "Patient" and rid:
            patients[rid] = r
            aliases.update(dict.fromkeys(index_keys(r, full), r))
        elif rtype == "Medication":
            medications.update(dict.fromkeys(index_keys(r, full), r))
        elif rtype in SEARCHED_TYPES:
            clinical.append(r)
    if not patients:
        raise UnreadableInput(f"{source}: the Bundle holds no Patient")
    grouped: dict[str, list[dict]] = {pid: [] for pid in patients}
    for r in clinical:
        patient = resolve(parse_reference(patient_ref_of(r)), aliases)
        if patient:
            grouped[patient["id"]].append(r)
    return {pid: patient_data(pid, patients[pid], grouped[pid], medications) for pid in patients}
