"""Benchmark: CDS Hooks order-sign calls with full prefetch, answered in-process (Flask test client).

Each call is what an EHR sends: a fresh ES384-signed JWT (verified against the JWKS served on
loopback; the JWKS is fetched once and cached), a naltrexone draft order and every prefetch key for
one sample patient. Tokens are signed before the clock starts. Prints application time per call
(p50/p95/max, ms) and the wall time of the whole run.

Run: .venv/bin/python bench/bench_cds.py [--calls 200] [--patient ldn-tramadol-5-days]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cds_ehr import APP_BASE, EHR_ISS, FHIR, JwksServer, TestEhr, hook_body, ldn_draft, prefetch_for, sample_resources  # noqa: E402,I001

from smart_app import create_app  # noqa: E402
from smart_app.samples import SAMPLE_AS_OF  # noqa: E402

PATH = "/cds-services/ldn-order-sign"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--patient", default="ldn-tramadol-5-days")
    args = parser.parse_args()
    ehr = TestEhr()
    jwks = JwksServer(ehr.jwks)
    try:
        app = create_app({"ALLOWED_ISSUERS": FHIR, "PUBLIC_BASE_URL": APP_BASE, "LOG_LEVEL": "WARNING",
                          "CDS_CLIENTS": f"{EHR_ISS}|{jwks.url}", "TODAY": SAMPLE_AS_OF.isoformat()})
        client = app.test_client()
        body = hook_body("order-sign", args.patient, [ldn_draft(args.patient)],
                         prefetch_for(sample_resources(args.patient)))
        client.post(PATH, json=body, headers=ehr.headers(PATH))  # warm-up: JWKS fetch, ValueSets, imports
        headers = [ehr.headers(PATH) for _ in range(args.calls)]
        times, indicators = [], set()
        wall = time.perf_counter()
        for h in headers:
            started = time.perf_counter()
            response = client.post(PATH, json=body, headers=h)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.get_data(as_text=True)
            indicators.update(c["indicator"] for c in response.json["cards"])
        wall = time.perf_counter() - wall
    finally:
        jwks.stop()
    print(f"{args.calls} order-sign calls, full prefetch, patient {args.patient}, cards: {sorted(indicators)}")
    print(f"application time per call: p50 {percentile(times, 50):.1f} ms  p95 {percentile(times, 95):.1f} ms  "
          f"mean {statistics.mean(times):.1f} ms  max {max(times):.1f} ms")
    print(f"wall: {wall:.2f} s for {args.calls} calls ({args.calls / wall:.0f} calls/s)")


if __name__ == "__main__":
    main()
