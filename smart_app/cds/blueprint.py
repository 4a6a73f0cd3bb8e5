"""Flask routes of the CDS Hooks service: discovery, the two hooks, feedback, and the rules page cards cite."""

from __future__ import annotations

import logging
from collections import deque

from flask import Blueprint, Flask, current_app, jsonify, render_template, request

from ..config import Settings
from ..errors import AppError, InputError
from ..fhir.gateway import FhirGateway
from ..smart import oauth
from ..smart.blueprint import current_settings
from . import hooks
from .cards import RULE_TITLES
from .trust import ClientVerifier, Overloaded, Untrusted, make_seen, parse_clients

log = logging.getLogger(__name__)
bp = Blueprint("cds", __name__, template_folder="templates")
FEEDBACK_KEPT = 1000  # the most recent feedback items, in memory (ids and outcomes only)
OUTCOMES = ("accepted", "overridden")


def init_app(app: Flask) -> None:
    """The verifier of CDS Client JWTs (LDN_CDS_CLIENTS) and the feedback log."""
    settings: Settings = app.extensions["settings"]
    app.extensions["cds.verifier"] = ClientVerifier(parse_clients(settings.cds_clients),
                                                    timeout=settings.fhir_connect_timeout, seen=make_seen(settings))
    app.extensions["cds.feedback"] = deque(maxlen=FEEDBACK_KEPT)


def feedback_log() -> deque:
    return current_app.extensions["cds.feedback"]


@bp.get("/cds-services")
def discovery():
    """Public: the same JSON is published in fhir_profiles/cds-services.json."""
    return jsonify(hooks.discovery())


@bp.get("/cds-services/rules")
def rules():
    return render_template("cds_rules.html", rules=RULE_TITLES)


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    _known(service_id)
    _trusted()
    call = hooks.parse_call(service_id, request.get_json(silent=True))
    settings = hooks.Settings(as_of=current_settings().today(), washout_days=current_settings().washout_days,
                              base_url=_base_url())
    cards = hooks.answer(call, settings, lambda c: hooks.read_record(c, _allowed, _gateway))
    log.info("CDS %s for Patient/%s: %s", service_id, call.patient_id,
             ", ".join(c["indicator"] for c in cards) or "no card")
    return jsonify({"cards": cards})


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str):
    """Records outcome, card and suggestion ids and the override reason code - no free text, no PHI."""
    _known(service_id)
    _trusted()
    body = request.get_json(silent=True)
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise InputError("The body must be {\"feedback\": [...]} with at least one item.")
    records = [_feedback_record(service_id, item) for item in items]
    for record in records:
        feedback_log().append(record)
        log.info("CDS feedback %s card %s: %s", service_id, record["card"], record["outcome"])
    return jsonify({})


def _feedback_record(service_id: str, item: object) -> dict:
    if not isinstance(item, dict) or not isinstance(item.get("card"), str) or item.get("outcome") not in OUTCOMES:
        raise InputError("Each feedback item needs a card uuid and an outcome of accepted or overridden.")
    accepted = [s.get("id") for s in item.get("acceptedSuggestions") or () if isinstance(s, dict)]
    override = item.get("overrideReason")
    reason = override.get("reason") if isinstance(override, dict) else None
    code = reason.get("code") if isinstance(reason, dict) else None
    return {"service": service_id, "card": item["card"][:64], "outcome": item["outcome"],
            "accepted_suggestions": [str(s)[:64] for s in accepted if s],
            "override_reason": str(code)[:64] if code else None,
            "outcome_timestamp": str(item.get("outcomeTimestamp") or "")[:40]}


# --- plumbing --------------------------------------------------------------------------------------

def _base_url() -> str:
    return current_settings().public_base_url.rstrip("/")


def _known(service_id: str) -> None:
    if service_id not in hooks.SERVICES:
        raise NoSuchService(f"no CDS service {service_id!r}")


def _trusted() -> dict:
    """The caller's verified JWT claims; `aud` must be this endpoint's public URL."""
    verifier: ClientVerifier = current_app.extensions["cds.verifier"]
    return verifier.verify(request.headers.get("Authorization"), _base_url() + request.path)


def _allowed(fhir_server: str) -> bool:
    return oauth.normalize_iss(fhir_server) in current_settings().allowed_issuers


def _gateway(fhir_server: str, access_token: str) -> FhirGateway:
    """The app's gateway factory, with the token the EHR handed this call (used for this call only)."""
    factory = current_app.extensions["gateway_factory"]
    return factory(current_settings(), oauth.normalize_iss(fhir_server), lambda: access_token)


class NoSuchService(AppError):
    status = 404
    user_message = "There is no such CDS service."


@bp.errorhandler(Untrusted)
def untrusted(err: Untrusted):
    log.warning("CDS call refused: %s", err)
    response = jsonify({"error": "unauthorized", "error_description": str(err)})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


@bp.errorhandler(Overloaded)
def overloaded(err: Overloaded):
    log.error("CDS call refused: %s", err)
    return jsonify({"error": "temporarily_unavailable", "error_description": str(err)}), 503


@bp.errorhandler(AppError)
def app_error(err: AppError):
    log.warning("CDS %s: %s", type(err).__name__, err.detail)
    return jsonify({"error": type(err).__name__, "error_description": err.user_message}), err.status
