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


def transaction_example() -> dict:
    from smart_app.clinical.model import TitrationRequest
    from smart_app.fhir.parse import patients_from_bundle
    from smart_app.samples import SAMPLE_AS_OF, load_sample
    from smart_app.services import SignRequest, plan_order

    data = patients_from_bundle(load_sample(PATIENT))[PATIENT]
    req = SignRequest(titration=TitrationRequest(start=START), requester=REQUESTER)
    return plan_order(data, req, as_of=SAMPLE_AS_OF, recorded=RECORDED)[1]


def examples() -> dict[str, dict]:
    """File name -> example resource."""
    bundle = transaction_example()
    by_type = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
    mr = {"id": EXAMPLE_ID, **copy.deepcopy(by_type["MedicationRequest"]["resource"])}
    cp = {"id": EXAMPLE_ID, **copy.deepcopy(by_type["CarePlan"]["resource"])}
    mr_urn = by_type["MedicationRequest"]["fullUrl"]
    for activity in cp["activity"]:
        if activity.get("reference", {}).get("reference") == mr_urn:
            activity["reference"]["reference"] = f"MedicationRequest/{EXAMPLE_ID}"
    return {
        "MedicationRequest-ldn-example.json": _first(mr, "resourceType"),
        "CarePlan-ldn-example.json": _first(cp, "resourceType"),
        "Bundle-ldn-transaction-example.json": bundle,
    }


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
