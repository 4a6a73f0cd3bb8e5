"""Regenerate the profile examples from the builders, so they never drift: `python fhir_profiles/examples/generate.py`.

Sample patient ldn-fibromyalgia, as of 2026-01-15, first dose 2026-01-20, default titration. The
stand-alone MedicationRequest and CarePlan are shown as the EHR holds them after the transaction:
with ids, and the CarePlan's urn:uuid reference to the order rewritten to MedicationRequest/<id>.
tests/test_profiles.py checks the committed files equal a fresh build.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path

PATIENT = "ldn-fibromyalgia"
START = date(2026, 1, 20)
RECORDED = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
REQUESTER = "Practitioner/example-prescriber"
EXAMPLE_ID = "ldn-example"
HERE = Path(__file__).resolve().parent
BASELINE = 7
REVIEWED = datetime(2026, 3, 24, 10, 0, tzinfo=UTC)  # week 9
EHR_BASE = "https://ehr.example.org/fhir"


def transaction_example() -> dict:
    from smart_app.clinical.model import TitrationRequest
    from smart_app.fhir.parse import patients_from_bundle
    from smart_app.samples import SAMPLE_AS_OF, load_sample
    from smart_app.services import SignRequest, plan_order

    data = patients_from_bundle(load_sample(PATIENT))[PATIENT]
    req = SignRequest(titration=TitrationRequest(start=START), requester=REQUESTER, baseline_pain=BASELINE)
    return plan_order(data, req, as_of=SAMPLE_AS_OF, recorded=RECORDED)[1]


def examples() -> dict[str, dict]:
    """File name -> example resource."""
    bundle = transaction_example()
    by_type = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
    mr = {"id": EXAMPLE_ID, **copy.deepcopy(by_type["MedicationRequest"]["resource"])}
    cp = {"id": EXAMPLE_ID, **copy.deepcopy(by_type["CarePlan"]["resource"])}
    obs = {"id": EXAMPLE_ID + "-baseline", **copy.deepcopy(by_type["Observation"]["resource"])}
    cp = stored(cp, {by_type["MedicationRequest"]["fullUrl"]: f"MedicationRequest/{EXAMPLE_ID}",
                     by_type["Observation"]["fullUrl"]: f"Observation/{obs['id']}"})
    review = review_example(mr, cp)
    reviewed = {e["resource"]["resourceType"]: e for e in review["entry"] if e["request"]["method"] == "PUT"}
    return {
        "MedicationRequest-ldn-example.json": _first(mr, "resourceType"),
        "CarePlan-ldn-example.json": _first(cp, "resourceType"),
        "Observation-ldn-pain-score-example.json": _first(obs, "resourceType"),
        "Bundle-ldn-transaction-example.json": bundle,
        "Bundle-ldn-review-transaction-example.json": review,
        "CarePlan-ldn-reviewed-example.json": _first(stored(reviewed["CarePlan"]["resource"], {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{EXAMPLE_ID}-review" for e in review["entry"]
            if e["request"]["method"] == "POST"}), "resourceType"),
    }


def stored(resource: dict, ids: dict[str, str]) -> dict:
    """`resource` as the EHR holds it after the transaction: the Bundle's urn:uuid references rewritten."""
    from smart_app.fhir.contract import rewrite_references

    return rewrite_references(copy.deepcopy(resource), ids)


def review_example(mr: dict, cp: dict) -> dict:
    """The review transaction at week 9 for the example plan: pain 3/10, clear benefit, continue at 4.5 mg."""
    from smart_app.clinical.rules.r6_follow_up import Review, review_window
    from smart_app.fhir.parse import patients_from_bundle
    from smart_app.fhir.plan import WrittenPlan, plan_steps
    from smart_app.fhir.review import review_bundle
    from smart_app.follow_up import new_order_plan, review_key
    from smart_app.samples import load_sample
    from smart_app.services import assess_data

    as_of = REVIEWED.date()
    read_back = [{**r, "meta": {**r["meta"], "versionId": "1"}} for r in (cp, mr)]  # as the EHR answers a read
    plan = WrittenPlan(*read_back, mr["identifier"][0]["value"], START, plan_steps(mr), review_window(START), BASELINE,
                       authored_on=date.fromisoformat(mr["authoredOn"]),
                       supply_days=mr["dispenseRequest"]["expectedSupplyDuration"]["value"],
                       reasons=tuple(a["reference"] for a in cp["addresses"]))
    review = Review(3, "clear", ("vivid-dreams",), "Vivid dreams in the first two weeks, settled.", "continue")
    data = patients_from_bundle(load_sample(PATIENT))[PATIENT]
    new_plan = new_order_plan(plan, review, assess_data(data, as_of=as_of), as_of, REQUESTER)
    return review_bundle(plan, review, review_key(plan, review, as_of), REVIEWED, REQUESTER, EHR_BASE, new_plan)


def _first(resource: dict, key: str) -> dict:
    return {key: resource[key], **{k: v for k, v in resource.items() if k != key}}


def render(resource: dict) -> str:
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for name, resource in examples().items():
        (HERE / name).write_text(render(resource), encoding="utf-8")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
