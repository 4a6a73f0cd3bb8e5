"""Raw FHIR R4 JSON -> the clinical model. Never raises on odd data and never skips silently.

Each resource is read, or counted unreadable with the reason (`PatientData.problems`, or
`MedicationExposure.unreadable` for a medication record whose drug cannot be read). A record is
unreadable when what identifies it cannot be read: whose it is (subject), or what drug it is
(medication[x], a referenced or contained Medication and its ingredients, codings, names), or a
Condition's code. Dates and amounts that cannot be read leave the record undated instead
(`RecordDates.problem`), which the rules turn into cannot-determine where it matters.
Only what the rules need is read (full model parsing costs ~45x json.loads on big records).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeGuard

from ..clinical.errors import InvalidDate
from ..clinical.mme import Dose, Dosing
from ..clinical.model import Coding, Diagnosis, DrugReading, MedicationExposure
from ..clinical.rules.r2_record_dates import RecordDates, interpret, parse_fhir_date
from ..errors import UnreadableInput
from .contract import (
    MEDICATION_USE_TYPES,
    READ_TYPES,
    RESOURCE_TYPE,
    SEARCHED_TYPES,
    index_keys,
    parse_reference,
    reference_of,
    resolve,
)

BUNDLE_TYPES = {"searchset", "collection", "transaction", "batch", "transaction-response", "batch-response",
                "document", "message", "history"}
DAYS_PER_UNIT = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30, "month": 30,
                 "months": 30, "a": 365, "year": 365, "years": 365, "h": 1 / 24}
# Bounds on work and on what counts as a plausible value (longer / larger is unreadable, never truncated).
MAX_CODE_LENGTH = 64  # the longest real code (SNOMED CT 18 digits, NDC 13) fits many times
MAX_NAME_LENGTH = 1_000  # a CodeableConcept.text or Coding.display
MAX_FREE_TEXT_LENGTH = 20_000  # a dosage text or note searched for drug names
MAX_CODINGS = 50  # per CodeableConcept
MAX_LIST_ITEMS = 200  # dosage lines, notes, ingredients, contained resources read per record
MAX_INGREDIENT_DEPTH = 8  # Medication -> ingredient Medication -> ... (cycles are cut as well)
MAX_SUPPLY_DAYS = 366  # one fill's days' supply or expected supply duration
MAX_REPEATS = 100  # numberOfRepeatsAllowed
# FHIR R4 date / dateTime / instant (datatypes.html); anything else - a number, a free-text date - is not a date.
_FHIR_DATE = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?",
    re.ASCII)


@dataclass
class PatientData:
    """One patient's resources, in the model the rules read, and what could not be read."""

    patient_id: str
    patient: dict | None = None
    medications: list[MedicationExposure] = field(default_factory=list)
    conditions: list[Diagnosis] = field(default_factory=list)
    warnings: tuple[str, ...] = ()  # what the EHR noted about the searches (OperationOutcome warnings), shown as is
    problems: list[str] = field(default_factory=list)  # unreadable records, each named with the reason

    @property
    def banner(self) -> PatientBanner:
        return patient_banner(self.patient, self.patient_id)


NAME_NOT_RECORDED = "(name not recorded)"


@dataclass(frozen=True)
class PatientBanner:
    """How every page names a patient: name, birth date and gender as read from the Patient (not read: its id)."""

    id: str
    read: bool = False
    name: str = NAME_NOT_RECORDED
    birth_date: str | None = None
    gender: str | None = None

    @property
    def label(self) -> str:
        """Name and birth date ("Patient/<id>" when the Patient could not be read): how POSTs and refusals name it."""
        return f"{self.name} (born {self.birth_date or 'unknown'})" if self.read else f"Patient/{self.id}"


def patient_banner(patient: object, patient_id: str) -> PatientBanner:
    """The banner of a Patient resource (None or not a Patient: unread)."""
    if not isinstance(patient, dict) or patient.get("resourceType", "Patient") != "Patient":
        return PatientBanner(patient_id)
    birth, gender = patient.get("birthDate"), patient.get("gender")
    return PatientBanner(patient_id, True, display_name(patient), birth if isinstance(birth, str) else None,
                         gender if isinstance(gender, str) else None)


