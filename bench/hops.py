"""Benchmark: layer hops and FHIR requests of launch -> review -> preview -> sign (issue 13). Prints figures.

A layer is a top-level part of `smart_app` (`web`, `services`, `fhir`, `clinical`, `smart`, `review`, ...;
a module directly under `smart_app/` is a layer of its own). One request runs in process (Flask test client)
against a recorded EHR (`responses`: the sample patient, transactions answered 201) through the real FHIR
gateway, under a `sys.setprofile` tracer that sees every call from one smart_app function to another
(library frames in between are transparent). It prints, per page:
- hops: distinct cross-layer call edges (caller function -> callee function, layers differ);
- path: the layers entered, in order, consecutive repeats collapsed (e.g. web > services > fhir > services);
- past services: of those edges, the ones from `web` straight into `fhir` or `clinical`;
- crossings: every cross-layer call made (loops included: grows with the record's size);
- gateways: FHIR gateways the app's factory built; FHIR requests the recorded EHR answered;
- ms: the page's median wall time over 5 untraced requests (review and preview, which change nothing).
Sign, as a clinician sees it, is the POST /sign and the confirmation page it redirects to (`done`).
Run: .venv/bin/python bench/hops.py [--patient ldn-fibromyalgia] [--edges]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import responses
from werkzeug.datastructures import MultiDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smart_app import create_app  # noqa: E402
from smart_app.samples import SAMPLE_AS_OF, load_sample  # noqa: E402
from tests.fake_ehr import ISS, form_fields, launch  # noqa: E402
from tests.recorded_fhir import searchset, serve_patient  # noqa: E402

SMART = {"authorization_endpoint": f"{ISS}/authorize", "token_endpoint": f"{ISS}/token",
         "capabilities": ["launch-ehr", "permission-v2", "openid", "fhirUser"],
         "code_challenge_methods_supported": ["S256"], "issuer": ISS}
PACKAGE = "smart_app"


def layer_of(module: str | None) -> str | None:
    """`smart_app.web.views` -> `web`; `smart_app.services` -> `services`; anything else -> None."""
    parts = (module or "").split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


@dataclass
class Tracer:
    """Cross-layer calls between smart_app functions, per thread (the gateway reads on worker threads)."""

    edges: set = field(default_factory=set)
    crossings: int = 0
    path: list = field(default_factory=list)
    _stacks: dict = field(default_factory=dict)

    def __call__(self, frame, event, _arg):
        if event not in ("call", "return"):
            return
        stack = self._stacks.setdefault(threading.get_ident(), [])
        layer = layer_of(frame.f_globals.get("__name__"))
        if event == "return":
            if stack and stack[-1][0] is frame:
                stack.pop()
            return
        if layer is None:
            return
        name = f"{frame.f_globals['__name__']}.{frame.f_code.co_name}"
        caller = stack[-1] if stack else None
        stack.append((frame, layer, name))
        if caller is not None and caller[1] != layer:
            self.crossings += 1
            self.edges.add((caller[2], name))
        if not self.path or self.path[-1] != layer:
            self.path.append(layer)

    def run(self, action):
        threading.setprofile(self)
        sys.setprofile(self)
        try:
            return action()
        finally:
            sys.setprofile(None)
            threading.setprofile(None)


def transaction_response(request):
    entries = json.loads(request.body)["entry"]
    return 200, {}, json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": "201 Created", "location": f"{e['resource']['resourceType']}/w{n}/_history/1"}}
        for n, e in enumerate(entries)]})


def median_ms(action, times: int = 5) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        spent.append((time.perf_counter() - start) * 1000)
    return statistics.median(spent)


def measure(app, rsps, label: str, action, show_edges: bool, timed: bool = False):
    factory = app.extensions["gateway_factory"]
    built = []
    app.extensions["gateway_factory"] = lambda *a: built.append(1) or factory(*a)
    start, tracer = len(rsps.calls), Tracer()
    try:
        result = tracer.run(action)
    finally:
        app.extensions["gateway_factory"] = factory
    fhir = [c for c in rsps.calls[start:] if c.request.url.startswith(ISS)]
    past = [e for e in tracer.edges if layer_of(e[0]) == "web" and layer_of(e[1]) in ("fhir", "clinical")]
    ms = f"  ms {median_ms(action):.0f}" if timed else ""
    print(f"{label:<8} hops {len(tracer.edges):>3}  past services {len(past):>2}  crossings {tracer.crossings:>4}  "
          f"path {len(tracer.path):>3}  gateways {len(built)}  FHIR requests {len(fhir)}{ms}")
    print(f"{'':<8} path {' > '.join(tracer.path)}")
    if show_edges:
        for caller, callee in sorted(tracer.edges):
            print(f"{'':<10}{caller} -> {callee}")
        for call in fhir:
            print(f"{'':<10}{call.request.method} {call.request.url.removeprefix(ISS)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient", default="ldn-fibromyalgia", help="an eligible sample patient")
    parser.add_argument("--edges", action="store_true", help="list every cross-layer edge and FHIR request")
    args = parser.parse_args(argv)
    app = create_app({"ALLOWED_ISSUERS": ISS, "PUBLIC_BASE_URL": "http://127.0.0.1:8000", "SECRET_KEY": "k" * 32,
                      "TODAY": SAMPLE_AS_OF.isoformat(), "SESSION_STORE": "memory"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{ISS}/.well-known/smart-configuration", json=SMART)
        serve_patient(rsps, load_sample(args.patient), base=ISS)
        rsps.add_callback("POST", ISS, callback=transaction_response, content_type="application/fhir+json")
        client = app.test_client()
        client.get("/launch", query_string={"iss": ISS, "launch": "warm"})  # issuer documents cached
        client.get("/", query_string={"lid": launch(app, client, args.patient)})  # and the CapabilityStatement
        lid = launch(app, client, args.patient)
        review = measure(app, rsps, "review", lambda: client.get("/", query_string={"lid": lid}), args.edges,
                         timed=True)
        fields = MultiDict(form_fields(review.get_data(as_text=True), "plan-form"))
        preview = measure(app, rsps, "preview", lambda: client.post("/preview", data=fields), args.edges,
                          timed=True)
        fields = MultiDict(form_fields(preview.get_data(as_text=True), "sign-form"))
        signed = measure(app, rsps, "sign", lambda: client.post("/sign", data=fields), args.edges)
        assert signed.status_code == 303, signed.get_data(as_text=True)
        written = json.loads(next(c.request.body for c in rsps.calls if c.request.method == "POST"))
        order = {**written["entry"][0]["resource"], "id": "w0"}  # the server now holds the order it confirmed
        rsps.replace(responses.GET, f"{ISS}/MedicationRequest", json=searchset([order], base=ISS))
        done = measure(app, rsps, "done", lambda: client.get(signed.headers["Location"]), args.edges)
        assert done.status_code == 200, done.get_data(as_text=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
