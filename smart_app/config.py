"""Configuration: defaults, overridden by `LDN_`-prefixed environment variables. No logic."""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULTS: dict[str, str | int | float] = {
    "ALLOWED_ISSUERS": "",  # comma-separated FHIR base URLs (iss) we accept launches from
    "CLIENT_ID": "ldn-app",
    "CLIENT_SECRET": "",  # set -> confidential client, client_secret_basic
    "PRIVATE_KEY_FILE": "",  # set -> confidential client, private_key_jwt
    "PRIVATE_KEY_ALG": "RS384",  # RS384 or ES384
    "KEY_ID": "ldn-app-key-1",
    "PUBLIC_BASE_URL": "http://127.0.0.1:8000",  # where browsers reach the app; redirect URI = + /callback
    "SESSION_STORE": "memory",  # "memory" or a redis:// URL
    "SESSION_STORE_TIMEOUT": 2.0,  # seconds: Redis connect/read timeout (an outage is a page, not a hang)
    "SESSION_IDLE_MINUTES": 30,  # a session or launch unused this long ends
    "SESSION_MAX_HOURS": 8,  # a session or launch ends this long after it began, used or not
    "MAX_PENDING_LAUNCHES": 1000,  # launches sent to /authorize and not yet back; over it /launch answers 503
    "TOKEN_ORIGINS": "",  # "iss|origin,...": token endpoint origins allowed besides the issuer's own
    "SECRET_KEY": "",  # random per process when empty (fine for one instance)
    "FRAME_ANCESTORS": "'self'",  # CSP frame-ancestors: the EHR origins that may embed the app
    "WASHOUT_DAYS": 10,
    "FHIR_CONNECT_TIMEOUT": 5.0,
    "FHIR_READ_TIMEOUT": 30.0,
    "FHIR_RETRIES": 3,
    "LOG_LEVEL": "INFO",
    "OPEN_SERVERS": "",  # comma-separated FHIR bases with no authorization (test data only): patient search
    "OPEN_REQUESTER": "",  # open servers: the Practitioner reference signing orders; unset -> signing disabled
    "DEFAULT_ISS": "",  # standalone launch: the FHIR base used when /launch gets no iss (must be allowed)
    "LAUNCH_TTL_SECONDS": 600,  # how long a pending launch (state + PKCE verifier) stays usable
    "TOKEN_REFRESH_MARGIN_SECONDS": 60,  # refresh the access token this long before it expires
    "FHIR_READ_DEADLINE": 20.0,  # seconds for all FHIR reads of one page, retries included; then cannot-determine
    "FHIR_METADATA_TTL": 3600.0,  # seconds discovery and the CapabilityStatement stay cached per issuer (max)
    "FHIR_PAGE_SIZE": 1000,  # _count asked for on every search (servers cap it themselves)
    "FHIR_MAX_ENTRIES": 20_000,  # search entries one patient record may hold; more is cannot-determine
    "FHIR_MAX_PAGE_ENTRIES": 10_000,  # entries one search page may hold; more is cannot-determine
    "FHIR_MAX_WORKERS": 5,  # concurrent searches when reading a patient record
    "FHIR_RETRY_MAX_WAIT": 10.0,  # cap (seconds) on a Retry-After / backoff wait between GET retries
    "CDS_CLIENTS": "",  # CDS Hooks clients (EHRs) allowed to call /cds-services: comma-separated iss|jwks_url
    "MAX_CONTENT_LENGTH": 64 * 1024,  # bytes per request body: a larger form is refused with 413
}

PREFIX = "LDN_"


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """Defaults overridden by LDN_* variables, converted to the default's type."""
    env = os.environ if environ is None else environ
    config: dict[str, object] = dict(DEFAULTS)
    for key, default in DEFAULTS.items():
        raw = env.get(PREFIX + key)
        if raw is None:
            continue
        config[key] = type(default)(raw) if not isinstance(default, str) else raw
    return config