def display_name(patient: dict) -> str:
    """A Patient's name as people read it: the first name's text, else given + family."""
    names = [n for n in patient.get("name") or () if isinstance(n, dict)]
    name = next((n["text"] for n in names if isinstance(n.get("text"), str)), None)
    if name is None and names:
        given = [g for g in names[0].get("given") or () if isinstance(g, str)]
        family = names[0].get("family")
        name = " ".join([*given, family if isinstance(family, str) else ""]).strip()
    return name or NAME_NOT_RECORDED


class Unreadable(Exception):
    """A part of a record that identifies it could not be read (internal: caught per record)."""


@lru_cache(maxsize=4096)
def _date(value: str, end_of_period: bool = False):
    if not _FHIR_DATE.fullmatch(value):
        raise InvalidDate(value)
    return parse_fhir_date(value, end_of_period=end_of_period)


def _items(value: object, where: str) -> list:
    """A JSON list (bounded); a missing one is empty; anything else is unreadable."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Unreadable(f"{where} is a {_json_type(value)}, not a list")
    if len(value) > MAX_LIST_ITEMS:
        raise Unreadable(f"{where} has {len(value)} items (more than {MAX_LIST_ITEMS})")
    return value


def _object(value: object, where: str) -> dict:
    """A JSON object; a missing one is empty; anything else is unreadable."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unreadable(f"{where} is a {_json_type(value)}, not an object")
    return value


def _string(value: object, where: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unreadable(f"{where} is a {_json_type(value)}, not a string")
    if len(value) > limit:
        raise Unreadable(f"{where} is {len(value):,} characters long (more than {limit:,})")
    return value


def _json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "number")


class _Dates:
    """Collects dates and amounts from one resource, remembering the first unreadable one."""

    def __init__(self, resource: dict):
        self.resource = resource
        self.problem: str | None = None

    def fail(self, why: str) -> None:
        self.problem = self.problem or why

    def get(self, *path: str, end: bool = False):
        value: object = self.resource
        for i, key in enumerate(path):
            if value is None:
                return None
            if not isinstance(value, dict):
                self.fail(f"{'.'.join(path[:i])} is a {_json_type(value)}, not an object")
                return None
            value = value.get(key)
        return self.day(value, path, end)

    def day(self, value, path: tuple[str, ...], end: bool = False):
        """One already-fetched date value (the hot path for large records)."""
        if value is None:
            return None
        try:
            if not isinstance(value, str):
                raise InvalidDate(value)
            return _date(value, end)
        except InvalidDate:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            self.fail(f"unreadable date {shown} in {'.'.join(path)} (not a FHIR date)")
            return None

    def days(self, q: object, where: str, factor: int = 1) -> float | None:
        """A supply Duration (or a daysSupply Quantity) in days x `factor` fills; implausible is a problem."""
        if q is None:
            return None
        value = q.get("value") if isinstance(q, dict) else None
        unit = q.get("code") or q.get("unit") or "d" if isinstance(q, dict) else None
        per = DAYS_PER_UNIT.get(unit.lower()) if isinstance(unit, str) else None
        if not _is_number(value) or per is None:
            self.fail(f"{where} is not a number of days")
            return None
        days = float(value) * per
        if not 0 < days <= MAX_SUPPLY_DAYS:
            self.fail(f"{where} of {value} {unit} is not a plausible supply (1-{MAX_SUPPLY_DAYS} days)")
            return None
        return days * factor

    def repeats(self, value: object, where: str) -> int:
        if value is None:
            return 0
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REPEATS:
            self.fail(f"{where} {value!r} is not a plausible repeat count (0-{MAX_REPEATS})")
            return 0
        return value


def _is_number(value: object) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) < 10**9


@lru_cache(maxsize=8192)
def _coding(system, code, display) -> Coding:
    return Coding(system, code, display)


def codings_of(concept: dict, where: str) -> tuple[Coding, ...]:
    codings = concept.get("coding")
    if codings is None:
        return ()
    if type(codings) is not list or len(codings) > MAX_CODINGS:
        _items(codings, f"{where}.coding")  # raises, naming the problem
        raise Unreadable(f"{where}.coding has {len(codings)} codings (more than {MAX_CODINGS})")
    return tuple(_coding_of(c, where, i) for i, c in enumerate(codings))


