"""SMART endpoint discovery: `.well-known/smart-configuration` first, CapabilityStatement second.

Where things come from:
- `.well-known/smart-configuration` (SMART App Launch 2.x, the preferred source): fetched and
  read here on `requests` with timeouts - fhirclient 4.4 does not know this document at all.
- `/metadata` fallback (SMART 1.0 servers): fetched here (timeouts), then the `rest.security`
  element is read by fhirclient's own model (`CapabilityStatementRestSecurity`) and its
  `FHIRAuth.from_capability_security`, which understands both the nested `oauth-uris`
  extension and the legacy flat `oauth-uris#authorize` form.
Both documents are kept in the app's per-issuer `DocumentCache` (TTL, Cache-Control, ETag), the
CapabilityStatement under the same key the FHIR gateway uses, so a launch does not refetch them.
Every endpoint must be https (loopback hosts excepted, for the dev sandbox), and a server that
lists `code_challenge_methods_supported` without `S256` is refused: we always use PKCE S256.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from fhirclient.auth import FHIRAuth
from fhirclient.models.capabilitystatement import CapabilityStatementRestSecurity

from smart_app.errors import LaunchError
from smart_app.fhir.documents import DocumentCache

logger = logging.getLogger(__name__)

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
WELL_KNOWN = "/.well-known/smart-configuration"
JSON_ACCEPT = {"Accept": "application/json"}
FHIR_ACCEPT = {"Accept": "application/fhir+json, application/json;q=0.9"}


@dataclass(frozen=True)
class SmartConfiguration:
    """What we learned about an issuer's authorization server."""

    issuer: str | None
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None
    capabilities: tuple[str, ...]
    scopes_supported: tuple[str, ...]
    code_challenge_methods_supported: tuple[str, ...]
    token_endpoint_auth_methods: tuple[str, ...]
    source: str  # "well-known" | "metadata"

    def to_dict(self) -> dict:
        """JSON-friendly form (lists instead of tuples) for the session store."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> SmartConfiguration:
        """Inverse of `to_dict`."""
        fields: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value
                                  for name, value in data.items()}
        return cls(**fields)


class _NotFound(Exception):
    """This discovery source is absent or unreadable; try the next one."""


def is_loopback_host(host: str | None) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_secure_url(url: object, what: str) -> str:
    """Return `url` if it is https (or http on a loopback host); raise LaunchError otherwise."""
    if not isinstance(url, str) or not url:
        raise LaunchError(f"{what} is missing from the server's SMART configuration")
    parts = urlsplit(url)
    if not parts.hostname:
        raise LaunchError(f"{what} is not an absolute URL")
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        return url
    raise LaunchError(f"{what} is not https (only loopback hosts may use http)")


def discover(iss: str, http: requests.Session, timeout: float | tuple[float, float],
             documents: DocumentCache | None = None) -> SmartConfiguration:
    """Find the authorization server of `iss`; raise LaunchError when there is none we can use."""
    base = require_secure_url(iss, "The issuer (iss)").rstrip("/")
    documents = documents or DocumentCache()
    try:
        document = _get_json(documents, http, base + WELL_KNOWN, JSON_ACCEPT, timeout)
        config = _from_well_known(document)
    except _NotFound as why:
        logger.info("no usable smart-configuration (%s); trying the CapabilityStatement", why)
        try:
            config = _from_metadata(_get_json(documents, http, base + "/metadata", FHIR_ACCEPT, timeout))
        except _NotFound as why_not:
            raise LaunchError(f"SMART discovery failed for the issuer: {why_not}") from None
    return _checked(config)


def _get_json(documents: DocumentCache, http: requests.Session, url: str, headers: dict, timeout) -> dict:
    def fetch(extra: dict) -> requests.Response:
        try:
            return http.get(url, headers={**headers, **extra}, timeout=timeout, allow_redirects=False)
        except requests.RequestException as err:
            raise _NotFound(f"request failed ({type(err).__name__})") from None

    return documents.get(url, fetch, _json_document)


def _json_document(response: requests.Response) -> dict:
    """The JSON object of a 200; an empty one for a 404 (kept, so a SMART 1 server is not asked each launch)."""
    if response.status_code == 404:
        return {}
    if response.status_code != 200:
        raise _NotFound(f"HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise _NotFound("not JSON") from None
    if not isinstance(document, dict):
        raise _NotFound("not a JSON object")
    return document


def _strings(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _from_well_known(doc: dict) -> SmartConfiguration:
    if not doc:
        raise _NotFound("no smart-configuration (HTTP 404)")
    if not doc.get("authorization_endpoint") or not doc.get("token_endpoint"):
        raise _NotFound("smart-configuration lacks authorization_endpoint/token_endpoint")
    return SmartConfiguration(
        issuer=doc.get("issuer") if isinstance(doc.get("issuer"), str) else None,
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc.get("jwks_uri") if isinstance(doc.get("jwks_uri"), str) else None,
        capabilities=_strings(doc.get("capabilities")),
        scopes_supported=_strings(doc.get("scopes_supported")),
        code_challenge_methods_supported=_strings(doc.get("code_challenge_methods_supported")),
        token_endpoint_auth_methods=_strings(doc.get("token_endpoint_auth_methods_supported")),
        source="well-known",
    )


def _from_metadata(capability: dict) -> SmartConfiguration:
    if capability.get("resourceType") != "CapabilityStatement":
        raise _NotFound("metadata is not a CapabilityStatement")
    for rest in capability.get("rest") or []:
        security = rest.get("security") if isinstance(rest, dict) else None
        if not isinstance(security, dict):
            continue
        # fhirclient reads the oauth-uris extension; the seeded app_id only keeps its
        # FHIRAuth constructor happy when the extension is absent.
        found: dict = {"app_id": "discovery"}
        FHIRAuth.from_capability_security(CapabilityStatementRestSecurity(security, strict=False), found)
        if found.get("authorize_uri") and found.get("token_uri"):
            return SmartConfiguration(
                issuer=None, authorization_endpoint=found["authorize_uri"], token_endpoint=found["token_uri"],
                jwks_uri=None, capabilities=(), scopes_supported=(), code_challenge_methods_supported=(),
                token_endpoint_auth_methods=(), source="metadata",
            )
    raise _NotFound(f"no {OAUTH_URIS} extension with authorize and token URIs")


def _checked(config: SmartConfiguration) -> SmartConfiguration:
    require_secure_url(config.authorization_endpoint, "The authorization endpoint")
    require_secure_url(config.token_endpoint, "The token endpoint")
    if config.jwks_uri is not None:
        require_secure_url(config.jwks_uri, "The jwks_uri")
    methods = config.code_challenge_methods_supported
    if methods and "S256" not in methods:
        raise LaunchError("The authorization server does not support PKCE S256")
    logger.info("SMART discovery via %s: %d capabilities", config.source, len(config.capabilities))
    return config
