"""SMART discovery: well-known first, CapabilityStatement second, insecure servers refused."""

from __future__ import annotations

import pytest
import requests

from smart_app.errors import LaunchError
from smart_app.smart.discovery import SmartConfiguration, discover, is_loopback_host

ISS = "https://ehr.example.org/fhir"
WELL_KNOWN = f"{ISS}/.well-known/smart-configuration"
METADATA = f"{ISS}/metadata"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
TIMEOUT = (3.0, 7.0)


def well_known(**overrides):
    return {"issuer": ISS, "authorization_endpoint": "https://ehr.example.org/authorize",
            "token_endpoint": "https://ehr.example.org/token", "jwks_uri": "https://ehr.example.org/jwks",
            "capabilities": ["launch-ehr", "permission-v2", "client-public"],
            "scopes_supported": ["openid", "fhirUser", "patient/*.rs"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"], **overrides}


def capability_statement(security):
    return {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
            "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server", "security": security}]}


def test_the_well_known_document_is_read_when_present(rsps, http):
    rsps.get(WELL_KNOWN, json=well_known())
    config = discover(ISS, http, TIMEOUT)
    assert config == SmartConfiguration(
        issuer=ISS, authorization_endpoint="https://ehr.example.org/authorize",
        token_endpoint="https://ehr.example.org/token", jwks_uri="https://ehr.example.org/jwks",
        capabilities=("launch-ehr", "permission-v2", "client-public"),
        scopes_supported=("openid", "fhirUser", "patient/*.rs"), code_challenge_methods_supported=("S256",),
        token_endpoint_auth_methods=("private_key_jwt",), source="well-known")
    assert rsps.calls[0].request.req_kwargs["timeout"] == TIMEOUT


def test_a_trailing_slash_on_iss_does_not_double_the_slash(rsps, http):
    rsps.get(WELL_KNOWN, json=well_known())
    assert discover(ISS + "/", http, TIMEOUT).source == "well-known"


def test_the_capability_statement_is_the_fallback_when_well_known_is_missing(rsps, http):
    rsps.get(WELL_KNOWN, status=404)
    rsps.get(METADATA, json=capability_statement({"extension": [{"url": OAUTH_URIS, "extension": [
        {"url": "authorize", "valueUri": "https://ehr.example.org/a"},
        {"url": "token", "valueUri": "https://ehr.example.org/t"}]}]}))
    config = discover(ISS, http, TIMEOUT)
    assert (config.authorization_endpoint, config.token_endpoint, config.source) == \
        ("https://ehr.example.org/a", "https://ehr.example.org/t", "metadata")
    assert config.capabilities == () and config.jwks_uri is None
    assert all(call.request.req_kwargs["timeout"] == TIMEOUT for call in rsps.calls)


def test_the_legacy_flat_oauth_uris_extensions_are_understood(rsps, http):
    rsps.get(WELL_KNOWN, body="<html>not json</html>")
    rsps.get(METADATA, json=capability_statement({"extension": [
        {"url": OAUTH_URIS + "#authorize", "valueUri": "https://ehr.example.org/a"},
        {"url": OAUTH_URIS + "#token", "valueUri": "https://ehr.example.org/t"}]}))
    assert discover(ISS, http, TIMEOUT).token_endpoint == "https://ehr.example.org/t"


def test_a_server_with_neither_source_is_a_launch_error(rsps, http):
    rsps.get(WELL_KNOWN, status=404)
    rsps.get(METADATA, json=capability_statement({"cors": True}))
    with pytest.raises(LaunchError, match="discovery failed"):
        discover(ISS, http, TIMEOUT)


def test_an_unreachable_server_is_a_launch_error(rsps, http):
    rsps.get(WELL_KNOWN, body=requests.ConnectTimeout())
    rsps.get(METADATA, body=requests.ConnectTimeout())
    with pytest.raises(LaunchError):
        discover(ISS, http, TIMEOUT)


@pytest.mark.parametrize("field", ["authorization_endpoint", "token_endpoint", "jwks_uri"])
def test_a_plain_http_endpoint_on_a_remote_host_is_refused_without_fallback(rsps, http, field):
    rsps.get(WELL_KNOWN, json=well_known(**{field: "http://ehr.example.org/x"}))
    with pytest.raises(LaunchError, match="not https"):
        discover(ISS, http, TIMEOUT)


def test_a_plain_http_issuer_on_a_remote_host_is_refused_before_any_request(rsps, http):
    with pytest.raises(LaunchError, match="not https"):
        discover("http://ehr.example.org/fhir", http, TIMEOUT)
    assert len(rsps.calls) == 0


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "127.9.9.9", "localhost:9000", "[::1]:8000"])
def test_plain_http_is_accepted_on_loopback_hosts(rsps, http, host):
    base = f"http://{host}/fhir"
    rsps.get(f"{base}/.well-known/smart-configuration",
             json=well_known(authorization_endpoint=f"http://{host}/a", token_endpoint=f"http://{host}/t",
                             jwks_uri=f"http://{host}/k"))
    assert discover(base, http, TIMEOUT).token_endpoint == f"http://{host}/t"


def test_a_server_that_lists_pkce_methods_without_s256_is_refused(rsps, http):
    rsps.get(WELL_KNOWN, json=well_known(code_challenge_methods_supported=["plain"]))
    with pytest.raises(LaunchError, match="S256"):
        discover(ISS, http, TIMEOUT)


def test_a_server_that_lists_no_pkce_methods_is_accepted_and_we_still_use_s256(rsps, http):
    rsps.get(WELL_KNOWN, json={k: v for k, v in well_known().items() if k != "code_challenge_methods_supported"})
    assert discover(ISS, http, TIMEOUT).code_challenge_methods_supported == ()


def test_a_redirect_from_well_known_is_not_followed(rsps, http):
    rsps.get(WELL_KNOWN, status=302, headers={"Location": "http://evil.example.com/conf"})
    rsps.get(METADATA, status=404)
    with pytest.raises(LaunchError):
        discover(ISS, http, TIMEOUT)


def test_the_configuration_survives_a_round_trip_through_json_friendly_form(rsps, http):
    rsps.get(WELL_KNOWN, json=well_known())
    config = discover(ISS, http, TIMEOUT)
    assert SmartConfiguration.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("127.0.0.1", True), ("127.255.0.1", True), ("::1", True), ("[::1]", True),
    ("128.0.0.1", False), ("localhost.evil.com", False), ("ehr.example.org", False), ("", False), (None, False),
])
def test_only_loopback_hosts_count_as_loopback(host, loopback):
    assert is_loopback_host(host) is loopback