def _coding_of(c: object, where: str, i: int) -> Coding:
    if type(c) is dict:  # the hot path: plain short strings
        system, code, display = c.get("system"), c.get("code"), c.get("display")
        if _short_str(system, MAX_NAME_LENGTH) and _short_str(code, MAX_CODE_LENGTH) \
                and _short_str(display, MAX_NAME_LENGTH):
            return _coding(system, code, display)
    at = f"{where}.coding[{i}]"
    c = _object(c, at)
    return _coding(_string(c.get("system"), f"{at}.system", MAX_NAME_LENGTH),
                   _string(c.get("code"), f"{at}.code", MAX_CODE_LENGTH),
                   _string(c.get("display"), f"{at}.display", MAX_NAME_LENGTH))


def _dict_or_empty(value: object) -> dict:
    return value if type(value) is dict else {}


def _short_str(value: object, limit: int) -> bool:
    return value is None or (type(value) is str and len(value) <= limit)


def reading_of(concept: object, where: str, *, ingredient: bool = False) -> DrugReading | None:
    """One CodeableConcept naming a drug; Unreadable when its shape is wrong."""
    if concept is None:
        return None
    if type(concept) is dict:  # the hot path: one coding of short strings, and a text
        coding, text = concept.get("coding"), concept.get("text")
        if type(coding) is list and len(coding) == 1 and type(coding[0]) is dict and _short_str(text, MAX_NAME_LENGTH):
            c = coding[0]
            system, code, display = c.get("system"), c.get("code"), c.get("display")
            if _short_str(system, MAX_NAME_LENGTH) and _short_str(code, MAX_CODE_LENGTH) \
                    and _short_str(display, MAX_NAME_LENGTH):
                return _single_reading(where, system, code, display, text, ingredient)
    concept = _object(concept, where)
    codings = codings_of(concept, where)
    text = _string(concept.get("text"), f"{where}.text", MAX_NAME_LENGTH)
    names = tuple(dict.fromkeys(n for n in (text, *(c.display for c in codings)) if n))
    return DrugReading(where, codings, names, ingredient)


@lru_cache(maxsize=8192)
def _single_reading(where: str, system, code, display, text, ingredient: bool) -> DrugReading:
    names = tuple(dict.fromkeys(n for n in (text, display) if n))
    return DrugReading(where, (_coding(system, code, display),), names, ingredient)


def _display_reading(ref: object, where: str, ingredient: bool) -> DrugReading | None:
    display = _string(_object(ref, where).get("display"), f"{where}.display", MAX_NAME_LENGTH)
    return DrugReading(f"{where}.display", (), (display,), ingredient) if display else None


class _DrugReader:
    """Every description of the drug of one record: medication[x], its Medication, every ingredient (nested)."""

    def __init__(self, record: dict, medications: dict[str, dict]):
        self.record, self.medications = record, medications
        self.readings: list[DrugReading] = []
        self.seen: set[int] = set()

    def read(self) -> tuple[DrugReading, ...]:
        concept = self.record.get("medicationCodeableConcept")
        reference = self.record.get("medicationReference")
        if reference is None and type(concept) is dict:  # the hot path: the drug is the record's own concept
            reading = reading_of(concept, "medicationCodeableConcept")
            if reading is not None and (reading.codings or reading.names):
                return (reading,)
        if concept is None and reference is None:
            raise Unreadable("it names no medication (no medicationCodeableConcept or medicationReference)")
        self._add(reading_of(concept, "medicationCodeableConcept"))
        if reference is not None:
            self._reference(reference, "medicationReference", depth=0, ingredient=False)
        if not any(r.codings or r.names for r in self.readings):
            raise Unreadable("its medication has no code and no name")
        return tuple(self.readings)

    def _add(self, reading: DrugReading | None) -> None:
        if reading is not None:
            self.readings.append(reading)

    def _reference(self, element: object, where: str, depth: int, ingredient: bool) -> None:
        self._add(_display_reading(element, where, ingredient))
        raw = _object(element, where).get("reference")
        if raw is None:
            return
        ref = reference_of(element)
        if ref is None:
            raise Unreadable(f"{where}.reference {_short(raw)} is not a reference")
        med = resolve(ref, self.medications, container=self.record)
        if not isinstance(med, dict) or med.get("resourceType") not in ("Medication", None):
            raise Unreadable(f"{where} {ref.text} does not resolve to a Medication in the record")
        self._medication(med, ref.key, depth, ingredient)

    def _medication(self, med: dict, name: str, depth: int, ingredient: bool) -> None:
        if id(med) in self.seen:
            return  # a cycle, or the same Medication twice: read once
        if depth >= MAX_INGREDIENT_DEPTH:
            raise Unreadable(f"{name}: ingredients nested more than {MAX_INGREDIENT_DEPTH} levels deep")
        self.seen.add(id(med))
        self._add(reading_of(med.get("code"), f"{name}.code", ingredient=ingredient))
        for i, ing in enumerate(_items(med.get("ingredient"), f"{name}.ingredient")):
            at = f"{name}.ingredient[{i}]"
            ing = _object(ing, at)
            self._add(reading_of(ing.get("itemCodeableConcept"), f"{at}.itemCodeableConcept", ingredient=True))
            if ing.get("itemReference") is not None:
                self._reference(ing["itemReference"], f"{at}.itemReference", depth + 1, ingredient=True)


