"""Discovery and the CapabilityStatement are cached once per issuer for the whole app: TTL, Cache-Control, ETag."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from responses import matchers

from smart_app.config import Settings
from smart_app.errors import FhirUnavailable
from smart_app.fhir.documents import DocumentCache
from smart_app.fhir.gateway import GatewayFactory
from smart_app.smart.discovery import discover

BASE = "https://fhir.example.org/r4"
CAPABILITIES = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
                                                                  "interaction": [{"code": "transaction"}]}]}
SMART = {"authorization_endpoint": "https://fhir.example.org/auth", "token_endpoint": "https://fhir.example.org/token",
         "capabilities": ["launch-ehr"], "code_challenge_methods_supported": ["S256"]}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def factory(clock):
    made = GatewayFactory(Settings(fhir_metadata_ttl=600))
    made.documents = DocumentCache(ttl=600, clock=clock)
    return made


def a_request_later(factory):
    """The gateway a new request gets from the app's factory."""
    return factory(Settings(), BASE, lambda: "token")


def test_a_new_gateway_per_request_does_not_refetch_the_capability_statement(rsps, factory):
    rsps.get(f"{BASE}/metadata", json=CAPABILITIES)
    assert all(a_request_later(factory).supports_transaction() for _ in range(20))
    assert len(rsps.calls) == 1


def test_after_the_ttl_a_document_with_an_etag_is_revalidated_and_a_304_keeps_it(rsps, factory, clock):
    rsps.get(f"{BASE}/metadata", json=CAPABILITIES, headers={"ETag": 'W/"7"'})
    rsps.get(f"{BASE}/metadata", status=304, match=[matchers.header_matcher({"If-None-Match": 'W/"7"'})])
    a_request_later(factory).capabilities()
    clock.now += 601
    assert a_request_later(factory).supports_transaction()
    a_request_later(factory).capabilities()
    assert len(rsps.calls) == 2


def test_a_changed_document_replaces_the_cached_one_after_revalidation(rsps, factory, clock):
    rsps.get(f"{BASE}/metadata", json=CAPABILITIES, headers={"ETag": '"1"'})
    rsps.get(f"{BASE}/metadata", json={"resourceType": "CapabilityStatement", "rest": []}, headers={"ETag": '"2"'})
    assert a_request_later(factory).supports_transaction()
    clock.now += 601
    assert not a_request_later(factory).supports_transaction()


def test_cache_control_max_age_shortens_the_ttl_and_no_store_is_never_kept(rsps, factory, clock):
    rsps.get(f"{BASE}/metadata", json=CAPABILITIES, headers={"Cache-Control": "public, max-age=30"})
    rsps.get(f"{BASE}/metadata", json=CAPABILITIES, headers={"Cache-Control": "no-store"})
    rsps.get(f"{BASE}/metadata", json=CAPABILITIES)
    a_request_later(factory).capabilities()
    clock.now += 20
    a_request_later(factory).capabilities()  # still fresh: max-age 30
    clock.now += 11
    a_request_later(factory).capabilities()  # stale: fetched again, answered no-store
    a_request_later(factory).capabilities()  # so fetched again
    assert len(rsps.calls) == 3


def test_a_failed_fetch_is_not_cached(rsps, factory):
    rsps.get(f"{BASE}/metadata", status=500)
    rsps.get(f"{BASE}/metadata", json=CAPABILITIES)
    with pytest.raises(FhirUnavailable):
        factory(Settings(fhir_retries=0), BASE, None).capabilities()
    assert a_request_later(factory).supports_transaction()


def test_a_readiness_probe_revalidates_even_a_fresh_document(rsps, factory):
    rsps.get(f"{BASE}/metadata", json=CAPABILITIES)
    rsps.get(f"{BASE}/metadata", status=503)
    a_request_later(factory).capabilities()
    with pytest.raises(FhirUnavailable):
        factory(Settings(fhir_retries=0), BASE, None).capabilities(refresh=True)


def test_concurrent_first_requests_fetch_the_document_once():
    fetches = []

    def fetch(_headers):
        fetches.append(1)
        time.sleep(0.05)
        response = requests.Response()
        response.status_code = 200
        return response

    cache = DocumentCache()
    threads = [threading.Thread(target=cache.get, args=(f"{BASE}/metadata", fetch, lambda r: {"ok": True}))
               for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fetches) == 1


def test_discovery_is_fetched_once_per_issuer_and_its_metadata_fallback_is_shared_with_the_gateway(
        rsps, factory, http):
    rsps.get(f"{BASE}/.well-known/smart-configuration", json=SMART)
    other = "https://other.example.org/fhir"
    rsps.get(f"{other}/.well-known/smart-configuration", status=404)
    rsps.get(f"{other}/metadata", json={**CAPABILITIES, "rest": [{"mode": "server", "security": {"extension": [{
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [{"url": "authorize", "valueUri": "https://other.example.org/auth"},
                      {"url": "token", "valueUri": "https://other.example.org/token"}]}]},
        "interaction": [{"code": "transaction"}]}]})
    for _ in range(5):
        assert discover(BASE, http, 5, factory.documents).token_endpoint == SMART["token_endpoint"]
        assert discover(other, http, 5, factory.documents).source == "metadata"
    assert factory(Settings(), other, None).supports_transaction()
    assert len(rsps.calls) == 3


def test_the_cache_holds_a_bounded_number_of_documents(clock):
    cache = DocumentCache(max_entries=3, clock=clock)
    response = requests.Response()
    response.status_code = 200
    for n in range(10):
        cache.get(f"{BASE}/{n}", lambda _h: response, lambda r: {"n": 1})
    assert len(cache._entries) == 3
