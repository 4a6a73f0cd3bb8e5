"""Probes for orchestrators: `/healthz` (the process answers) and `/readyz` (its dependencies answer)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from flask import Blueprint, current_app, jsonify

from ..errors import SessionStoreUnavailable
from ..services import fhir_base_problem
from ..smart.blueprint import current_settings

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)
PROBE_KEY = "readyz:probe"  # never written: reading it proves the store answers
MAX_PROBE_READ_SECONDS = 5.0


@bp.get("/healthz")
def healthz():
    """The process is up and serving requests; no dependency is contacted."""
    return jsonify({"status": "up"})


@bp.get("/readyz")
def readyz():
    """200 when the session store and every configured FHIR base's /metadata answer, else 503 naming which not."""
    checks = {"session-store": _store_check(current_app.extensions["smart.store"])}
    checks.update(_fhir_checks(current_settings(), current_app.extensions["gateway_factory"]))
    ready = all(result == "ok" for result in checks.values())
    response = jsonify({"status": "ready" if ready else "not ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


def fhir_bases(settings) -> list[str]:
    """Every FHIR base the app is configured to talk to."""
    return sorted({*settings.allowed_issuers, *settings.open_servers})


def _store_check(store) -> str:
    try:
        store.get(PROBE_KEY)
    except SessionStoreUnavailable as exc:
        log.warning("readyz: %s", exc.detail)
        return "unavailable"
    return "ok"


def _fhir_checks(settings, gateway_factory) -> dict[str, str]:
    """`fhir <base>` -> "ok" or the problem, all bases at once, no retries, short read timeout."""
    probe = replace(settings, fhir_retries=0,
                    fhir_read_timeout=min(settings.fhir_read_timeout, MAX_PROBE_READ_SECONDS))
    bases = fhir_bases(settings)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(bases)))) as pool:
        problems = pool.map(lambda base: fhir_base_problem(gateway_factory(probe, base, None)), bases)
        return {f"fhir {base}": problem or "ok" for base, problem in zip(bases, problems, strict=True)}
