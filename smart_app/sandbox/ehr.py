"""Sandbox EHR: a SMART App Launch 2.2 authorization server and an authorizing FHIR proxy (dev only).

It behaves like a small real EHR so the app can be launched and tested end to end: an EHR launch
page, /authorize with PKCE (S256 only), /token (public, client_secret_basic and private_key_jwt
clients), an id_token signed with its own RS256 key, refresh tokens, and /fhir/* forwarded to an
upstream FHIR server only for a valid bearer token whose scopes allow the interaction.
State lives in memory behind one lock; nothing here is meant for production.

`create_sandbox_app` wires four small parts that share one `Endpoints`: `Authorizer` (launch page,
/authorize), `Discovery` (smart-configuration, metadata, jwks), `TokenEndpoint` (/token) and
`FhirProxy` (/fhir/*).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, redirect, render_template, request

from . import cds_client

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
CLINICIAN_ID = "sandbox-clinician"
CLINICIAN = {
    "resourceType": "Practitioner",
    "id": CLINICIAN_ID,
    "active": True,
    "name": [{"use": "official", "family": "Sandbox", "given": ["Casey"], "prefix": ["Dr."]}],
}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384")
CLIENT_AUTH_METHODS = ("public", "client_secret_basic", "private_key_jwt")
CODE_LIFETIME = 60
LAUNCH_LIFETIME = 600
REFRESH_LIFETIME = 8 * 3600  # online_access: about one working day
ID_TOKEN_LIFETIME = 300
MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
VERIFIER_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
RESOURCE_TYPE_RE = re.compile(r"[A-Z][A-Za-z]+")
# SMART v1 permissions mapped onto v2 letters; v2 letters must appear in c r u d s order.
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
V2_PERMISSION_RE = re.compile(r"c?r?u?d?s?")
NOT_A_TRANSACTION = "Only transaction or batch Bundles may be sent to the base"
ENTRY_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
METHOD_PERMISSION = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}
SCOPES_SUPPORTED = (
    "openid", "fhirUser", "launch", "launch/patient", "online_access",
    "patient/*.rs", "patient/*.cruds", "patient/*.read", "patient/*.write", "patient/*.*",
    "user/*.rs", "user/*.cruds", "user/*.read", "user/*.write", "user/*.*",
)
CAPABILITIES = (
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
    "client-confidential-asymmetric", "context-ehr-patient", "context-standalone-patient", "context-banner",
    "sso-openid-connect", "permission-patient", "permission-user", "permission-v1", "permission-v2",
)


# ---------------------------------------------------------------- registry and state


@dataclass(frozen=True)
class Client:
    """A registered app."""

    client_id: str
    redirect_uris: tuple[str, ...]
    scopes: frozenset[str]
    auth: str = "public"
    client_secret: str | None = None
    jwks: dict | None = None
    jwks_url: str | None = None

    @classmethod
    def from_dict(cls, entry: dict) -> Client:
        client = cls(entry["client_id"], tuple(entry["redirect_uris"]), frozenset(entry["scopes"].split()),
                     entry.get("auth", "public"), entry.get("client_secret"), entry.get("jwks"),
                     entry.get("jwks_url"))
        problems = [
            "" if client.auth in CLIENT_AUTH_METHODS else f"auth must be one of {CLIENT_AUTH_METHODS}",
            "no redirect_uris" if not client.redirect_uris else "",
            "client_secret_basic needs client_secret"
            if client.auth == "client_secret_basic" and not client.client_secret else "",
            "private_key_jwt needs jwks or jwks_url"
            if client.auth == "private_key_jwt" and not (client.jwks or client.jwks_url) else "",
        ]
        if any(problems):
            raise ValueError(f"client {client.client_id}: " + "; ".join(p for p in problems if p))
        return client


@dataclass
class Context:
    """What a grant is about: scopes and launch context, carried from /authorize to the tokens."""

    client_id: str
    scopes: tuple[str, ...]
    patient: str | None
    need_patient_banner: bool
    nonce: str | None = None


@dataclass
class AuthCode:
    context: Context
    redirect_uri: str
    code_challenge: str
    expires_at: float
    used: bool = False
    issued: list[str] = field(default_factory=list)  # tokens to revoke if the code is replayed


@dataclass
class Grant:
    """An access token or a refresh token."""

    context: Context
    expires_at: float


@dataclass
class Launch:
    patient: str
    need_patient_banner: bool
    expires_at: float


class OAuthError(Exception):
    """An OAuth error answered as JSON by /token (RFC 6749 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class RedirectError(Exception):
    """An /authorize error sent back to the client's redirect_uri (RFC 6749 4.1.2.1)."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error, self.description = error, description


class ProxyError(Exception):
    """A /fhir request we answer ourselves with an OperationOutcome."""

    def __init__(self, status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None):
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics, self.headers = status, code, diagnostics, headers or {}


class SandboxState:
    """Launches, codes, tokens and seen assertion ids, in memory, behind one lock."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.lock = threading.Lock()
        self.launches: dict[str, Launch] = {}
        self.codes: dict[str, AuthCode] = {}
        self.access_tokens: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.assertion_ids: dict[str, float] = {}

    def new_launch(self, patient: str, need_patient_banner: bool) -> str:
        launch_id = secrets.token_urlsafe(16)
        with self.lock:
            self.launches[launch_id] = Launch(patient, need_patient_banner, self.clock() + LAUNCH_LIFETIME)
        return launch_id

    def launch(self, launch_id: str) -> Launch | None:
        with self.lock:
            found = self.launches.get(launch_id)
            return found if found and found.expires_at > self.clock() else None

    def new_code(self, context: Context, redirect_uri: str, code_challenge: str) -> str:
        code = secrets.token_urlsafe(32)
        with self.lock:
            self.codes[code] = AuthCode(context, redirect_uri, code_challenge, self.clock() + CODE_LIFETIME)
        return code

    def redeem_code(self, code: str) -> AuthCode:
        """Marks the code used. A replayed code revokes every token it produced."""
        with self.lock:
            found = self.codes.get(code)
            if found is None or found.expires_at <= self.clock():
                raise OAuthError("invalid_grant", "unknown or expired authorization code")
            if found.used:
                for token in found.issued:
                    self.access_tokens.pop(token, None)
                    self.refresh_tokens.pop(token, None)
                raise OAuthError("invalid_grant", "authorization code already used")
            found.used = True
            return found

    def issue(self, context: Context, access_lifetime: int, refresh: bool,
              code: AuthCode | None = None) -> tuple[str, str | None]:
        access = secrets.token_urlsafe(32)
        refresh_token = secrets.token_urlsafe(32) if refresh else None
        now = self.clock()
        with self.lock:
            self.access_tokens[access] = Grant(context, now + access_lifetime)
            if refresh_token:
                self.refresh_tokens[refresh_token] = Grant(context, now + REFRESH_LIFETIME)
            if code is not None:
                code.issued.extend(t for t in (access, refresh_token) if t)
        return access, refresh_token

    def access_grant(self, token: str) -> Grant | None:
        with self.lock:
            found = self.access_tokens.get(token)
            return found if found and found.expires_at > self.clock() else None

    def refresh_grant(self, token: str) -> Grant | None:
        with self.lock:
            found = self.refresh_tokens.get(token)
            return found if found and found.expires_at > self.clock() else None

    def first_use_of_assertion(self, client_id: str, jti: str, expires_at: float) -> bool:
        key = f"{client_id} {jti}"
        with self.lock:
            now = self.clock()
            self.assertion_ids = {k: exp for k, exp in self.assertion_ids.items() if exp > now}
            if key in self.assertion_ids:
                return False
            self.assertion_ids[key] = max(expires_at, now + 1)
            return True


# ---------------------------------------------------------------- scopes


def _parse_resource_scope(scope: str) -> tuple[str, str, str] | None:
    """`patient/Condition.rs` -> ("patient", "Condition", "rs"); None for other scopes."""
    level, slash, rest = scope.partition("/")
    rtype, dot, permission = rest.partition(".")
    if not slash or not dot or level not in ("patient", "user") or "?" in permission:
        return None  # query-restricted v2 scopes are not enforceable here: they grant nothing
    if rtype != "*" and not RESOURCE_TYPE_RE.fullmatch(rtype):
        return None
    letters = V1_PERMISSIONS.get(permission)
    if letters is None and permission and V2_PERMISSION_RE.fullmatch(permission):
        letters = permission
    return (level, rtype, letters) if letters else None


def scope_permits(scopes: Iterable[str], rtype: str, permission: str) -> bool:
    """True if one granted scope covers every letter of `permission` on `rtype`."""
    for scope in scopes:
        parsed = _parse_resource_scope(scope)
        if parsed and parsed[1] in ("*", rtype) and all(ch in parsed[2] for ch in permission):
            return True
    return False


def required_permissions(method: str, path: str, body: bytes, query: Mapping[str, str] | None = None
                         ) -> list[tuple[str, str]]:
    """(resource type, permission letters) pairs a /fhir request needs; "*" type = any type."""
    segments = [s for s in path.split("/") if s]
    if not segments:
        if method == "GET" and (query or {}).get("_getpages"):
            return [("*", "s")]  # HAPI's opaque paging: the next page of an earlier search, at the base
        if method != "POST":
            raise ProxyError(400, "not-supported", NOT_A_TRANSACTION)
        return _bundle_permissions(body)
    rtype = segments[0]
    if rtype.startswith("$") or rtype == "_history":
        return [("*", "r" if method == "GET" else "c")]
    if not RESOURCE_TYPE_RE.fullmatch(rtype):
        raise ProxyError(404, "not-supported", f"Unknown resource type '{rtype}'")
    if method in METHOD_PERMISSION:
        if method == "POST" and len(segments) == 2 and segments[1] == "_search":
            return [(rtype, "s")]
        if method == "POST" and segments[-1].startswith("$"):
            return [(rtype, "r")] if segments[-1] in ("$validate", "$everything") else [(rtype, "c")]
        return [(rtype, METHOD_PERMISSION[method])]
    if len(segments) == 1:
        return [(rtype, "s")]
    if len(segments) == 3 and RESOURCE_TYPE_RE.fullmatch(segments[2]):
        return [(rtype, "r"), (segments[2], "s")]  # compartment search: Patient/1/Condition
    return [(rtype, "r")]


def _bundle_permissions(body: bytes) -> list[tuple[str, str]]:
    try:
        bundle = json.loads(body or b"null")
    except ValueError as exc:
        raise ProxyError(400, "structure", f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" \
            or bundle.get("type") not in ("transaction", "batch"):
        raise ProxyError(400, "invalid", NOT_A_TRANSACTION)
    needed = []
    for index, entry in enumerate(bundle.get("entry") or []):
        req = entry.get("request") if isinstance(entry, dict) else None
        req = req if isinstance(req, dict) else {}
        method = str(req.get("method", "")).upper()
        url = urlsplit(str(req.get("url", "")))
        path = url.path.split("/fhir/", 1)[-1] if url.scheme else url.path
        if method not in ENTRY_METHODS or not path:
            raise ProxyError(400, "required", f"Entry {index}: request.method and request.url are required")
        needed += required_permissions(method, path, b"") if path.strip("/") else [("*", "cruds")]
    return needed


# ---------------------------------------------------------------- helpers


def _pkce_s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_query(url: str, params: Mapping[str, str | None]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _operation_outcome(code: str, diagnostics: str) -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]}


def _patient_name(patient: dict) -> str:
    for name in patient.get("name") or []:
        if name.get("text"):
            return name["text"]
        parts = [*name.get("given", []), name.get("family", "")]
        if any(parts):
            return " ".join(p for p in parts if p)
    return "(no name)"


class Upstream:
    """The FHIR server behind the proxy, and the base URL it writes into its links (`link_base`).

    When that is not the public base (a server we did not start), the proxy swaps one for the other
    in both directions, so `next` links, fullUrls and Locations stay on the proxy."""

    def __init__(self, base: str, public_base: str, timeout: tuple[float, float], link_base: str | None = None):
        self.base, self.public_base, self.timeout = base.rstrip("/"), public_base.rstrip("/"), timeout
        self.link_base = (link_base or base).rstrip("/")

    def to_public(self, text: bytes) -> bytes:
        """A response body or header from the server, with its own base URL replaced by the public one."""
        return text.replace(self.link_base.encode(), self.public_base.encode())

    def to_upstream(self, text: bytes) -> bytes:
        """A request body for the server, with the public base URL replaced by the server's own."""
        return text.replace(self.public_base.encode(), self.link_base.encode())

    def get(self, path_or_url: str) -> requests.Response:
        url = path_or_url
        if url.startswith(self.public_base):
            url = self.base + url[len(self.public_base):]
        elif not url.startswith(("http://", "https://")):
            url = f"{self.base}/{url.lstrip('/')}"
        return requests.get(url, headers={"Accept": FHIR_JSON}, timeout=self.timeout)

    def patients(self, limit: int = 500) -> list[dict]:
        """Every Patient (up to `limit`), following `next` links."""
        found: list[dict] = []
        url: str | None = "Patient?_count=100&_sort=family"
        while url and len(found) < limit:
            response = self.get(url)
            response.raise_for_status()
            bundle = response.json()
            found += [e["resource"] for e in bundle.get("entry", [])
                      if e.get("search", {}).get("mode") != "outcome"]
            url = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"),
                       None)
        return [{"id": p["id"], "name": _patient_name(p), "birth_date": p.get("birthDate", "")}
                for p in found[:limit]]

    def exists(self, rtype: str, rid: str) -> bool:
        if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", rid):
            return False
        return self.get(f"{rtype}/{rid}").status_code == 200


