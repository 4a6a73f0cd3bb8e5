"""Benchmark: clinic-scale speed on the sandbox (issue 11). Prints figures; no pass/fail.

- FHIR requests per launch-to-review (first launch of an issuer, then a warm one), per review reload,
  per preview and per sign, counted at the sandbox's FHIR proxy;
- app-added latency: review page wall time minus the same reads done directly (the FHIR GETs the
  app made for that page, replayed with its token through the same proxy on 5 threads, bodies read,
  not parsed), p50 and p95 at 1, 10 and 50 concurrent clinicians;
- the app's CPU ms per launch-to-review (1 and 10 concurrent clinicians);
- the review page of a 5,000-MedicationStatement patient (time and size).

The app runs alone in its own process (`ldn-app serve`, waitress, 64 threads), so its CPU time is
its own; the sandbox EHR (authorizer + FHIR proxy) runs in this process in front of sekmet.
Run: .venv/bin/python bench/bench_clinic.py [--rounds 5] [--levels 1,10,50]
"""

from __future__ import annotations

import argparse
import html
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smart_app.sandbox.demo import start_sandbox  # noqa: E402
from smart_app.sandbox.fhir_server import free_port  # noqa: E402

SMALL = "ldn-fibromyalgia"
SIGNED = "ldn-crps"  # another eligible patient: once signed, a launch opens on the follow-up page instead
BIG = "bench-5000"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Seen:
    """One request the sandbox EHR received."""

    path: str
    query: str
    authorization: str


class Counter:
    """WSGI middleware on the sandbox EHR: remembers every request (FHIR ones are under /fhir)."""

    def __init__(self, app):
        self.app, self.seen, self._lock = app, [], threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.seen.append(Seen(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
                                  environ.get("HTTP_AUTHORIZATION", "")))
        return self.app(environ, start_response)

    def during(self, action) -> tuple[object, list[Seen]]:
        """`action()`'s result and the FHIR requests made meanwhile (run nothing else at the same time)."""
        start = len(self.seen)
        result = action()
        return result, [s for s in self.seen[start:] if s.path.startswith("/fhir")]


