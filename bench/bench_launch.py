"""Benchmark: EHR launch to a fully rendered review page, through the real sandbox on loopback.

Each launch is what a browser does after the clinician presses "EHR launch": POST {ehr}/launch ->
app /launch (discovery, PKCE) -> sandbox /authorize -> app /callback (code exchange) -> app / (FHIR reads,
assessment, page). A fresh requests.Session per launch (a new browser: no cookies), redirects followed.
Prints every launch's time with its hops, then median and p90 in ms.

Run: .venv/bin/python bench/bench_launch.py [--launches 20] [--patient ldn-fibromyalgia]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smart_app.sandbox.demo import start_sandbox  # noqa: E402


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p90 of 20 values = the 18th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def one_launch(ehr_url: str, app_url: str, patient: str) -> tuple[float, list[tuple[str, float]]]:
    """Seconds from the launch POST to the review page's last byte, and (path, seconds) per hop."""
    with requests.Session() as browser:
        started = time.perf_counter()
        page = browser.post(f"{ehr_url}/launch", data={"patient": patient, "need_patient_banner": "true"},
                            timeout=30, allow_redirects=True)
        body = page.text  # the whole page is read before the clock stops (stream=False)
        elapsed = time.perf_counter() - started
    if page.status_code != 200 or page.url.split("?")[0].rstrip("/") != app_url or 'id="decision"' not in body \
            or "</html>" not in body:
        raise SystemExit(f"launch did not end on the rendered review page: {page.status_code} "
                         f"{urlsplit(page.url).path} {body[:300]!r}")
    hops = [(f"{urlsplit(r.url).port}{urlsplit(r.url).path}", r.elapsed.total_seconds())
            for r in [*page.history, page]]
    return elapsed, hops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--patient", default="ldn-fibromyalgia")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    sandbox = start_sandbox()
    print(f"sandbox started in {(time.perf_counter() - t0) * 1000:.0f} ms: EHR {sandbox.ehr_url}, "
          f"app {sandbox.app_url}, FHIR {sandbox.fhir_upstream}")
    try:
        ports = {str(urlsplit(sandbox.ehr_url).port): "ehr", str(urlsplit(sandbox.app_url).port): "app"}
        times = []
        for n in range(1, args.launches + 1):
            elapsed, hops = one_launch(sandbox.ehr_url, sandbox.app_url, args.patient)
            times.append(elapsed * 1000)
            detail = "  ".join(f"{ports.get(h.split('/', 1)[0], '?')}/{h.split('/', 1)[1]} {s * 1000:.0f}"
                               for h, s in hops)
            print(f"launch {n:2d}: {elapsed * 1000:7.1f} ms   ({detail})")
        print(f"\n{len(times)} EHR launches of Patient/{args.patient}, launch POST -> review page rendered:")
        print(f"  median {statistics.median(times):.1f} ms   p90 {percentile(times, 90):.1f} ms   "
              f"min {min(times):.1f} ms   max {max(times):.1f} ms   first (cold) {times[0]:.1f} ms")
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
