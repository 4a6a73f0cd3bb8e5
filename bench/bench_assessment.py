"""Benchmark: assessment CPU time for 5,000 MedicationStatements + 1,000 Conditions vs plain json.loads.

Prints figures; target ratio <= 3x (issue 2). Run: .venv/bin/python bench/bench_assessment.py
"""

from __future__ import annotations

import json
import random
import statistics
import time
from datetime import date, timedelta

from smart_app.fhir.parse import patients_from_bundle
from smart_app.services import assess_data

AS_OF = date(2026, 1, 15)
DRUGS = [
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "83367", "atorvastatin"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "29046", "lisinopril"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "25480", "gabapentin"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "161", "acetaminophen"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "7804", "oxycodone"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "6809", "metformin"),
]
CONDITIONS = [("http://hl7.org/fhir/sid/icd-10-cm", "M79.7", "Fibromyalgia"),
              ("http://hl7.org/fhir/sid/icd-10-cm", "I10", "Essential hypertension"),
              ("http://snomed.info/sct", "44054006", "Diabetes mellitus type 2"),
              ("http://hl7.org/fhir/sid/icd-10-cm", "K50.90", "Crohn's disease")]


def big_bundle(n_meds: int = 5000, n_conditions: int = 1000, seed: int = 7) -> dict:
    rnd = random.Random(seed)
    entries = [{"resource": {"resourceType": "Patient", "id": "p1"}}]
    for i in range(n_meds):
        system, code, name = rnd.choice(DRUGS)
        end = AS_OF - timedelta(days=rnd.randint(11, 2000))
        entries.append({"fullUrl": f"MedicationStatement/ms{i}", "resource": {
            "resourceType": "MedicationStatement", "id": f"ms{i}",
            "status": rnd.choice(["completed", "stopped", "completed", "entered-in-error"]),
            "medicationCodeableConcept": {"coding": [{"system": system, "code": code, "display": name}],
                                          "text": f"{name} {rnd.choice([5, 10, 20, 40])} MG Oral Tablet"},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": (end - timedelta(days=30)).isoformat(), "end": end.isoformat()},
            "dateAsserted": end.isoformat()}})
    for i in range(n_conditions):
        system, code, name = rnd.choice(CONDITIONS)
        entries.append({"fullUrl": f"Condition/c{i}", "resource": {
            "resourceType": "Condition", "id": f"c{i}",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": rnd.choice(["active", "resolved"])}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": system, "code": code, "display": name}], "text": name},
            "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2020-01-01"}})
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def cpu(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def main() -> None:
    text = json.dumps(big_bundle())
    parsed = json.loads(text)
    assess_data(patients_from_bundle(parsed)["p1"], as_of=AS_OF)  # warm the ValueSet load once
    t_json = cpu(lambda: json.loads(text), 15)
    t_assess = cpu(lambda: assess_data(patients_from_bundle(parsed)["p1"], as_of=AS_OF), 15)
    print(f"bundle: 5000 MedicationStatement + 1000 Condition, {len(text) / 1e6:.1f} MB JSON")
    print(f"json.loads          median CPU {t_json * 1000:8.1f} ms")
    print(f"assessment          median CPU {t_assess * 1000:8.1f} ms  (parse what the rules need + rules)")
    print(f"ratio assessment / json.loads = {t_assess / t_json:.2f}x  (target <= 3x)")


if __name__ == "__main__":
    main()
