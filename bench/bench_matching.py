"""Benchmark: code and name matching on hostile input (issue 16 item 6) - a 40 KB ICD-10-CM / ATC code, a long name.

Prints wall time and peak memory; prefix matching must stay linear in the code's length.
Run: .venv/bin/python bench/bench_matching.py
"""

from __future__ import annotations

import resource
import time

from smart_app.clinical.terminology import ATC, ICD10CM, default_terminology

CASES = {
    "40 KB ICD-10-CM code": (ICD10CM, "K50" + "9" * 40_000),
    "40 KB ATC code": (ATC, "N02AA" + "1" * 40_000),
    "400 KB ICD-10-CM code": (ICD10CM, "K50" + "9" * 400_000),
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    terminology = default_terminology()
    print(f"after loading the ValueSets: peak RSS {peak_mb():.0f} MB")
    for label, (system, code) in CASES.items():
        start = time.perf_counter()
        found = terminology.code_matches(system, code)
        print(f"{label:24s} {1000 * (time.perf_counter() - start):8.2f} ms  {len(found)} match(es)  "
              f"peak RSS {peak_mb():.0f} MB")
    name = "oxycodone " * 2_000
    start = time.perf_counter()
    found = terminology.name_matches(name)
    print(f"{'20 KB name':24s} {1000 * (time.perf_counter() - start):8.2f} ms  {len(found)} match(es)")


if __name__ == "__main__":
    main()