# ---------------------------------------------------------------- the app


@dataclass(frozen=True)
class Endpoints:
    """Where the sandbox EHR is reached, and what every part of it shares."""

    public: str  # the public base URL (browsers and the app)
    registry: dict[str, Client]
    state: SandboxState
    upstream: Upstream
    upstream_timeout: tuple[float, float]
    clock: Callable[[], float]

    @property
    def issuer(self) -> str:
        return f"{self.public}/fhir"

    @property
    def token_endpoint(self) -> str:
        return f"{self.public}/token"


class Discovery:
    """/fhir/.well-known/smart-configuration, /fhir/metadata (SMART security added) and /jwks."""

    def __init__(self, ends: Endpoints, jwk: dict):
        self.ends, self.jwk = ends, jwk

    def register(self, app: Flask) -> None:
        app.add_url_rule("/fhir/.well-known/smart-configuration", view_func=self.smart_configuration)
        app.add_url_rule("/fhir/metadata", view_func=self.metadata)
        app.add_url_rule("/jwks", view_func=self.jwks)

    def smart_configuration(self):
        public = self.ends.public
        return jsonify({
            "issuer": self.ends.issuer,
            "jwks_uri": f"{public}/jwks",
            "authorization_endpoint": f"{public}/authorize",
            "token_endpoint": self.ends.token_endpoint,
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": list(SCOPES_SUPPORTED),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": list(CAPABILITIES),
        })

    def metadata(self):
        try:
            response = self.ends.upstream.get("metadata")
            response.raise_for_status()
            capability = response.json()
        except (requests.RequestException, ValueError) as exc:
            log.warning("upstream metadata failed: %s", exc)
            return _outcome_response(502, "transient", "The FHIR server behind the sandbox did not answer")
        rest = (capability.get("rest") or [{}])[0]
        rest["security"] = {
            "cors": True,
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                     "code": "SMART-on-FHIR"}]}],
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "authorize", "valueUri": f"{self.ends.public}/authorize"},
                              {"url": "token", "valueUri": self.ends.token_endpoint}],
            }],
        }
        capability["rest"] = [rest, *(capability.get("rest") or [])[1:]]
        return Response(json.dumps(capability), content_type=f"{FHIR_JSON}; charset=utf-8")

    def jwks(self):
        return jsonify({"keys": [self.jwk]})