def ingredient_references(medication: object) -> list[str]:
    """The references (as written) to other Medications in a Medication's ingredients; contained ones excluded."""
    ingredients = medication.get("ingredient") if type(medication) is dict else None
    if type(ingredients) is not list:
        return []
    refs = (reference_of(i.get("itemReference")) for i in ingredients[:MAX_LIST_ITEMS] if type(i) is dict)
    return [ref.text for ref in refs if ref is not None and ref.kind != "contained"]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def quantity_days(dispense: dict, dosages: list) -> float | None:
    """Days one fill lasts at the prescribed rate: quantity / daily dose, for one regular (not as-needed) dosage."""
    quantity = dispense.get("quantity")
    if type(quantity) is not dict or len(dosages) != 1 or type(dosages[0]) is not dict:
        return None
    dosage = dosages[0]
    rates = dosage.get("doseAndRate")
    dose = rates[0].get("doseQuantity") if type(rates) is list and rates and type(rates[0]) is dict else None
    repeat = _dict_or_empty(_dict_or_empty(dosage.get("timing")).get("repeat"))
    if dosage.get("asNeededBoolean") or type(dose) is not dict or dose.get("unit") != quantity.get("unit"):
        return None
    unit = repeat.get("periodUnit")
    per_unit = DAYS_PER_UNIT.get(unit) if type(unit) is str else None
    numbers = (quantity.get("value"), dose.get("value"), repeat.get("frequency", 1), repeat.get("period"), per_unit)
    positive = [n for n in numbers if _is_number(n) and n > 0]
    if len(positive) != len(numbers):
        return None
    qty, per_dose, frequency, period, days = positive
    return qty / (per_dose * frequency / (period * days))


def medication_dates(rtype: str, r: dict) -> RecordDates:
    d = _Dates(r)
    if rtype == "MedicationStatement":
        point = d.day(r.get("effectiveDateTime"), ("effectiveDateTime",))
        period = r.get("effectivePeriod")
        if type(period) is dict:  # the hot path: fetched directly
            start = d.day(period.get("start"), ("effectivePeriod", "start")) or point
            end = d.day(period.get("end"), ("effectivePeriod", "end"), end=True) or point
        else:
            start = d.get("effectivePeriod", "start") or point
            end = d.get("effectivePeriod", "end", end=True) or point
        return RecordDates(start, end, d.day(r.get("dateAsserted"), ("dateAsserted",)), None, d.problem)
    if rtype == "MedicationRequest":
        return _request_dates(r, d)
    start = d.get("whenHandedOver") or d.get("whenPrepared")
    return RecordDates(start, None, None, d.days(r.get("daysSupply"), "daysSupply"), d.problem)


