"""A generated corpus shaped like Synthea output (see /docs/clinical-rules.md, "Undated orders"), with the truth kept.

Shape (FACTS, "Synthea-generated patients"): medications are MedicationRequests only, status `active` or
`stopped`, with `authoredOn` and nothing else (no dispenseRequest, end date or supply); about 1 in 9
patients has a stopped opioid order, of any age (median about 4.6 years, some decades old); conditions
are SNOMED CT coded with onset and abatement. The generator also records, per patient, the last day
each opioid was really taken, so a benchmark can check that no exposure inside the washout is missed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
COMMON_OPIOIDS = ("oxycodone", "hydrocodone", "codeine", "tramadol", "meperidine", "morphine", "fentanyl")
# Text-only non-opioid orders: their codes do not matter to the rules, only that they are readable.
NON_OPIOIDS = ("lisinopril 10 MG Oral Tablet", "metformin hydrochloride 500 MG Oral Tablet",
               "ibuprofen 200 MG Oral Tablet", "amoxicillin 250 MG Oral Capsule", "atorvastatin 20 MG Oral Tablet",
               "acetaminophen 325 MG Oral Tablet", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler")
# SNOMED CT conditions seen in Synthea output (codes from this project's ValueSets or FACTS).
CONDITIONS = (("203082005", "Fibromyalgia (disorder)"), ("279039007", "Low back pain (finding)"),
              ("368581000119106", "Neuropathy due to type 2 diabetes mellitus (disorder)"),
              ("24700007", "Multiple sclerosis (disorder)"), ("34000006", "Crohn's disease (disorder)"),
              ("128302006", "Chronic hepatitis C (disorder)"))
OUD = ("5602001", "Opioid abuse (disorder)")


@dataclass
class Truth:
    """What really happened: the last day any opioid was taken (None: never), and whether use is current."""

    last_opioid_day: date | None = None
    current: bool = False
    orders: list[int] = field(default_factory=list)  # age in days of each stopped opioid order


def opioid_products() -> list[tuple[str, str]]:
    folder = resources.files("fhir_profiles").joinpath("valuesets")
    vs = json.loads(folder.joinpath("ValueSet-opioids.json").read_text(encoding="utf-8"))
    rx = next(inc for inc in vs["compose"]["include"] if inc["system"] == RXNORM)
    return [(c["code"], c["display"]) for c in rx["concept"]
            if " " in c["display"] and any(o in c["display"].lower() for o in COMMON_OPIOIDS)]


def order_age_days(rnd: random.Random) -> int:
    """Age of a stopped order: log-normal with a median of 4.6 years, from days to ~60 years."""
    return max(1, min(int(rnd.lognormvariate(7.43, 1.1)), 60 * 365))


def true_use_days(rnd: random.Random) -> int:
    """How long the patient really took it: mostly a few days for acute pain, rarely months."""
    return rnd.choice([3, 5, 7, 7, 10, 14, 14, 30, 30, 90, 180])


def request(rid: str, pid: str, status: str, authored: date, text: str, code: str | None = None) -> dict:
    concept: dict = {"text": text}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code, "display": text}]
    return {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "medicationCodeableConcept": concept,
            "authoredOn": authored.isoformat()}


def condition(rid: str, pid: str, code: str, display: str, onset: date, abated: date | None) -> dict:
    out = {"resourceType": "Condition", "id": rid, "subject": {"reference": f"Patient/{pid}"},
           "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
           "clinicalStatus": {"coding": [{"code": "resolved" if abated else "active"}]},
           "verificationStatus": {"coding": [{"code": "confirmed"}]}, "onsetDateTime": onset.isoformat()}
    if abated:
        out["abatementDateTime"] = abated.isoformat()
    return out


def patient(i: int, rnd: random.Random, as_of: date, opioids: list[tuple[str, str]]) -> tuple[list[dict], Truth]:
    pid = f"syn{i}"
    out: list[dict] = [{"resourceType": "Patient", "id": pid}]
    truth = Truth()
    for j in range(rnd.randint(0, 6)):
        authored = as_of - timedelta(days=rnd.randint(0, 20 * 365))
        out.append(request(f"{pid}-m{j}", pid, rnd.choice(["active", "stopped", "stopped"]), authored,
                           rnd.choice(NON_OPIOIDS)))
    if rnd.random() < 1 / 9:  # stopped opioid orders of any age, authoredOn only
        for j in range(rnd.choice([1, 1, 1, 2, 3])):
            age = order_age_days(rnd)
            authored = as_of - timedelta(days=age)
            code, text = rnd.choice(opioids)
            out.append(request(f"{pid}-o{j}", pid, "stopped", authored, text, code))
            last = min(authored + timedelta(days=true_use_days(rnd)), as_of)
            truth.last_opioid_day = max(filter(None, (truth.last_opioid_day, last)))
            truth.orders.append(age)
    if rnd.random() < 0.01:  # a current opioid
        code, text = rnd.choice(opioids)
        out.append(request(f"{pid}-oa", pid, "active", as_of - timedelta(days=rnd.randint(1, 60)), text, code))
        truth.current = True
    for j, (code, display) in enumerate(rnd.sample(CONDITIONS, rnd.randint(0, 2))):
        onset = as_of - timedelta(days=rnd.randint(30, 15 * 365))
        abated = onset + timedelta(days=rnd.randint(10, 400)) if rnd.random() < 0.2 else None
        out.append(condition(f"{pid}-c{j}", pid, code, display, onset, abated if abated and abated < as_of else None))
    if rnd.random() < 0.005:
        out.append(condition(f"{pid}-oud", pid, *OUD, as_of - timedelta(days=rnd.randint(100, 3000)), None))
    return out, truth


def corpus(n: int, as_of: date, seed: int = 8) -> list[tuple[list[dict], Truth]]:
    rnd = random.Random(seed)
    opioids = opioid_products()
    return [patient(i, rnd, as_of, opioids) for i in range(n)]
