"""Morphine milligram equivalents per day from a record's strength and sig (CDC 2022 factors); never a guess."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .terminology import normalize_name

FACTORS_FILE = "data/cdc_mme_factors.csv"
PERIOD_DAYS = {"h": 1 / 24, "d": 1, "wk": 7, "min": 1 / 1440}  # UCUM units of Timing.repeat.periodUnit
_NUMBER = r"\d+(?:\.\d+)?|\d+/\d+|one|two|three|four|half|an?"
_WORDS = {"one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "half": 0.5, "a": 1.0, "an": 1.0}
_UNIT_NAMES = r"tablets?|tabs?|tbl|capsules?|caps?|patch(?:es)?|lozenges?|films?|suppositor(?:y|ies)"
_UNIT_WORDS = re.compile(rf"\{{?(?:{_UNIT_NAMES})\}}?")  # 'tablet', '{tbl}' (UCUM annotation)
_AMOUNT = re.compile(rf"\b({_NUMBER})\s*(mg|ml|{_UNIT_NAMES})\b")
_RANGE = re.compile(r"\d\s*(?:-|to|or)\s*\d")
_AS_NEEDED = re.compile(r"\b(as needed|if needed|when needed|prn)\b")
_TIMES = {"once": 1, "twice": 2, "two times": 2, "three times": 3, "four times": 4}
_FREQUENCIES = (  # (pattern, doses per day from the match)
    (re.compile(r"\bevery (\d+(?:\.\d+)?) hours?\b"), lambda m: 24 / float(m.group(1))),
    (re.compile(r"\bevery hour\b"), lambda m: 24.0),
    (re.compile(r"\bevery (\d+) days\b"), lambda m: 1 / float(m.group(1))),
    (re.compile(r"\b(once|twice|two times|three times|four times) (?:a|per|each) day\b"),
     lambda m: float(_TIMES[m.group(1)])),
    (re.compile(r"\b(once|twice|two times|three times|four times) daily\b"), lambda m: float(_TIMES[m.group(1)])),
    (re.compile(r"\b(\d+) times (?:a|per|each) day\b"), lambda m: float(m.group(1))),
    (re.compile(r"\bbid\b"), lambda m: 2.0), (re.compile(r"\btid\b"), lambda m: 3.0),
    (re.compile(r"\bqid\b"), lambda m: 4.0),
    (re.compile(r"\b(?:daily|every day|every morning|every evening|every night|nightly|at bedtime|qd|qhs)\b"),
     lambda m: 1.0),  # last: "twice daily" is read (and blanked) before "daily"
)


@dataclass(frozen=True)
class Factor:
    ingredient: str
    rxnorm: str
    form: str  # "any", or "transdermal" (fentanyl: the table gives the patch only)
    unit: str  # "mg/day", or "mcg/hr" for the patch
    factor: float


@dataclass(frozen=True)
class Dose:
    """One structured dosage line: doseQuantity and Timing.repeat, as written (None where absent)."""

    value: float | None = None
    unit: str | None = None
    frequency: float | None = None
    period: float | None = None
    period_unit: str | None = None
    ranged: bool = False  # doseRange, frequencyMax or periodMax: a range, not one dose
    as_needed: bool = False


@dataclass(frozen=True)
class Dosing:
    """What one medication record says about amount, supply and prescriber (None / empty where it says nothing)."""

    doses: tuple[Dose, ...] = ()
    texts: tuple[str, ...] = ()  # the sig in words (dosage / dosageInstruction text)
    supply_days: float | None = None  # one fill: expectedSupplyDuration or daysSupply
    prescriber: str | None = None  # the requester's display, or its name when the record holds the Practitioner
    prescriber_ref: str | None = None


@dataclass(frozen=True)
class Mme:
    """MME/day, or None with the reason; `how` shows the arithmetic or why it could not be done."""

    per_day: float | None
    how: str
    as_needed: bool = False

    @property
    def shown(self) -> str:
        if self.per_day is None:
            return "-"
        value = f"{self.per_day:.1f}".rstrip("0").rstrip(".")
        return f"up to {value} (as needed)" if self.as_needed else value


@cache
def factors() -> dict[str, Factor]:
    """The CDC 2022 table, by ingredient name."""
    text = resources.files(__package__).joinpath(FACTORS_FILE).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {r["ingredient"]: Factor(r["ingredient"], r["rxnorm"], r["form"], r["unit"], float(r["factor"]))
            for r in rows}


def mme_per_day(names: Sequence[str], dosing: Dosing) -> Mme:
    """MME/day of one record: its opioid's CDC factor x its daily dose, from the strength in its drug names and
    its sig (structured dosage first, else the sig text). Anything missing or ambiguous: not computable."""
    normalized = [normalize_name(n) for n in names]
    found = sorted({i for i in factors() for n in normalized if re.search(rf"\b{i}\b", n)})
    if len(found) != 1:
        return Mme(None, "no opioid with a CDC conversion factor in the drug's name" if not found
                   else f"more than one opioid in one product ({', '.join(found)})")
    factor = factors()[found[0]]
    strength = _strength(factor.ingredient, normalized)
    if isinstance(strength, str):
        return Mme(None, strength)
    sig = _sig(dosing)
    if isinstance(sig, str):
        return Mme(None, sig)
    return _compute(factor, strength, *sig)


def _strength(ingredient: str, names: Sequence[str]) -> tuple[float, str] | str:
    """(amount, per) from names like 'oxycodone hydrochloride 5 mg oral tablet': per 'unit', 'ml' or 'hr'
    (mg, or mcg for 'hr'); a reason when no name gives it or names disagree."""
    pattern = re.compile(rf"\b{ingredient}\b(?:\s+[a-z]+){{0,3}}?\s+(\d+(?:\.\d+)?)\s*(mg|mcg)(?:\s*/\s*(ml|hr|h)\b)?")
    seen = set()
    for name in names:
        for m in pattern.finditer(name):
            amount, unit, per = float(m.group(1)), m.group(2), {"hr": "hr", "h": "hr"}.get(m.group(3), m.group(3))
            per = per or "unit"
            if per == "hr":
                amount *= 1000 if unit == "mg" else 1  # the patch's rate in mcg/hr
            elif unit == "mcg":
                amount /= 1000
            seen.add((round(amount, 6), per))
    if len(seen) != 1:
        return "no strength in the drug's name" if not seen else "the drug's names give different strengths"
    return seen.pop()


def _sig(dosing: Dosing) -> tuple[float, str, float | None, bool] | str:
    """(amount, 'unit'/'ml'/'mg', doses per day or None, as needed) from the one dosage line; else why not."""
    if len(dosing.doses) > 1 or (not dosing.doses and len(dosing.texts) > 1):
        return "several dosage lines (a taper or split dose): add them up by hand"
    if dosing.doses and (dosing.doses[0].value is not None or dosing.doses[0].ranged):
        return _structured(dosing.doses[0])
    if not dosing.texts:
        return "no sig (dosage instruction) recorded"
    return _text_sig(normalize_name(dosing.texts[0]))


def unit_kind(word: str | None) -> str | None:
    """'mg', 'ml' or 'unit' (tablet, capsule, patch... in words or UCUM annotations), else None."""
    word = (word or "").strip().lower()
    return word if word in ("mg", "ml") else "unit" if _UNIT_WORDS.fullmatch(word) else None


def _structured(dose: Dose) -> tuple[float, str, float | None, bool] | str:
    kind = unit_kind(dose.unit)
    if dose.ranged:
        return "the sig gives a range, not one dose"
    if kind is None or not dose.value or dose.value <= 0:
        return f"dose unit '{dose.unit}' is not one the calculation reads" if kind is None else "no dose amount"
    per = PERIOD_DAYS.get(dose.period_unit or "")
    per_day = (dose.frequency or 1) / (dose.period * per) if dose.period and per else None
    return dose.value, kind, per_day, dose.as_needed


def _text_sig(text: str) -> tuple[float, str, float | None, bool] | str:
    if _RANGE.search(text):
        return "the sig gives a range, not one dose"
    amounts = {(_number(m.group(1)), unit_kind(m.group(2)) or "unit") for m in _AMOUNT.finditer(text)}
    mg = {a for a in amounts if a[1] == "mg"}
    amounts = mg or amounts  # "80 mg (8 ml)": the milligrams
    if len(amounts) != 1:
        return "no dose amount in the sig" if not amounts else "the sig names more than one amount"
    rates: set[float] = set()
    for pattern, rate in _FREQUENCIES:  # each phrase counted once: a matched one is blanked for the next patterns
        rates.update(round(rate(m), 6) for m in pattern.finditer(text))
        text = pattern.sub(" ", text)
    if len(rates) > 1:
        return "the sig names more than one frequency"
    amount, kind = amounts.pop()
    return amount, kind, rates.pop() if rates else None, bool(_AS_NEEDED.search(text))


def _number(raw: str) -> float:
    if "/" in raw:
        top, bottom = raw.split("/")
        return float(top) / float(bottom) if float(bottom) else 0.0
    return _WORDS[raw] if raw in _WORDS else float(raw)


def _compute(factor: Factor, strength: tuple[float, str], amount: float, kind: str, per_day: float | None,
             as_needed: bool) -> Mme:
    size, per = strength
    if factor.form == "transdermal":
        if per != "hr" or kind != "unit":
            return Mme(None, "the CDC table converts fentanyl patches (mcg/hr) only")
        rate = amount * size
        return Mme(rate * factor.factor, f"{_n(amount)} patch x {_n(size)} mcg/hr = {_n(rate)} mcg/hr; x "
                   f"{factor.factor:g} ({factor.ingredient}, CDC 2022)")
    if per_day is None:
        return Mme(None, "no frequency in the sig")
    if kind == "mg":
        per_dose = amount
    elif (kind, per) in (("unit", "unit"), ("ml", "ml")):
        per_dose = amount * size
    else:
        return Mme(None, f"the sig's amount ({kind}) does not match the strength (mg per {per})")
    daily = per_dose * per_day
    most = " - as needed: the most the sig allows" if as_needed else ""
    return Mme(daily * factor.factor, f"{_n(per_dose)} mg x {_n(per_day)}/day = {_n(daily)} mg/day; x "
               f"{factor.factor:g} ({factor.ingredient}, CDC 2022){most}", as_needed)


def _n(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")