def _request_dates(r: dict, d: _Dates) -> RecordDates:
    start = d.get("authoredOn") or d.get("dispenseRequest", "validityPeriod", "start")
    validity_end = d.get("dispenseRequest", "validityPeriod", "end", end=True)
    ends = []
    try:
        dosages = _items(r.get("dosageInstruction"), "dosageInstruction")
    except Unreadable as exc:
        d.fail(str(exc))
        dosages = []
    for dosage in dosages:
        inner = _Dates(dosage)
        ends.append(inner.get("timing", "repeat", "boundsPeriod", "end", end=True))
        if inner.problem:
            d.fail(f"dosageInstruction: {inner.problem}")
    dispense = _dict_or_empty(r.get("dispenseRequest"))
    per_fill = d.days(dispense.get("expectedSupplyDuration"), "dispenseRequest.expectedSupplyDuration")
    if per_fill is None:
        per_fill = quantity_days(dispense, dosages)
        if per_fill is not None and per_fill > MAX_SUPPLY_DAYS:
            d.fail(f"dispenseRequest.quantity lasts {per_fill:.0f} days at the prescribed dose (more than "
                   f"{MAX_SUPPLY_DAYS})")
            per_fill = None
    repeats = dispense.get("numberOfRepeatsAllowed")
    fills = None if repeats is None else 1 + d.repeats(repeats, "dispenseRequest.numberOfRepeatsAllowed")
    real_ends = [e for e in ends if e]
    return RecordDates(start, max(real_ends) if real_ends else None, None, per_fill and per_fill * (fills or 1),
                       d.problem, fill_by=validity_end, fill_days=per_fill, fills=fills)


def free_text_of(r: dict) -> tuple[str, ...]:
    """Dosage texts and notes, where a drug may be named in words; Unreadable when their shape is wrong."""
    out = []
    for key in ("dosage", "dosageInstruction", "note"):
        for i, item in enumerate(_items(r.get(key), key)):
            text = _string(_object(item, f"{key}[{i}]").get("text"), f"{key}[{i}].text", MAX_FREE_TEXT_LENGTH)
            if text:
                out.append(text)
    return tuple(out)


def exposure_from(r: dict, medications: dict[str, dict]) -> MedicationExposure:
    """One medication record; a drug that cannot be read is kept, with the reason in `unreadable`."""
    rtype = r.get("resourceType", "")
    drug = _DrugReader(r, medications)
    readings: tuple[DrugReading, ...] = ()
    free_text: tuple[str, ...] = ()
    unreadable = None
    try:
        readings = drug.read()
        free_text = free_text_of(r)
    except Unreadable as exc:
        readings, unreadable = tuple(drug.readings), str(exc)
    status = r.get("status") if isinstance(r.get("status"), str) else None
    dates = medication_dates(rtype, r)
    meaning = interpret(rtype, status, dates)
    one = readings[0] if len(readings) == 1 else None  # the usual case: one CodeableConcept
    return MedicationExposure(
        resource=resource_label(r), codings=one.codings if one else tuple(c for x in readings for c in x.codings),
        names=one.names if one else tuple(dict.fromkeys(n for x in readings for n in x.names)),
        readings=readings, status=status, state=meaning.state,
        start=meaning.start, last_exposure=meaning.last_exposure, date_problem=meaning.problem,
        free_text=free_text, unreadable=unreadable, bound=meaning.bound, identifiers=_identifiers(r),
        dosing=dosing_of(rtype, r, dates, medications),
    )


NO_DOSING = Dosing()


def dosing_of(rtype: str, r: dict, dates: RecordDates, index: dict[str, dict]) -> Dosing:
    """The sig, one fill's days' supply and the prescriber (opioid history, MME/day); what is odd is left out."""
    lines = r.get("dosage" if rtype == "MedicationStatement" else "dosageInstruction")
    supply = dates.fill_days if rtype == "MedicationRequest" else dates.supply_days if rtype == "MedicationDispense" \
        else None
    if not lines and supply is None and "requester" not in r:
        return NO_DOSING  # the common statement: nothing to read (the hot path for large records)
    lines = [d for d in lines[:MAX_LIST_ITEMS] if type(d) is dict] if type(lines) is list else []
    texts = tuple(d["text"] for d in lines if type(d.get("text")) is str and _short_str(d["text"], MAX_NAME_LENGTH))
    name, ref = _prescriber(r, index) if rtype == "MedicationRequest" else (None, None)
    return Dosing(tuple(_dose(d) for d in lines), texts, supply, name, ref)


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _dose(d: dict) -> Dose:
    """One dosage line's doseQuantity and Timing.repeat (numbers only when they are plain finite numbers)."""
    rates = d.get("doseAndRate")
    rates = rates if isinstance(rates, list) else []
    rate = _dict(rates[0]) if rates else {}
    quantity = _dict(rate.get("doseQuantity"))
    repeat = _dict(_dict(d.get("timing")).get("repeat"))
    value, frequency, period = (x if _is_number(x) else None for x in
                                (quantity.get("value"), repeat.get("frequency"), repeat.get("period")))
    unit, period_unit = (x if type(x) is str and len(x) <= MAX_CODE_LENGTH else None for x in
                         (quantity.get("code") or quantity.get("unit"), repeat.get("periodUnit")))
    ranged = len(rates) > 1 or "doseRange" in rate or "frequencyMax" in repeat or "periodMax" in repeat
    return Dose(value, unit, frequency, period, period_unit, ranged,
                d.get("asNeededBoolean") is True or "asNeededCodeableConcept" in d)