def big_patient(today: date, n: int = 5000) -> dict:
    """A patient with `n` MedicationStatements (none an opioid) and fibromyalgia, dated before `today`."""
    ref = {"reference": f"Patient/{BIG}"}
    entries = [{"fullUrl": f"Patient/{BIG}", "resource": {"resourceType": "Patient", "id": BIG,
                                                          "name": [{"family": "Bench", "given": ["Large"]}]}}]
    drugs = [("83367", "atorvastatin"), ("29046", "lisinopril"), ("25480", "gabapentin"), ("6809", "metformin")]
    for i in range(n):
        code, name = drugs[i % len(drugs)]
        end = today - timedelta(days=30 + i % 2000)
        entries.append({"fullUrl": f"MedicationStatement/{BIG}-ms{i}", "resource": {
            "resourceType": "MedicationStatement", "id": f"{BIG}-ms{i}", "status": "completed", "subject": ref,
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": code, "display": name}], "text": name},
            "effectivePeriod": {"start": (end - timedelta(days=30)).isoformat(), "end": end.isoformat()}}})
    entries.append({"fullUrl": f"Condition/{BIG}-c1", "resource": {
        "resourceType": "Condition", "id": f"{BIG}-c1", "subject": ref,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M79.7",
                             "display": "Fibromyalgia"}], "text": "Fibromyalgia"}}})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def start_app(port: int, iss: str) -> subprocess.Popen:
    env = {**os.environ, "LDN_ALLOWED_ISSUERS": iss, "LDN_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "LDN_CLIENT_ID": "ldn-app", "LDN_SECRET_KEY": secrets.token_hex(32), "LDN_LOG_LEVEL": "WARNING",
           "LDN_SESSION_STORE": "memory"}
    code = "import sys; from smart_app.cli import main; sys.exit(main(sys.argv[1:]))"
    app = subprocess.Popen([sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", str(port),
                            "--threads", "64"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=2)
            return app
        except requests.RequestException:
            time.sleep(0.2)
    app.kill()
    raise SystemExit("the app did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * pct / 100)) - 1]


def form_fields(page: str, form_id: str) -> list[tuple[str, str]]:
    """What a browser submits from form `form_id` (checked boxes, selected options)."""
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', page, re.S)
    if not form:
        raise SystemExit(f"no form {form_id} on the page")
    fields = []
    for tag in re.findall(r"<input[^>]*>", form.group(0)):
        name, value = re.search(r'name="([^"]+)"', tag), re.search(r'value="([^"]*)"', tag)
        if name and not ('type="checkbox"' in tag and "checked" not in tag):
            fields.append((name.group(1), html.unescape(value.group(1)) if value else ""))
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form.group(0), re.S):
        fields.append((name, re.search(r'<option value="([^"]+)"[^>]*selected', body).group(1)))
    return fields


class Bench:
    def __init__(self, ehr_url: str, app_url: str, counter: Counter):
        self.ehr_url, self.app_url, self.counter = ehr_url, app_url, counter

    def launch(self, patient: str) -> tuple[requests.Session, str, float]:
        """A new browser's EHR launch to the rendered review page: (browser, review URL, seconds)."""
        browser = requests.Session()
        started = time.perf_counter()
        page = browser.post(f"{self.ehr_url}/launch", data={"patient": patient, "need_patient_banner": "true"},
                            timeout=120)
        elapsed = time.perf_counter() - started
        if page.status_code != 200 or 'id="decision"' not in page.text:
            raise SystemExit(f"launch of {patient} did not reach the review page: {page.status_code}")
        return browser, page.url, elapsed

    def review(self, browser: requests.Session, url: str) -> float:
        started = time.perf_counter()
        page = browser.get(url, timeout=120)
        elapsed = time.perf_counter() - started
        if page.status_code != 200 or 'id="decision"' not in page.text:
            raise SystemExit(f"review page failed: {page.status_code}")
        return elapsed

    def direct(self, pool: ThreadPoolExecutor, http: requests.Session, reads: list[Seen]) -> float:
        """The same GETs the app made for one review, straight to the FHIR proxy with its token."""
        def get(seen: Seen) -> None:
            url = f"{self.ehr_url}{seen.path}" + (f"?{seen.query}" if seen.query else "")
            response = http.get(url, headers={"Authorization": seen.authorization,
                                              "Accept": "application/fhir+json"}, timeout=120)
            response.raise_for_status()
        started = time.perf_counter()
        list(pool.map(get, reads))
        return time.perf_counter() - started


def counts(bench: Bench) -> tuple[list[Seen], dict[str, int]]:
    """FHIR requests per flow; the reads of one warm review (to replay directly)."""
    figures = {}
    (browser, url, _), seen = bench.counter.during(lambda: bench.launch(SMALL))
    figures["launch-to-review, first launch of the issuer"] = len(seen)
    (browser, url, _), seen = bench.counter.during(lambda: bench.launch(SMALL))
    figures["launch-to-review, later launches"] = len(seen)
    _, reads = bench.counter.during(lambda: bench.review(browser, url))
    figures["review page reload"] = len(reads)
    browser, url, _ = bench.launch(SIGNED)
    page = browser.get(url, timeout=60)
    previewed, seen = bench.counter.during(lambda: browser.post(
        f"{bench.app_url}/preview", data=form_fields(page.text, "plan-form"), timeout=60))
    figures["preview"] = len(seen)
    done, seen = bench.counter.during(lambda: browser.post(
        f"{bench.app_url}/sign", data=form_fields(previewed.text, "sign-form"), timeout=60))
    figures["sign"] = len(seen)
    if "/done/" not in done.url:
        print(f"  (sign did not reach the confirmation: HTTP {done.status_code})")
    return [r for r in reads if "/metadata" not in r.path and ".well-known" not in r.path], figures


def latency(bench: Bench, level: int, rounds: int, reads: list[Seen]) -> tuple[list[float], list[float]]:
    """Review page times and direct-read times, `level` clinicians at once, `rounds` pages each."""
    with ThreadPoolExecutor(level) as pool:
        clinicians = list(pool.map(lambda _n: bench.launch(SMALL), range(level)))
        reviews = [t for ts in pool.map(lambda c: [bench.review(c[0], c[1]) for _ in range(rounds)], clinicians)
                   for t in ts]

        def direct_rounds(_n: int) -> list[float]:
            with ThreadPoolExecutor(5) as own, requests.Session() as http:
                return [bench.direct(own, http, reads) for _ in range(rounds)]
        directs = [t for ts in pool.map(direct_rounds, range(level)) for t in ts]
    return reviews, directs


def cpu_per_launch(bench: Bench, app_pid: int, level: int, launches: int) -> float:
    before = cpu_seconds(app_pid)
    with ThreadPoolExecutor(level) as pool:
        list(pool.map(lambda _n: bench.launch(SMALL), range(launches)))
    return (cpu_seconds(app_pid) - before) / launches * 1000


def big_patient_figures(bench: Bench) -> None:
    browser, url, first = bench.launch(BIG)
    times, seen = bench.counter.during(lambda: [bench.review(browser, url) for _ in range(3)])
    reads = seen[: len(seen) // 3]
    with ThreadPoolExecutor(1) as one, requests.Session() as http:  # pages one after another, as paging needs
        direct = statistics.median(bench.direct(one, http, reads) for _ in range(3))
    size = len(browser.get(url, timeout=120).content)
    print(f"\n5,000-record patient: launch-to-review {first * 1000:.0f} ms; review page median "
          f"{statistics.median(times) * 1000:.0f} ms ({len(reads)} FHIR requests per review; the same reads "
          f"done directly one after another: {direct * 1000:.0f} ms); review page {size / 1024:.1f} KB "
          f"(issue 9 target <= 300 KB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="review pages per clinician per level")
    parser.add_argument("--levels", default="1,10,50", help="concurrent clinicians")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.levels.split(",")]

    port = free_port()
    t0 = time.perf_counter()
    sandbox = start_sandbox(app_url=f"http://127.0.0.1:{port}", bundles=[big_patient(date.today())])
    counter = Counter(sandbox.ehr_app.wsgi_app)
    sandbox.ehr_app.wsgi_app = counter
    app = start_app(port, sandbox.iss)
    print(f"sandbox + 5,000-record patient loaded + app started in {time.perf_counter() - t0:.1f} s; "
          f"app pid {app.pid} (code from {Path(sys.modules['smart_app'].__file__).parent})")
    try:
        bench = Bench(sandbox.ehr_url, sandbox.app_url, counter)
        reads, figures = counts(bench)
        print("\nFHIR requests (counted at the sandbox FHIR proxy):")
        for flow, n in figures.items():
            print(f"  {flow:48s} {n:3d}")
        print(f"\napp-added latency = review page minus the same {len(reads)} reads done directly (ms):")
        for level in levels:
            reviews, directs = latency(bench, level, args.rounds, reads)
            p50, p95 = (percentile(reviews, 50) * 1000, percentile(reviews, 95) * 1000)
            d50, d95 = (percentile(directs, 50) * 1000, percentile(directs, 95) * 1000)
            print(f"  {level:2d} clinicians: review p50 {p50:7.1f} p95 {p95:7.1f} | direct p50 {d50:6.1f} "
                  f"p95 {d95:6.1f} | app-added p50 {p50 - d50:7.1f} p95 {p95 - d95:7.1f}   ({len(reviews)} pages)")
        print("\napp CPU per launch-to-review (app process user+system time):")
        for level, launches in ((1, 20), (10, 50)):
            print(f"  {level:2d} concurrent clinicians: {cpu_per_launch(bench, app.pid, level, launches):6.1f} ms "
                  f"({launches} launches)")
        big_patient_figures(bench)
    finally:
        app.terminate()
        app.wait(10)
        sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
