"""Benchmark (issue 8 item 6): cannot-determine rate on a Synthea-shaped corpus, and missed exposures.

Prints the share of patients per decision, why the cannot-determine ones are, and how many patients
with an opioid really taken inside the washout window were NOT kept out of "eligible" (must be 0).
Target: below 2% cannot-determine. Run: .venv/bin/python bench/undated_orders.py [patients]
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthea_like import corpus  # noqa: E402

from smart_app.clinical.rules.r2_opioid_washout import WASHOUT_DEFAULT  # noqa: E402
from smart_app.fhir.parse import patient_data  # noqa: E402
from smart_app.services import assess_data  # noqa: E402

AS_OF = date(2026, 1, 15)
SAFE = {"eligible", "eligible-with-cautions"}


def exposed_in_window(truth) -> bool:
    last = truth.last_opioid_day
    return truth.current or (last is not None and AS_OF < last + timedelta(days=WASHOUT_DEFAULT))


def main(n: int = 5000) -> None:
    decisions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    missed, exposed, with_orders, ages = 0, 0, 0, []
    for resources, truth in corpus(n, AS_OF):
        pid = resources[0]["id"]
        a = assess_data(patient_data(pid, resources[0], resources[1:], {}), as_of=AS_OF)
        decisions[a.decision.value] += 1
        if a.decision.value == "cannot-determine":
            reasons.update({f.code for f in a.findings if f.severity.value == "cannot-determine"})
        if exposed_in_window(truth):
            exposed += 1
            missed += a.decision.value in SAFE
        with_orders += bool(truth.orders)
        ages.extend(truth.orders)
    ages.sort()
    print(f"corpus: {n} patients; {with_orders} ({with_orders / n:.1%}) with a stopped opioid order "
          f"(authoredOn only); {len(ages)} such orders, median age {ages[len(ages) // 2] / 365.25:.1f} years, "
          f"oldest {ages[-1] / 365.25:.0f} years")
    for decision, count in decisions.most_common():
        print(f"  {decision:24} {count:6} {count / n:7.2%}")
    print(f"cannot-determine rate: {decisions['cannot-determine'] / n:.2%} (target < 2%)")
    print("  why (finding codes): " + ", ".join(f"{k}={v}" for k, v in reasons.most_common()))
    print(f"opioid really taken inside the {WASHOUT_DEFAULT}-day window: {exposed} patients; "
          f"missed (eligible): {missed}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