def _prescriber(r: dict, index: dict[str, dict]) -> tuple[str | None, str | None]:
    """The requester's display, else the name of the Practitioner the record holds; and its reference."""
    requester = _dict(r.get("requester"))
    ref = reference_of(requester)
    display = requester.get("display")
    if type(display) is str and display.strip() and len(display) <= MAX_NAME_LENGTH:
        return display.strip(), ref.text if ref else None
    return _person_name(resolve(ref, index, r)), ref.text if ref else None


def _person_name(resource: dict | None) -> str | None:
    names = (resource or {}).get("name")
    name = _dict(names[0]) if isinstance(names, list) and names else {}
    given = name.get("given")
    parts = [name.get("text")] if type(name.get("text")) is str else [*(given if isinstance(given, list) else []),
                                                                       name.get("family")]
    text = " ".join(p for p in parts if type(p) is str).strip()
    return text if text and len(text) <= MAX_NAME_LENGTH else None


def _identifiers(r: dict) -> tuple[tuple[str, str], ...]:
    found = r.get("identifier")
    return tuple((i["system"], i["value"]) for i in (found if isinstance(found, list) else ()) if isinstance(i, dict)
                 and isinstance(i.get("system"), str) and isinstance(i.get("value"), str))


def resource_label(r: dict) -> str:
    """ "Type/id" for messages; an unusable id is shown as "?"."""
    rid = r.get("id")
    return f"{r.get('resourceType')}/{rid if isinstance(rid, str) and len(rid) <= 64 else '?'}"


def _status_code(concept: object, where: str) -> str | None:
    for c in codings_of(_object(concept, where), where):
        if c.code:
            return c.code
    return None


def diagnosis_from(r: dict) -> Diagnosis:
    """One Condition; Unreadable when its code or statuses cannot be read."""
    d = _Dates(r)
    code = _object(r.get("code"), "code")
    diagnosis = Diagnosis(
        resource=resource_label(r), codings=codings_of(code, "code"),
        text=_string(code.get("text"), "code.text", MAX_NAME_LENGTH),
        clinical_status=_status_code(r.get("clinicalStatus"), "clinicalStatus"),
        verification_status=_status_code(r.get("verificationStatus"), "verificationStatus"),
        onset=d.get("onsetDateTime") or d.get("onsetPeriod", "start"),
        abatement=d.get("abatementDateTime", end=True) or d.get("abatementPeriod", "end", end=True),
    )
    if d.problem:
        raise Unreadable(d.problem)
    if not diagnosis.text and not any(c.code or c.display for c in diagnosis.codings):
        raise Unreadable("it has no code and no name")
    return diagnosis


def patient_ref_of(r: dict) -> str | None:
    for key in ("subject", "patient"):
        ref = r.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return ref["reference"]
    return None


def _subject_problem(r: dict, patient_id: str) -> str | None:
    """Why a record searched for this patient does not belong to them (None: it does, or names no one)."""
    subject = r.get("subject", r.get("patient"))
    if subject is None:
        return None
    ref = reference_of(subject)
    if ref is None:
        return f"its subject {_short(subject)} is not a reference"
    if ref.kind in ("relative", "absolute") and ref.local != f"Patient/{patient_id}":
        return f"it belongs to {ref.local}, not Patient/{patient_id}"
    return None


