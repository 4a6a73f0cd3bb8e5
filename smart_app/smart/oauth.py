"""SMART App Launch (EHR and standalone): authorize URL, callback, token refresh, our public JWKS.

Framework-light: functions take the app's Settings, request parameters and the browser's
`Launches` (server-side pending and completed launches, see launches.py), and return a URL / context
or raise LaunchError. Each completed launch is its own context under its own id.

Where things come from, and why:
- Written here on `requests` (every call with timeouts, no redirects followed): the authorize
  URL, the code exchange and the refresh. fhirclient 4.4's FHIROAuth2Auth would also do them,
  but it discovers endpoints only from the CapabilityStatement, asks for broad v1 scopes, makes
  its token requests without timeouts, ignores the id_token, uses a uuid4 `state` (122 random
  bits, we want >= 128) and keeps one pending state per client (we allow several tabs).
- PKCE S256, `state` and the OIDC `nonce`: `secrets` + `hashlib` (RFC 7636 section 4; the same construction as
  fhirclient's `_authorize_params`, which cannot be called without a FHIRServer object).
- JWTs (client assertion for private_key_jwt, id_token validation) and JWKs: PyJWT with the
  `cryptography` backend. Never hand-rolled.

Authlib's OAuth2Session (1.9, requests integration), looked at for the token client (issue 13), is
not used: it would remove about 15 lines (`s256` and the token form) and lose or move SMART behaviour:
- `create_authorization_url` derives the S256 challenge from a verifier we give it, but the SMART
  parameters (aud, launch, nonce) and the per-launch server-side state stay ours;
- `fetch_token` / `refresh_token` return a 4xx JSON body that has no `error` member as a token and
  do not check `token_type` is Bearer; their errors (OAuthError, HTTPError, ValueError) would have to
  be mapped back to refused-or-unreachable (`_TokenFailure.network`), which decides whether a
  refresh token is dropped;
- private_key_jwt (`PrivateKeyJWT`) signs with joserfc: a second JOSE library next to PyJWT (which
  the CDS Hooks trust also uses); OAuth2Session validates no id_token (signature with the issuer's
  JWKS, nonce, azp) - only Authlib's web-framework clients do (`parse_id_token`, joserfc again);
- it has no token endpoint origin check (`check_token_endpoint`). Timeouts it has (`default_timeout`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from smart_app.config import Settings
from smart_app.errors import AppError, FhirUnavailable, LaunchError, SessionExpired
from smart_app.fhir.documents import DocumentCache
from smart_app.open_servers import NO_REQUESTER, OPEN_LAUNCH
from smart_app.smart.discovery import SmartConfiguration, discover
from smart_app.smart.launches import Launches
from smart_app.smart.scopes import (
    EHR_LAUNCH,
    STANDALONE_LAUNCH,
    Permissions,
    granted_permissions,
    missing_read,
    missing_write,
    requested_scopes,
)

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PRESCRIBER_TYPES = ("Practitioner", "PractitionerRole")
ID_TOKEN_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ASSERTION_LIFETIME = 240  # seconds; SMART allows at most five minutes
DEFAULT_TOKEN_LIFETIME = 3600  # when the token response has no expires_in
CLOCK_SKEW = 60  # seconds of leeway when checking id_token times


@dataclass(frozen=True)
class SmartContext:
    """What the UI may know about one launch. Deliberately holds no token."""

    launch_id: str
    csrf: str
    iss: str
    patient: str
    encounter: str | None
    fhir_user: str | None
    scope: str
    permissions: Permissions
    missing_write: tuple[str, ...]
    missing_read: tuple[str, ...]  # types the grant does not let us read in full (filters included)
    need_patient_banner: bool
    launch_mode: str
    expires_at: float

    @classmethod
    def from_stored(cls, launch_id: str, stored: Mapping) -> SmartContext:
        permissions = granted_permissions(stored["scope"])
        return cls(
            launch_id=launch_id, csrf=stored["csrf"],
            iss=stored["iss"], patient=stored["patient"], encounter=stored.get("encounter"),
            fhir_user=stored.get("fhir_user"), scope=stored["scope"], permissions=permissions,
            missing_write=tuple(missing_write(permissions)), missing_read=tuple(missing_read(permissions)),
            need_patient_banner=bool(stored.get("need_patient_banner", True)),
            launch_mode=stored["launch_mode"], expires_at=float(stored["expires_at"]),
        )

    @property
    def prescriber(self) -> str | None:
        """The signed-in user when the validated id_token names a Practitioner or PractitionerRole."""
        return self.fhir_user if self.prescriber_problem is None else None

    @property
    def prescriber_problem(self) -> str | None:
        """Why this launch may not sign an order (no known prescriber), or None."""
        if not self.fhir_user:
            if self.launch_mode == OPEN_LAUNCH:
                return NO_REQUESTER
            return ("the EHR did not identify the signed-in user (no validated OpenID Connect id_token "
                    "with fhirUser)")
        kind = _reference_type(self.fhir_user)
        if kind not in PRESCRIBER_TYPES:
            return f"the signed-in user is a {kind or 'user of unknown type'}, not a Practitioner"
        return None


def _reference_type(reference: str) -> str | None:
    """The resource type of a relative or absolute reference (Practitioner/1, https://ehr/fhir/Practitioner/1)."""
    parts = [p for p in reference.split("?")[0].split("/") if p]
    return parts[-2] if len(parts) >= 2 else None


class _TokenFailure(Exception):
    """The token endpoint could not be reached (`network`) or refused the request."""

    def __init__(self, detail: str, *, network: bool):
        super().__init__(detail)
        self.network = network


# --- configuration helpers ---------------------------------------------------------------

def normalize_iss(iss: str) -> str:
    """Trim whitespace and trailing slashes; comparison after this is exact."""
    return iss.strip().rstrip("/")


def redirect_uri(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") + "/callback"


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636 section 4.1-4.2."""
    verifier = secrets.token_urlsafe(64)  # 86 characters of the unreserved set
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


# --- launch ------------------------------------------------------------------------------

def begin_launch(settings: Settings, iss: str | None, launch: str | None,
                 launches: Launches, http: requests.Session, documents: DocumentCache | None = None) -> str:
    """Check the issuer, discover its endpoints, remember a pending launch; return the authorize URL."""
    if not iss:
        raise LaunchError("no iss given and no DEFAULT_ISS configured")
    issuer = normalize_iss(iss)
    if issuer not in settings.allowed_issuers:
        raise LaunchError("iss is not on ALLOWED_ISSUERS",
                          user_message="This EHR is not registered with the app.")
    smart = discover(issuer, http, settings.http_timeout, documents)  # cached per issuer
    check_token_endpoint(settings, issuer, smart.token_endpoint)
    mode = EHR_LAUNCH if launch else STANDALONE_LAUNCH
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    scope = requested_scopes(smart.capabilities, mode)
    launches.add_pending(state, {"iss": issuer, "verifier": verifier, "config": smart.to_dict(), "mode": mode,
                                 "scope": scope, "nonce": nonce})
    params = {"response_type": "code", "client_id": settings.client_id, "redirect_uri": redirect_uri(settings),
              "scope": scope, "state": state, "aud": issuer, "nonce": nonce,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    if launch:
        params["launch"] = launch
    logger.info("SMART %s launch begun for %s", mode, issuer)
    return _with_query(smart.authorization_endpoint, params)


def check_token_endpoint(settings: Settings, iss: str, url: str) -> None:
    """The token endpoint gets our code and secrets: https (http only on loopback), on the issuer's
    origin or an origin TOKEN_ORIGINS configures for it. Otherwise stop before sending anything."""
    parts = urlsplit(url)
    if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)):
        raise LaunchError(f"token endpoint {_printable(url)} is not https",
                          user_message="The EHR's token endpoint is not secure (https), so the app stopped "
                                       "before sending it anything. Ask the EHR administrator to fix it.")
    if _origin(url) not in {_origin(iss), *token_origins(settings, iss)}:
        raise LaunchError(f"token endpoint {_printable(url)} is not on the origin of {iss}",
                          user_message="The EHR's token endpoint is on another site than its FHIR server and "
                                       "is not configured for it (LDN_TOKEN_ORIGINS), so the app stopped before "
                                       "sending it anything.")


def token_origins(settings: Settings, iss: str) -> set[str]:
    """TOKEN_ORIGINS ("iss|origin,iss|origin") entries for `iss`, as origins."""
    return {_origin(origin) for issuer, origin in settings.token_origins if issuer == iss}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return ""
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def _with_query(url: str, params: dict) -> str:
    """Add params to a URL, keeping any query it already has."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- callback ----------------------------------------------------------------------------

def complete_launch(settings: Settings, args: Mapping, launches: Launches,
                    http: requests.Session) -> SmartContext:
    """Check state (and iss), exchange the code (PKCE), verify the id_token (nonce); store the launch
    under a new launch id and return its context."""
    pending = launches.claim_pending(args.get("state"))
    if args.get("error"):
        description = _printable(args.get("error_description") or args.get("error"))
        raise LaunchError(f"authorization error {_printable(args.get('error'))}",
                          user_message=f"The EHR did not authorize the app: {description}")
    if pending is None:
        raise LaunchError("state does not match a pending launch of this session")
    if not args.get("code"):
        raise LaunchError("callback without an authorization code")
    smart = SmartConfiguration.from_dict(pending["config"])
    if args.get("iss") and normalize_iss(args["iss"]) not in {pending["iss"], normalize_iss(smart.issuer or "")}:
        raise LaunchError("callback iss does not match the launch's issuer")
    check_token_endpoint(settings, pending["iss"], smart.token_endpoint)
    form = {"grant_type": "authorization_code", "code": args["code"],
            "redirect_uri": redirect_uri(settings), "code_verifier": pending["verifier"]}
    try:
        token = _token_request(settings, smart.token_endpoint, form, http)
    except _TokenFailure as failure:
        raise LaunchError(f"code exchange failed: {failure}") from None
    claims = _verified_id_token(settings, smart, pending, token["id_token"], http) \
        if token.get("id_token") else {}
    stored = _stored_context(pending, smart, token, claims, settings.clock())
    launch_id = launches.create(stored)
    logger.info("SMART launch completed for %s (patient %s)", stored["iss"], stored["patient"])
    context = current_context(launches, launch_id)
    if context is None:  # stored a moment ago: only a store that dropped it at once gets here
        raise LaunchError("the completed launch could not be read back from the session store")
    return context


def _printable(text: object, limit: int = 200) -> str:
    return "".join(ch for ch in str(text) if ch.isprintable())[:limit]


def _stored_context(pending: Mapping, smart: SmartConfiguration, token: Mapping, claims: Mapping,
                    now: float) -> dict:
    patient = token.get("patient")
    if not isinstance(patient, str) or not patient:
        raise LaunchError("the token response has no patient context",
                          user_message="No patient was selected. Please launch the app from a patient chart.")
    return {
        "iss": pending["iss"], "launch_mode": pending["mode"], "config": smart.to_dict(),
        "access_token": token["access_token"], "refresh_token": token.get("refresh_token"),
        "expires_at": _expires_at(token, now),
        "scope": token.get("scope") or pending["scope"],  # RFC 6749 5.1: absent means as requested
        "patient": patient, "encounter": token.get("encounter"),
        "need_patient_banner": token.get("need_patient_banner", True) is not False,
        "fhir_user": claims.get("fhirUser") or claims.get("profile"), "sub": claims.get("sub"),
    }


def _expires_at(token: Mapping, now: float) -> float:
    try:
        lifetime = float(token.get("expires_in", DEFAULT_TOKEN_LIFETIME))
    except (TypeError, ValueError):
        lifetime = DEFAULT_TOKEN_LIFETIME
    return now + lifetime


def current_context(launches: Launches, launch_id: str | None) -> SmartContext | None:
    """The context (no token) of this browser's launch `launch_id`, or None."""
    stored = launches.get(launch_id)
    return SmartContext.from_stored(launch_id, stored) if stored and launch_id else None


# --- token endpoint ----------------------------------------------------------------------

def _token_request(settings: Settings, token_endpoint: str, form: dict, http: requests.Session) -> dict:
    """POST to a token endpoint already checked by check_token_endpoint."""
    extra, auth = _client_authentication(settings, token_endpoint)
    try:
        response = http.post(token_endpoint, data={**form, **extra}, auth=auth,
                             headers={"Accept": "application/json"}, timeout=settings.http_timeout,
                             allow_redirects=False)
    except requests.RequestException as err:
        raise _TokenFailure(f"token endpoint unreachable ({type(err).__name__})", network=True) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        raise _TokenFailure(f"token endpoint HTTP {response.status_code} {_printable(error or '')}".strip(),
                            network=response.status_code >= 500)
    if not isinstance(body.get("access_token"), str) or str(body.get("token_type", "")).lower() != "bearer":
        raise _TokenFailure("token response without a Bearer access_token", network=False)
    return body


def _client_authentication(settings: Settings, token_endpoint: str) -> tuple[dict, tuple[str, str] | None]:
    """(extra form fields, HTTP basic auth) for public, client_secret_basic or private_key_jwt clients."""
    client_id = settings.client_id
    if settings.private_key_file:
        return {"client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": client_assertion(settings, token_endpoint)}, None
    if settings.client_secret:
        # RFC 6749 2.3.1: form-encode both parts before they go into the Basic header
        return {}, (quote_plus(client_id), quote_plus(settings.client_secret))
    return {"client_id": client_id}, None


def client_assertion(settings: Settings, token_endpoint: str) -> str:
    """A signed JWT authenticating us at `token_endpoint` (SMART asymmetric client auth)."""
    alg = settings.private_key_alg
    key = _private_key(settings.private_key_file, alg)
    now = int(time.time())  # wall time, not the app's clock: the token endpoint checks iat/exp
    claims = {"iss": settings.client_id, "sub": settings.client_id, "aud": token_endpoint,
              "jti": secrets.token_urlsafe(32), "iat": now, "exp": now + CLIENT_ASSERTION_LIFETIME}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": settings.key_id, "typ": "JWT"})


def access_token(settings: Settings, launches: Launches, launch_id: str, http: requests.Session) -> str:
    """A usable access token of launch `launch_id`, refreshed shortly before expiry when we hold a refresh token."""
    stored = launches.get(launch_id)
    if not stored or not stored.get("access_token"):
        raise SessionExpired("no such SMART launch in this browser")
    now = settings.clock()
    margin = settings.token_refresh_margin_seconds
    still_valid = stored["expires_at"] > now
    if stored["expires_at"] - now > margin:
        return stored["access_token"]
    if not stored.get("refresh_token"):
        if still_valid:
            return stored["access_token"]
        raise SessionExpired("access token expired and no refresh token")
    token_endpoint = stored["config"]["token_endpoint"]
    check_token_endpoint(settings, stored["iss"], token_endpoint)
    try:
        token = _token_request(settings, token_endpoint,
                               {"grant_type": "refresh_token", "refresh_token": stored["refresh_token"]}, http)
    except _TokenFailure as failure:
        return _after_failed_refresh(launches, launch_id, stored, failure, still_valid)
    launches.update(launch_id, {**stored, "access_token": token["access_token"],
                                "expires_at": _expires_at(token, settings.clock()),
                                "refresh_token": token.get("refresh_token") or stored["refresh_token"],
                                "scope": token.get("scope") or stored["scope"]})
    logger.info("SMART access token refreshed for %s", stored["iss"])
    return token["access_token"]


def _after_failed_refresh(launches: Launches, launch_id: str, stored: dict, failure: _TokenFailure,
                          still_valid: bool) -> str:
    logger.warning("SMART token refresh failed: %s", failure)
    if not failure.network:  # the refresh token is dead: do not keep trying it
        launches.update(launch_id, {**stored, "refresh_token": None})
    if still_valid:
        return stored["access_token"]
    if failure.network:
        raise FhirUnavailable("token refresh failed: authorization server unreachable")
    raise SessionExpired("token refresh refused")


def token_provider(settings: Settings, launches: Launches, launch_id: str,
                   http: requests.Session) -> Callable[[], str]:
    """A zero-argument callable for FhirGateway(token_provider=...)."""
    return functools.partial(access_token, settings, launches, launch_id, http)


# --- id_token ----------------------------------------------------------------------------

def _verified_id_token(settings: Settings, smart: SmartConfiguration, pending: Mapping, id_token: str,
                       http: requests.Session) -> dict:
    """Claims of an id_token whose signature, issuer, audience, times and nonce check out."""
    if not smart.jwks_uri:
        raise LaunchError("an id_token arrived but the server publishes no jwks_uri to verify it")
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.InvalidTokenError:
        raise LaunchError("id_token is not a JWT") from None
    alg = header.get("alg")
    if alg not in ID_TOKEN_ALGS:
        raise LaunchError(f"id_token algorithm {_printable(alg)} is not accepted")
    key = _signing_key(_fetch_jwks(settings, smart.jwks_uri, http), header.get("kid"))
    issuers = [pending["iss"]] + ([smart.issuer] if smart.issuer else [])
    try:
        claims = jwt.decode(id_token, key, algorithms=[alg], audience=settings.client_id,
                            issuer=issuers, leeway=CLOCK_SKEW,
                            options={"require": ["exp", "iat", "iss", "aud", "sub"]})
    except jwt.InvalidTokenError as err:
        raise LaunchError(f"id_token rejected: {type(err).__name__}") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != settings.client_id:
        raise LaunchError("id_token has several audiences and we are not its azp")
    if not secrets.compare_digest(str(claims.get("nonce", "")), str(pending["nonce"])):
        raise LaunchError("id_token nonce does not match the authorize request's")
    return claims


def _fetch_jwks(settings: Settings, jwks_uri: str, http: requests.Session) -> dict:
    try:
        response = http.get(jwks_uri, headers={"Accept": "application/json"}, timeout=settings.http_timeout,
                            allow_redirects=False)
        response.raise_for_status()
        jwks = response.json()
    except (requests.RequestException, ValueError):
        raise LaunchError("the issuer's JWKS could not be fetched") from None
    if not isinstance(jwks, dict):
        raise LaunchError("the issuer's JWKS is not a JSON object")
    return jwks


def _signing_key(jwks: dict, kid: str | None):
    """The public key for `kid` (or the only key when the token names none)."""
    try:
        keys = [k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.public_key_use in (None, "sig")]
    except (jwt.PyJWKSetError, jwt.InvalidKeyError):
        raise LaunchError("the issuer's JWKS holds no usable key") from None
    matching = [k for k in keys if k.key_id == kid] if kid else keys
    if len(matching) != 1:
        raise LaunchError("no unique JWKS key matches the id_token's kid")
    return matching[0].key


# --- our keys (private_key_jwt) ----------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _private_key(path: str, alg: str):
    try:
        with open(path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise AppError(f"PRIVATE_KEY_FILE unusable ({type(err).__name__})") from None
    if alg == "RS384" and not (isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048):
        raise AppError("RS384 needs an RSA private key of at least 2048 bits")
    if alg == "ES384" and not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"):
        raise AppError("ES384 needs an EC P-384 private key")
    return key


def public_jwks(settings: Settings) -> dict:
    """Our public key as a JWK Set (empty unless PRIVATE_KEY_FILE is configured)."""
    if not settings.private_key_file:
        return {"keys": []}
    alg = settings.private_key_alg
    public = _private_key(settings.private_key_file, alg).public_key()
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS384" else jwt.algorithms.ECAlgorithm
    jwk = algorithm.to_jwk(public, as_dict=True)
    jwk.update({"kid": settings.key_id, "alg": alg, "use": "sig", "key_ops": ["verify"]})
    return {"keys": [jwk]}