class Authorizer:
    """The EHR launch page (/, POST /launch) and /authorize: PKCE S256, aud, scopes, launch context."""

    def __init__(self, ends: Endpoints, app_launch_url: str):
        self.ends, self.app_launch_url = ends, app_launch_url

    def register(self, app: Flask) -> None:
        app.add_url_rule("/", view_func=self.launch_page)
        app.add_url_rule("/launch", view_func=self.ehr_launch, methods=["POST"])
        app.add_url_rule("/authorize", view_func=self.authorize, methods=["GET", "POST"])

    def launch_page(self):
        banner = request.args.get("need_patient_banner", "true") != "false"
        standalone = _with_query(self.app_launch_url, {"iss": self.ends.issuer})
        return render_template("launch.html", patients=self.ends.upstream.patients(), banner=banner,
                               standalone_url=standalone, issuer=self.ends.issuer)

    def ehr_launch(self):
        patient = request.form.get("patient", "")
        if not self.ends.upstream.exists("Patient", patient):
            return render_template("error.html", message="No such patient on the sandbox FHIR server."), 404
        launch_id = self.ends.state.new_launch(patient, request.form.get("need_patient_banner", "true") != "false")
        log.info("EHR launch for Patient/%s", patient)
        return redirect(_with_query(self.app_launch_url, {"iss": self.ends.issuer, "launch": launch_id}), code=303)

    def authorize(self):
        params = request.values
        client = self.ends.registry.get(params.get("client_id", ""))
        if client is None:
            return _error_page("Unknown client_id: this app is not registered with the sandbox EHR.")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return _error_page("The redirect_uri is not registered for this app.")
        try:
            context = self._context(client, params)
        except RedirectError as exc:
            log.info("authorize refused for client %s: %s", client.client_id, exc.error)
            return redirect(_with_query(redirect_uri, {"error": exc.error, "state": params.get("state"),
                                                       "error_description": exc.description}))
        if context is None:  # standalone launch without a chosen patient yet
            return render_template("pick_patient.html", patients=self.ends.upstream.patients(),
                                   params=_authorize_params(params), client_id=client.client_id)
        code = self.ends.state.new_code(context, redirect_uri, params["code_challenge"])
        log.info("authorization code issued to %s (patient %s)", client.client_id, context.patient)
        return redirect(_with_query(redirect_uri, {"code": code, "state": params["state"]}))

    def _context(self, client: Client, params) -> Context | None:
        _check_authorize_request(params, self.ends.issuer)
        requested = params.get("scope", "").split()
        granted = tuple(s for s in dict.fromkeys(requested) if s in client.scopes)
        if not granted:
            raise RedirectError("invalid_scope", "none of the requested scopes is allowed for this client")
        banner = True
        if params.get("launch"):
            launch = self.ends.state.launch(params["launch"])
            if launch is None:
                raise RedirectError("invalid_request", "unknown or expired launch")
            if "launch" not in granted:
                raise RedirectError("invalid_scope", "an EHR launch needs the launch scope")
            patient, banner = launch.patient, launch.need_patient_banner
        elif "launch/patient" in granted:
            patient = params.get("patient")
            if not patient:
                return None
            if not self.ends.upstream.exists("Patient", patient):
                raise RedirectError("invalid_request", "the chosen patient does not exist")
        else:
            patient = None
        return Context(client.client_id, granted, patient, banner, params.get("nonce"))


