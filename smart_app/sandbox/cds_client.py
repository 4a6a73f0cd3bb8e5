"""The sandbox EHR as a CDS Hooks client: "Order LDN" / "Order oxycodone" call the app's hooks and show the cards.

Like a real EHR it signs a JWT per call (ES384, `kid`, `jku`; the JWKS is at /cds/jwks), sends the
draft order in `draftOrders`, no prefetch, and a short-lived access token for its own FHIR proxy in
`fhirAuthorization`, so the service reads the record itself. Dev only.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, jsonify, render_template, request

CDS_CLIENT_ID = "ldn-cds"
CDS_SCOPES = ("patient/*.rs",)
TOKEN_LIFETIME = 300
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
DRUGS = {
    "ldn": ("7243", "naltrexone", "Naltrexone 1.5 mg capsule, compounded (low-dose naltrexone), at bedtime"),
    "oxycodone": ("1049621", "oxycodone hydrochloride 5 MG Oral Tablet", "Oxycodone 5 mg tablet every 6 h as needed"),
}
SERVICES = (("order-select", "ldn-order-select"), ("order-sign", "ldn-order-sign"))


def register(app: Flask, public: str, services_url: str, issue_access_token: Callable[[str], str],
             patient_exists: Callable[[str], bool], clock: Callable[[], float] = time.time) -> None:
    """Add /cds/jwks and POST /cds/order to the sandbox EHR app."""
    key = ec.generate_private_key(ec.SECP384R1())
    kid = secrets.token_hex(8)
    jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "ES384",
           "use": "sig"}
    app.config["SANDBOX_CDS"] = True

    @app.get("/cds/jwks")
    def cds_jwks():
        return jsonify({"keys": [jwk]})

    @app.post("/cds/order")
    def cds_order():
        patient, drug = request.form.get("patient", ""), request.form.get("drug", "")
        if drug not in DRUGS or not patient_exists(patient):
            return render_template("error.html", message="Unknown patient or medication."), 404
        draft = draft_order(patient, drug)
        access = issue_access_token(patient)
        results = []
        for hook, service in SERVICES:
            url = f"{services_url.rstrip('/')}/{service}"
            token = jwt.encode({"iss": public, "aud": url, "iat": int(clock()), "exp": int(clock()) + 120,
                                "jti": str(uuid.uuid4())}, key, algorithm="ES384",
                               headers={"kid": kid, "typ": "JWT", "jku": f"{public}/cds/jwks"})
            results.append((hook, *call_service(url, token, hook_request(hook, patient, draft, public, access))))
        return render_template("cds_cards.html", patient=patient, order=DRUGS[drug][2], results=results)


def draft_order(patient: str, drug: str) -> dict:
    code, display, text = DRUGS[drug]
    return {"resourceType": "MedicationRequest", "id": f"sandbox-draft-{drug}-{secrets.token_hex(4)}",
            "status": "draft", "intent": "order", "subject": {"reference": f"Patient/{patient}"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                          "text": text},
            "dosageInstruction": [{"text": text}]}


def hook_request(hook: str, patient: str, draft: dict, public: str, access_token: str) -> dict:
    context = {"userId": "Practitioner/sandbox-clinician", "patientId": patient,
               "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}}
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{draft['id']}"]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "fhirServer": f"{public}/fhir", "context": context,
            "fhirAuthorization": {"access_token": access_token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                                  "scope": " ".join(CDS_SCOPES), "subject": CDS_CLIENT_ID}}


def call_service(url: str, token: str, body: dict) -> tuple[list[dict], str | None]:
    """(cards, None) or ([], what went wrong)."""
    try:
        response = requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=(5, 30))
    except requests.RequestException as exc:
        return [], f"the CDS service did not answer ({type(exc).__name__})"
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code != 200:
        return [], f"HTTP {response.status_code}: {answer.get('error_description', 'no description')}"
    return answer.get("cards") or [], None
