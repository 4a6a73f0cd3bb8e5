"""A test CDS Client (EHR): an ES384 key, its JWKS on a loopback HTTP server, signed hook calls, prefetch."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from smart_app.cds.hooks import PREFETCH_TYPES
from smart_app.samples import load_sample

EHR_ISS = "https://ehr.example.org"
FHIR = "https://ehr.example.org/fhir"
APP_BASE = "https://ldn.example.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


class JwksServer:
    """Serves {"keys": [...]} at /jwks on 127.0.0.1:<free port> from a thread."""

    def __init__(self, jwks: dict):
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body if self.path == "/jwks" else b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class TestEhr:
    """Signs CDS Hooks JWTs (ES384, kid) the way an EHR does."""

    __test__ = False

    def __init__(self, iss: str = EHR_ISS):
        self.iss, self.kid = iss, "test-ehr-key"
        self.key = ec.generate_private_key(ec.SECP384R1())
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = {"keys": [{**jwk, "kid": self.kid, "alg": "ES384", "use": "sig"}]}

    def token(self, aud: str, *, key=None, **claims) -> str:
        now = int(time.time())
        payload = {"iss": self.iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims}
        return jwt.encode(payload, key or self.key, algorithm="ES384", headers={"kid": self.kid, "typ": "JWT"})

    def headers(self, path: str, **claims) -> dict:
        return {"Authorization": "Bearer " + self.token(APP_BASE + path, **claims)}


def searchset(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{FHIR}/{r['resourceType']}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in resources]}


def sample_resources(pid: str) -> list[dict]:
    return [e["resource"] for e in load_sample(pid)["entry"]]


def prefetch_for(resources: list[dict]) -> dict:
    """Every prefetch key of the services, answered from the patient's resources (null when empty)."""
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    prefetch: dict = {"patient": patient}
    for key, rtype in PREFETCH_TYPES.items():
        found = [r for r in resources if r["resourceType"] == rtype]
        prefetch[key] = searchset(found) if found else None
    return prefetch


def med_order(rid: str, pid: str, code: str, display: str, text: str | None = None, status: str = "draft") -> dict:
    return {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                          "text": text or display},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2026-01-15"}


def ldn_draft(pid: str) -> dict:
    return med_order("draft-ldn", pid, "7243", "naltrexone", "naltrexone 1.5 mg capsule (compounded, low-dose)")


def oxycodone_draft(pid: str) -> dict:
    return med_order("draft-oxycodone", pid, "1049621", "oxycodone hydrochloride 5 MG Oral Tablet")


def hook_body(hook: str, pid: str, drafts: list[dict], prefetch: dict | None = None, **extra) -> dict:
    context = {"userId": "Practitioner/example", "patientId": pid,
               "draftOrders": {"resourceType": "Bundle", "type": "collection",
                               "entry": [{"resource": d} for d in drafts]}}
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts]
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, **extra}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body