def _check_authorize_request(params, issuer: str) -> None:
    """response_type code, a state, PKCE S256 and aud = our issuer; else RedirectError."""
    if params.get("response_type") != "code":
        raise RedirectError("unsupported_response_type", "response_type must be code")
    if not params.get("state"):
        raise RedirectError("invalid_request", "state is required")
    if not params.get("code_challenge"):
        raise RedirectError("invalid_request", "PKCE is required: send code_challenge")
    if params.get("code_challenge_method") != "S256":
        raise RedirectError("invalid_request", "code_challenge_method must be S256")
    if params.get("aud", "").rstrip("/") != issuer:
        raise RedirectError("invalid_request", f"aud must be {issuer}")


class TokenEndpoint:
    """POST /token: client authentication (public, client_secret_basic, private_key_jwt), the code
    exchange with PKCE, refresh, and the id_token signed with the sandbox's RS256 key."""

    def __init__(self, ends: Endpoints, signing_key: rsa.RSAPrivateKey, kid: str, access_token_lifetime: int):
        self.ends, self.signing_key, self.kid = ends, signing_key, kid
        self.access_token_lifetime = access_token_lifetime

    def register(self, app: Flask) -> None:
        app.add_url_rule("/token", view_func=self.token, methods=["POST"])

    def token(self):
        try:
            client = self._authenticate_client()
            grant_type = request.form.get("grant_type")
            if grant_type == "authorization_code":
                body = self._exchange_code(client)
            elif grant_type == "refresh_token":
                body = self._refresh(client)
            else:
                raise OAuthError("unsupported_grant_type",
                                 "grant_type must be authorization_code or refresh_token")
        except OAuthError as exc:
            log.info("token request refused: %s (%s)", exc.error, exc.description)
            response = jsonify({"error": exc.error, "error_description": exc.description})
            response.status_code = exc.status
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="sandbox-ehr"'
        else:
            response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    def _authenticate_client(self) -> Client:
        form = request.form
        if form.get("client_assertion") or form.get("client_assertion_type"):
            return self._assertion_client(form)
        if request.headers.get("Authorization", "").lower().startswith("basic "):
            return self._basic_client(request.headers["Authorization"][6:], form.get("client_id"))
        client = self.ends.registry.get(form.get("client_id", ""))
        if client is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        if client.auth != "public":
            raise OAuthError("invalid_client", f"this client must authenticate with {client.auth}", 401)
        return client

    def _basic_client(self, credentials: str, form_client_id: str | None) -> Client:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
        client_id, _, secret = (unquote(part) for part in decoded.partition(":"))  # RFC 6749 2.3.1
        client = self.ends.registry.get(client_id)
        if client is None or client.auth != "client_secret_basic" or not hmac.compare_digest(
                secret.encode(), (client.client_secret or "").encode()):
            raise OAuthError("invalid_client", "client authentication failed", 401)
        if form_client_id and form_client_id != client_id:
            raise OAuthError("invalid_client", "client_id does not match the credentials", 401)
        return client

    def _assertion_client(self, form) -> Client:
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            raise OAuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}", 401)
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", "client_assertion is not a JWT", 401) from exc
        client = self.ends.registry.get(str(unverified.get("iss", "")))
        if client is None or client.auth != "private_key_jwt":
            raise OAuthError("invalid_client", "unknown client or not a private_key_jwt client", 401)
        if header.get("alg") not in ASSERTION_ALGS:
            raise OAuthError("invalid_client", "client_assertion must be signed with RS384 or ES384", 401)
        key = self._client_key(client, header)
        try:
            claims = jwt.decode(assertion, key, algorithms=[header["alg"]], audience=self.ends.token_endpoint,
                                issuer=client.client_id,
                                options={"require": ["iss", "sub", "aud", "exp", "jti"]})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", f"client_assertion rejected: {exc}", 401) from exc
        if claims["sub"] != client.client_id or form.get("client_id", client.client_id) != client.client_id:
            raise OAuthError("invalid_client", "client_assertion sub must equal iss (the client_id)", 401)
        if claims["exp"] > self.ends.clock() + MAX_ASSERTION_LIFETIME + 60:
            raise OAuthError("invalid_client", "client_assertion exp is more than five minutes ahead", 401)
        if not self.ends.state.first_use_of_assertion(client.client_id, str(claims["jti"]), float(claims["exp"])):
            raise OAuthError("invalid_client", "client_assertion jti was already used", 401)
        return client

    def _client_key(self, client: Client, header: dict):
        if client.jwks is not None or client.jwks_url is None:
            keys = (client.jwks or {}).get("keys", [])
        else:
            try:
                response = requests.get(client.jwks_url, timeout=self.ends.upstream_timeout)
                response.raise_for_status()
                keys = response.json().get("keys", [])
            except (requests.RequestException, ValueError) as exc:
                raise OAuthError("invalid_client", "the client's jwks_url could not be fetched", 401) from exc
        candidates = [k for k in keys if k.get("kid") == header.get("kid")] if header.get("kid") else keys
        candidates = [k for k in candidates if k.get("alg") in (None, header["alg"])]
        if not candidates:
            raise OAuthError("invalid_client", "no registered key matches the client_assertion kid/alg", 401)
        try:
            return jwt.PyJWK(candidates[0], header["alg"]).key
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", "the registered key is unusable", 401) from exc

    def _exchange_code(self, client: Client) -> dict:
        form = request.form
        verifier = form.get("code_verifier", "")
        if not form.get("code"):
            raise OAuthError("invalid_request", "code is required")
        if not VERIFIER_RE.fullmatch(verifier):
            raise OAuthError("invalid_request", "code_verifier must be 43-128 unreserved characters")
        code = self.ends.state.redeem_code(form["code"])
        if code.context.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if not hmac.compare_digest(_pkce_s256(verifier), code.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return self._token_response(code.context, code)

    def _refresh(self, client: Client) -> dict:
        grant = self.ends.state.refresh_grant(request.form.get("refresh_token", ""))
        if grant is None or grant.context.client_id != client.client_id:
            raise OAuthError("invalid_grant", "unknown or expired refresh token")
        context = grant.context
        if request.form.get("scope"):
            narrowed = tuple(request.form["scope"].split())
            if not set(narrowed) <= set(context.scopes):
                raise OAuthError("invalid_scope", "a refresh cannot add scopes")
            context = Context(context.client_id, narrowed, context.patient, context.need_patient_banner)
        access, _ = self.ends.state.issue(context, self.access_token_lifetime, refresh=False)
        log.info("access token refreshed for %s", client.client_id)
        return {**self._context_fields(context, access), "refresh_token": request.form["refresh_token"]}

    def _token_response(self, context: Context, code: AuthCode) -> dict:
        refresh = bool({"online_access", "offline_access"} & set(context.scopes))
        access, refresh_token = self.ends.state.issue(context, self.access_token_lifetime, refresh, code)
        body = self._context_fields(context, access)
        if refresh_token:
            body["refresh_token"] = refresh_token
        if {"openid", "fhirUser"} <= set(context.scopes):
            body["id_token"] = self._id_token(context)
        log.info("tokens issued to %s (scopes: %s)", context.client_id, " ".join(context.scopes))
        return body

    def _context_fields(self, context: Context, access: str) -> dict:
        body = {"access_token": access, "token_type": "Bearer", "expires_in": self.access_token_lifetime,
                "scope": " ".join(context.scopes), "need_patient_banner": context.need_patient_banner}
        if context.patient:
            body["patient"] = context.patient
        return body

    def _id_token(self, context: Context) -> str:
        now = int(self.ends.clock())
        issuer = self.ends.issuer
        claims = {"iss": issuer, "aud": context.client_id, "sub": CLINICIAN_ID, "iat": now,
                  "exp": now + ID_TOKEN_LIFETIME, "fhirUser": f"{issuer}/Practitioner/{CLINICIAN_ID}"}
        if context.nonce:
            claims["nonce"] = context.nonce
        return jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": self.kid})


class FhirProxy:
    """/fhir/*: forwarded upstream only for a valid bearer token whose scopes allow the interaction."""

    def __init__(self, ends: Endpoints):
        self.ends = ends

    def register(self, app: Flask) -> None:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        app.add_url_rule("/fhir", defaults={"path": ""}, view_func=self.fhir_proxy, methods=methods)
        app.add_url_rule("/fhir/<path:path>", view_func=self.fhir_proxy, methods=methods)

    def fhir_proxy(self, path: str):
        try:
            grant = self._bearer_grant()
            method = "GET" if request.method == "HEAD" else request.method
            for rtype, permission in required_permissions(method, path, request.get_data(), request.args):
                if not scope_permits(grant.context.scopes, rtype, permission):
                    raise ProxyError(403, "forbidden", f"The granted scopes do not allow '{permission}' on "
                                                       f"{'any resource type' if rtype == '*' else rtype}")
            return self._forward(path)
        except ProxyError as exc:
            return _outcome_response(exc.status, exc.code, exc.diagnostics, exc.headers)

    def _bearer_grant(self) -> Grant:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="sandbox-ehr", error="invalid_token"'}
        if scheme.lower() != "bearer" or not token:
            raise ProxyError(401, "login", "A bearer access token is required",
                             {"WWW-Authenticate": 'Bearer realm="sandbox-ehr"'})
        grant = self.ends.state.access_grant(token.strip())
        if grant is None:
            raise ProxyError(401, "login", "The access token is unknown or expired", challenge)
        return grant

    def _forward(self, path: str) -> Response:
        upstream = self.ends.upstream
        url = f"{upstream.base}/{path}" if path else upstream.base
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        headers = {name: value for name in FORWARDED_REQUEST_HEADERS
                   if (value := request.headers.get(name)) is not None}
        try:
            answer = requests.request(request.method, url, data=upstream.to_upstream(request.get_data()),
                                      headers=headers, timeout=self.ends.upstream_timeout, allow_redirects=False)
        except requests.Timeout as exc:
            raise ProxyError(504, "timeout", "The FHIR server behind the sandbox timed out") from exc
        except requests.RequestException as exc:
            raise ProxyError(502, "transient", "The FHIR server behind the sandbox did not answer") from exc
        response = Response(upstream.to_public(answer.content), status=answer.status_code)
        for name in FORWARDED_RESPONSE_HEADERS:
            if name in answer.headers:
                response.headers[name] = upstream.to_public(answer.headers[name].encode("latin-1")).decode("latin-1")
        return response


def create_sandbox_app(fhir_upstream: str, public_base_url: str, clients: list[dict], app_launch_url: str, *,
                       access_token_lifetime: int = 300, upstream_timeout: tuple[float, float] = (5.0, 30.0),
                       upstream_link_base: str | None = None, clock: Callable[[], float] = time.time,
                       cds_services_url: str | None = None) -> Flask:
    """The sandbox EHR as a Flask app. `public_base_url` is where browsers and the app reach it.

    `upstream_link_base`: the base the FHIR server writes into its links, when not `fhir_upstream`.
    With `cds_services_url` it is also a CDS Hooks client (order buttons; see cds_client.py)."""
    public = public_base_url.rstrip("/")
    state = SandboxState(clock)
    ends = Endpoints(public, {c.client_id: c for c in map(Client.from_dict, clients)}, state,
                     Upstream(fhir_upstream, f"{public}/fhir", upstream_timeout, upstream_link_base),
                     upstream_timeout, clock)
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = secrets.token_hex(8)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key())),
           "kid": kid, "alg": "RS256", "use": "sig"}

    app = Flask(__name__)
    app.config.update(SANDBOX_ISSUER=ends.issuer, SANDBOX_STATE=state, SANDBOX_CLIENTS=ends.registry)
    app.register_error_handler(requests.RequestException, _upstream_unavailable)
    for part in (Authorizer(ends, app_launch_url), Discovery(ends, jwk),
                 TokenEndpoint(ends, signing_key, kid, access_token_lifetime), FhirProxy(ends)):
        part.register(app)
    if cds_services_url:
        cds_client.register(app, public, cds_services_url, lambda patient: state.issue(
            Context(cds_client.CDS_CLIENT_ID, cds_client.CDS_SCOPES, patient, False), 300, refresh=False)[0],
            lambda patient: ends.upstream.exists("Patient", patient), clock)
    return app


def _upstream_unavailable(exc: requests.RequestException):
    log.warning("sandbox FHIR server unavailable: %s", type(exc).__name__)
    message = "The sandbox FHIR server did not answer. Is it running?"
    return render_template("error.html", message=message), 502


FORWARDED_REQUEST_HEADERS = ("Accept", "Content-Type", "If-Match", "If-None-Match", "If-None-Exist",
                             "If-Modified-Since", "Prefer")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Location", "Content-Location", "ETag", "Last-Modified")
_AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
                     "code_challenge_method", "nonce")


def _authorize_params(params) -> dict[str, str]:
    """The authorization request to carry through the patient picker as hidden fields."""
    return {name: params[name] for name in _AUTHORIZE_PARAMS if params.get(name)}


def _error_page(message: str) -> tuple[str, int]:
    return render_template("error.html", message=message), 400


def _outcome_response(status: int, code: str, diagnostics: str,
                      headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(_operation_outcome(code, diagnostics)), status=status,
                        content_type=f"{FHIR_JSON}; charset=utf-8")
    response.headers.update(headers or {})
    return response