def patient_data(patient_id: str, patient: dict | None, resources: Iterable[object],
                 medications: dict[str, dict]) -> PatientData:
    """Every resource read into the model, or named in `problems` with the reason it could not be."""
    data = PatientData(patient_id, patient)
    for r in resources:
        label = resource_label(r) if isinstance(r, dict) else "a record"
        problem = _record_problem(r, patient_id)
        if problem or not isinstance(r, dict):  # not a dict is always a problem; this tells the type checker
            data.problems.append(f"{label} could not be read: {problem}")
        elif r["resourceType"] in MEDICATION_USE_TYPES:
            data.medications.append(exposure_from(r, medications))
        else:
            try:
                data.conditions.append(diagnosis_from(r))
            except Unreadable as exc:
                data.problems.append(f"{label} could not be read: {exc}")
    return data


def _record_problem(r: object, patient_id: str) -> str | None:
    if not isinstance(r, dict):
        return f"it is a {_json_type(r)}, not a resource"
    if r.get("resourceType") not in SEARCHED_TYPES:
        return f"its resourceType {_short(r.get('resourceType'))} is not one of {', '.join(SEARCHED_TYPES)}"
    return _subject_problem(r, patient_id)


def patients_from_bundle(bundle: object, source: str = "input") -> dict[str, PatientData]:
    """Group a Bundle's resources by patient. Raises UnreadableInput naming the problem.

    An entry that cannot be read, or a record whose patient is not in the Bundle, is a problem
    of every patient in the Bundle: it may be theirs. Resources of types the app does not read
    (Practitioner, Observation...) are left aside by design (contract.READ_TYPES).
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise UnreadableInput(f"{source}: not a FHIR Bundle")
    if bundle.get("type") not in BUNDLE_TYPES:
        raise UnreadableInput(f"{source}: unsupported Bundle type {_short(bundle.get('type'))}")
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        raise UnreadableInput(f"{source}: Bundle.entry is {'missing' if entries is None else 'not a list'}")
    sorted_ = _Entries(entries)
    if not sorted_.patients:
        raise UnreadableInput(f"{source}: the Bundle holds no Patient with a usable id")
    grouped: dict[str, list[dict]] = {pid: [] for pid in sorted_.patients}
    for r in sorted_.clinical:
        patient = resolve(parse_reference(patient_ref_of(r)), sorted_.aliases)
        if patient is None:
            sorted_.problems.append(f"{resource_label(r)} could not be read: {_owner_problem(r)}")
        else:
            grouped[patient["id"]].append(r)
    out = {}
    for pid, patient in sorted_.patients.items():
        out[pid] = data = patient_data(pid, patient, grouped[pid], sorted_.medications)
        data.problems.extend(sorted_.problems)
    return out


def _owner_problem(r: dict) -> str:
    ref = patient_ref_of(r)
    return f"its patient {_short(ref)} is not in this file" if ref else "it names no patient (subject)"


class _Entries:
    """A Bundle's entries sorted: Patients, Medications (by every name), clinical records, unreadable entries."""

    def __init__(self, entries: list):
        self.patients: dict[str, dict] = {}
        self.aliases: dict[str, dict] = {}  # fullUrl and "Patient/id" -> Patient
        self.medications: dict[str, dict] = {}
        self.clinical: list[dict] = []
        self.problems: list[str] = []
        for i, entry in enumerate(entries):
            self._add(i, entry)

    def _add(self, i: int, entry: object) -> None:
        r = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(r, dict) or not isinstance(entry, dict):
            self.problems.append(f"Bundle entry {i} could not be read: it holds no resource object")
            return
        rtype, full = r.get("resourceType"), entry.get("fullUrl")
        if rtype == "Patient":
            self._patient(i, r, full)
        elif rtype == "Medication":
            self.medications.update(dict.fromkeys(index_keys(r, full), r))
        elif rtype in SEARCHED_TYPES:
            self.clinical.append(r)
        elif not _ignorable_type(rtype):
            self.problems.append(f"Bundle entry {i} could not be read: resourceType {_short(rtype)}")

    def _patient(self, i: int, r: dict, full: object) -> None:
        if not index_keys(r):
            self.problems.append(f"Bundle entry {i} could not be read: a Patient without a usable id")
            return
        self.patients[r["id"]] = r
        self.aliases.update(dict.fromkeys(index_keys(r, full), r))


def _ignorable_type(rtype: object) -> bool:
    """A well-formed resource type the app does not read (not a misspelling of one it does)."""
    if not isinstance(rtype, str) or not RESOURCE_TYPE.fullmatch(rtype):
        return False
    return rtype.casefold() not in {t.casefold() for t in (*READ_TYPES, "Bundle")}
