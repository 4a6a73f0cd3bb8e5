"""The one place that talks HTTP to the EHR's FHIR server: reads, paged searches, writes.

Written on `requests` rather than fhirclient's FHIRServer because the latter sets no timeouts,
follows a paging `next` link to whatever host it names (with our token), has no retry policy
and raises bare Exceptions. Here every request has (connect, read) timeouts; writes never
retry; HTTP failures become the typed errors of smart_app.errors in `_checked` only.

Bounded time: all reads of one page share one deadline (LDN_FHIR_READ_DEADLINE). GETs retry on
429/502/503/504 and connection errors with exponential backoff honouring Retry-After, each
attempt's timeouts cut to the time left, and a wait that would pass the deadline ends the read
at once. The concurrent record read returns at the deadline even if a server trickles bytes.
urllib3's `Retry` (re-examined for issue 13 against urllib3 2.8, mounted via HTTPAdapter, GET only)
cannot replace the loop in `_request` without losing behaviour, so it is not used:
- the deadline is per page read, shared by concurrent requests, but `Retry` is fixed per adapter,
  and every gateway shares one adapter (GatewayFactory's connection pool): a per-read `Retry`
  would mean an adapter, and so a pool, per read;
- every attempt gets the timeout the request was sent with: a retry cannot be cut to the time
  left, so a read could end LDN_FHIR_READ_TIMEOUT (30 s) after a 20 s deadline;
- `Retry.sleep_for_retry` sleeps a Retry-After of any length (no cap: `backoff_max` bounds only
  the backoff), where we cap it at LDN_FHIR_RETRY_MAX_WAIT and end the read at once when the
  wait would pass the deadline;
- it cannot see that a sibling read already failed (`_reads_failed`), nor take the injected
  sleep the tests use. Making it do so means overriding `increment`, `sleep` and `is_exhausted`:
  more code than `_request` and `_wait` (34 lines), and on urllib3 internals.

Every search entry is accounted for (`_sort_entry`): a match of the searched type, an include of
a type asked for, an OperationOutcome (warnings kept to show, errors reported), or unreadable
with its reason. Entries are capped per page and per record; past a cap the read fails, naming it.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from smart_app.config import Settings
from smart_app.errors import FhirAuthError, FhirServerError, FhirUnavailable

from .contract import MEDICATION_USE_TYPES, SEARCHED_TYPES, UPDATED_TYPES, parse_reference, reference_of
from .documents import DocumentCache
from .parse import MAX_INGREDIENT_DEPTH, PatientData, ingredient_references, patient_data

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
INCOMPLETE = "The EHR's records could not be read completely, so the assessment cannot be completed."
WRITE_UNCERTAIN = ("The EHR did not answer in time, so the order may or may not have been written. "
                   "Check the chart before trying again.")


@dataclass
class SearchResult:
    """What a search returned, every entry accounted for: matches, includes, unreadable, warnings."""

    matches: list[dict] = field(default_factory=list)
    included: dict[str, dict] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # one line per entry that could not be used
    warnings: list[str] = field(default_factory=list)  # OperationOutcome warnings/information to show


@dataclass
class PatientRecord:
    """Everything the assessment reads for one patient, with every entry that could not be used.

    `problems` (unreadable entries, server errors in `outcome` entries) each make the decision
    cannot-determine; `warnings` (OperationOutcome warnings in the searches) are shown as they are.
    """

    patient: dict
    resources: dict[str, list[dict]]  # raw resources by type still to parse (the gateway parses as pages arrive)
    medications: dict[str, dict]  # reference as written (and "Medication/<id>") -> Medication, for `resources`
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    parsed: tuple[PatientData, ...] = ()  # the compact model, parsed page by page, in SEARCHED_TYPES order

    def patient_data(self, patient_id: str) -> PatientData:
        """The whole record in the compact model: what was parsed as it arrived, then what was left raw."""
        raw = [r for rs in self.resources.values() for r in rs]
        whole = PatientData(patient_id, self.patient)
        for part in (*self.parsed, patient_data(patient_id, self.patient, raw, self.medications)):
            for name in ("medications", "conditions", "problems"):
                getattr(whole, name).extend(getattr(part, name))
        return whole


class _PageParser:
    """One search's matches parsed into the compact model page by page, so each page's raw JSON can go.

    A match whose Medication has not arrived yet (not `_include`d so far) waits, raw, for the
    batched Medication read at the end.
    """

    def __init__(self, patient_id: str, local_reference: Callable[[str, str], str]):
        self.patient_id, self._local = patient_id, local_reference
        self.parts: list[PatientData] = []
        self.waiting: list[dict] = []
        self.count = 0

    def take(self, result: SearchResult) -> None:
        ready, medications = [], {}
        for resource in result.matches:
            ref = reference_of(resource.get("medicationReference"))  # unusable ones: the parser names them
            if ref is None or ref.kind == "contained":
                ready.append(resource)
                continue
            key = self._local(ref.text, "Medication")
            if key in result.included and not ingredient_references(result.included[key]):
                medications[key] = medications[ref.text] = result.included[key]
                ready.append(resource)
            else:  # not included yet, or its ingredients name other Medications: read with the batch
                self.waiting.append(resource)
        self.count += len(result.matches)
        result.matches.clear()
        if ready:
            self.parts.append(patient_data(self.patient_id, None, ready, medications))

    def finish(self, medications: dict[str, dict]) -> None:
        if self.waiting:
            self.parts.append(patient_data(self.patient_id, None, self.waiting, medications))
            self.waiting = []


class _EntryBudget:
    """The total number of entries one record read may take in, shared by its concurrent searches."""

    def __init__(self, limit: int):
        self.limit, self.used, self._lock = limit, 0, threading.Lock()

    def spend(self, count: int, what: str) -> None:
        with self._lock:
            self.used += count
            over = self.used > self.limit
        if over:
            raise FhirServerError(f"{what}: over {self.limit} entries in all", user_message=(
                f"the record holds more than {self.limit:,} search entries (LDN_FHIR_MAX_ENTRIES), "
                "so it was not read completely"))


class FhirGateway:
    """FHIR REST client bound to one base URL and one token provider; one gateway serves one page."""

    def __init__(self, base_url: str, token_provider: Callable[[], str] | None, *,
                 session: requests.Session | None = None, connect_timeout: float = 5, read_timeout: float = 30,
                 read_deadline: float = 20.0, retries: int = 3, max_workers: int = 5, page_size: int = 1000,
                 max_entries: int = 20_000, max_page_entries: int = 10_000, max_retry_wait: float = 10.0,
                 backoff: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 documents: DocumentCache | None = None):
        self.base_url = base_url.rstrip("/")
        self._base = urlsplit(self.base_url)
        self._token_provider = token_provider
        self.http = session or requests.Session()
        self.timeout = (connect_timeout, read_timeout)
        self.read_deadline = read_deadline
        self.retries, self.max_workers, self.page_size = retries, max_workers, page_size
        self.max_entries, self.max_page_entries = max_entries, max_page_entries
        self.max_retry_wait, self.backoff, self._sleep = max_retry_wait, backoff, sleep
        self._written = threading.Event()
        self._deadline: float | None = None
        self._reads_failed = threading.Event()  # set when a concurrent read failed: its siblings stop early
        self._documents = documents or DocumentCache()

    @classmethod
    def from_config(cls, settings: Settings, base_url: str, token_provider: Callable[[], str] | None, *,
                    session: requests.Session | None = None, documents: DocumentCache | None = None) -> FhirGateway:
        """A gateway with timeouts, deadline, retries and limits from the app's Settings (LDN_FHIR_*)."""
        return cls(base_url, token_provider, session=session, documents=documents,
                   connect_timeout=settings.fhir_connect_timeout, read_timeout=settings.fhir_read_timeout,
                   read_deadline=settings.fhir_read_deadline, retries=settings.fhir_retries,
                   max_workers=settings.fhir_max_workers, page_size=settings.fhir_page_size,
                   max_entries=settings.fhir_max_entries, max_page_entries=settings.fhir_max_page_entries,
                   max_retry_wait=settings.fhir_retry_max_wait)

    def assume_written(self) -> None:
        """Treat this gateway as having written already (a write in an earlier request): reads skip caches."""
        self._written.set()

    # --- capabilities --------------------------------------------------------------------

    def capabilities(self, *, refresh: bool = False) -> dict:
        """The server's CapabilityStatement, from the app's per-issuer cache (`refresh`: revalidate it now)."""
        url, token = self.base_url + "/metadata", self._token()
        return self._documents.get(url, lambda headers: self._request(
            "GET", url, headers=headers, token=token, what="metadata", deadline=self._reads_deadline()),
            lambda response: self._json(response, "metadata", expect="CapabilityStatement"), refresh=refresh)

    def supports_transaction(self) -> bool:
        return any(i.get("code") == "transaction"
                   for rest in self._server_rests() for i in rest.get("interaction") or [])

    def supports_include(self, include: str) -> bool:
        """Whether the CapabilityStatement lists `include` (e.g. "MedicationRequest:medication")."""
        resource_type = include.split(":", 1)[0]
        for rest in self._server_rests():
            for resource in rest.get("resource") or []:
                if resource.get("type") == resource_type:
                    listed = resource.get("searchInclude") or []
                    return include in listed or "*" in listed
        return False

    def _server_rests(self) -> list[dict]:
        return [r for r in self.capabilities().get("rest") or [] if r.get("mode", "server") == "server"]

    # --- reads ---------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> dict:
        """One resource by id."""
        return self._read(resource_type, resource_id, self._token())

    def search(self, resource_type: str, params: Mapping[str, str]) -> list[dict]:
        """Every `match` entry over every page (the server's `next` links, same server only)."""
        return self.search_with_includes(resource_type, params).matches

    def search_with_includes(self, resource_type: str, params: Mapping[str, str]) -> SearchResult:
        """Like `search`, keeping `_include`d resources, unreadable entries and warnings aside."""
        return self._search(resource_type, params, self._token(), _EntryBudget(self.max_entries))

    def search_page(self, resource_type: str, params: Mapping[str, str] | None = None,
                    page_url: str | None = None) -> dict:
        """One page of a search as the server sent it (a Bundle): the first, or the `next` link of an
        earlier page (followed as given - HAPI's `_getpages` cursors are opaque - and only on this server)."""
        _check_type(resource_type)
        url = self._same_server_url(page_url) if page_url else f"{self.base_url}/{resource_type}"
        what = f"search {resource_type} page"
        response = self._request("GET", url, params=None if page_url else dict(params or {}), token=self._token(),
                                 what=what, deadline=self._reads_deadline())
        return self._json(response, what, expect="Bundle")

    def read_patient_record(self, patient_id: str) -> PatientRecord:
        """Patient, medication use, conditions and referenced Medications - all of it, or an error.

        Every search entry is read or listed in `problems`; all of it happens within the read deadline.
        """
        if not _FHIR_ID.match(patient_id or ""):
            raise FhirServerError("patient id is not a FHIR id", user_message=INCOMPLETE)
        token = self._token()  # once, on the caller's thread: workers never touch the session
        budget = _EntryBudget(self.max_entries)
        parsers = {t: _PageParser(patient_id, self._local_reference) for t in SEARCHED_TYPES}
        jobs: dict[str, Callable[[], Any]] = {"Patient": lambda: self._read("Patient", patient_id, token)}
        for resource_type in SEARCHED_TYPES:
            jobs[resource_type] = self._search_job(resource_type, patient_id, token, budget, parsers[resource_type])
        results = self._run_all(jobs)
        found = SearchResult()
        for resource_type in SEARCHED_TYPES:
            search: SearchResult = results[resource_type]
            found.included.update(search.included)
            found.unreadable.extend(search.unreadable)
            found.warnings.extend(search.warnings)
        waiting = {t: parser.waiting for t, parser in parsers.items()}
        medications = self._run_all({"Medication": lambda: self._medications(waiting, found, token, budget)})
        for parser in parsers.values():
            parser.finish(medications["Medication"])
        logger.info("read record of Patient/%s: %s; %d unreadable entries", patient_id,
                    ", ".join(f"{t}={p.count}" for t, p in parsers.items()), len(found.unreadable))
        return PatientRecord(patient=results["Patient"], resources={}, medications={},
                             problems=_summarised(found.unreadable), warnings=tuple(dict.fromkeys(found.warnings)),
                             parsed=tuple(part for parser in parsers.values() for part in parser.parts))

    def _search_job(self, resource_type: str, patient_id: str, token: str | None, budget: _EntryBudget,
                    parser: _PageParser) -> Callable[[], SearchResult]:
        params = {"patient": patient_id, "_count": str(self.page_size)}
        include = f"{resource_type}:medication"
        if resource_type in MEDICATION_USE_TYPES and self.supports_include(include):
            params["_include"] = include
        return lambda: self._search(resource_type, params, token, budget, parser.take)

    def _run_all(self, jobs: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        """Run jobs concurrently within the read deadline; the first failure (in job order) is raised.

        At the deadline the page gets its answer (FhirUnavailable) even if a server still trickles
        bytes: the workers are left to end on their own timeouts and deadline checks.
        """
        deadline = self._reads_deadline()
        pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="fhir")
        try:
            futures = {name: pool.submit(job) for name, job in jobs.items()}
            done, pending = wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()),
                                 return_when=FIRST_EXCEPTION)
            for future in futures.values():
                if future in done and future.exception() is not None:
                    self._reads_failed.set()  # the page has its answer: no more requests for it
                    raise future.exception()  # type: ignore[misc]
            if pending:
                self._reads_failed.set()
                raise _past_deadline(f"read {', '.join(n for n, f in futures.items() if f in pending)}",
                                     self.read_deadline)
            return {name: future.result() for name, future in futures.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _medications(self, resources: dict[str, list[dict]], found: SearchResult, token: str | None,
                     budget: _EntryBudget) -> dict[str, dict]:
        """Resolve every medicationReference: contained ones are left to the parser."""
        wanted: dict[str, list[str]] = {}  # "Medication/<id>" -> references as written
        for resource_type in MEDICATION_USE_TYPES:
            for resource in resources[resource_type]:
                ref = reference_of(resource.get("medicationReference"))  # unusable ones: the parser names them
                if ref is not None and ref.kind != "contained":
                    wanted.setdefault(self._local_reference(ref.text, "Medication"), []).append(ref.text)
        medications = self._fetch_medications(set(wanted), found, token, budget)
        unresolved = set(wanted) - set(medications)
        if unresolved:
            raise FhirServerError(f"{len(unresolved)} referenced Medication resources not found",
                                  user_message=INCOMPLETE)
        self._ingredient_medications(medications, wanted, found, token, budget)
        return {ref: medications[key] for key, refs in wanted.items() if key in medications for ref in (key, *refs)}

    def _ingredient_medications(self, medications: dict[str, dict], wanted: dict[str, list[str]],
                                found: SearchResult, token: str | None, budget: _EntryBudget) -> None:
        """Medications named by ingredients, level by level (cycles cut by `wanted`, depth as the parser's).

        One that cannot be found or referenced is left out: the parser then names the record unreadable.
        """
        frontier = list(medications.values())
        for _ in range(MAX_INGREDIENT_DEPTH):
            nested: dict[str, list[str]] = {}
            for medication in frontier:
                for text in ingredient_references(medication):
                    try:
                        key = self._local_reference(text, "Medication")
                    except FhirServerError:
                        continue
                    if key not in wanted:
                        nested.setdefault(key, []).append(text)
            if not nested:
                return
            for key, refs in nested.items():
                wanted[key] = refs
            fetched = self._fetch_medications(set(nested), found, token, budget)
            medications.update(fetched)
            frontier = list(fetched.values())

    def _fetch_medications(self, keys: set[str], found: SearchResult, token: str | None,
                           budget: _EntryBudget) -> dict[str, dict]:
        """ "Medication/<id>" -> Medication for `keys`: from the includes, the rest in one `_id` search."""
        medications = {key: found.included[key] for key in keys if key in found.included}
        missing = sorted(keys - set(medications))
        if missing:
            ids = [key.split("/", 1)[1] for key in missing]
            fetched = self._search("Medication", {"_id": ",".join(ids), "_count": str(len(ids))}, token, budget)
            found.unreadable.extend(fetched.unreadable)
            found.warnings.extend(fetched.warnings)
            medications.update({f"Medication/{m.get('id')}": m for m in fetched.matches})
        return medications

    def _local_reference(self, reference: str, expected_type: str) -> str:
        """ "Type/id" for a relative or same-server absolute reference (history suffix dropped)."""
        ref = parse_reference(reference)
        if ref is None or ref.resource_type != expected_type:
            raise FhirServerError(f"unusable {expected_type} reference", user_message=INCOMPLETE)
        if ref.base and not self._is_same_server(urlsplit(ref.base)):
            raise FhirServerError("a reference points outside the FHIR server", user_message=INCOMPLETE)
        return ref.key  # "Type/id": the type matched

    def _read(self, resource_type: str, resource_id: str, token: str | None) -> dict:
        _check_type(resource_type)
        if not _FHIR_ID.match(resource_id or ""):
            raise FhirServerError(f"{resource_type} id is not a FHIR id", user_message=INCOMPLETE)
        what = f"read {resource_type}/{resource_id}"
        response = self._request("GET", f"{self.base_url}/{resource_type}/{resource_id}", token=token, what=what,
                                 deadline=self._reads_deadline())
        return self._json(response, what, expect=resource_type)

    def _search(self, resource_type: str, params: Mapping[str, str] | None, token: str | None,
                budget: _EntryBudget, each_page: Callable[[SearchResult], None] | None = None) -> SearchResult:
        """Every page of one search, following `next` as given; each page's entries sorted as it arrives."""
        _check_type(resource_type)
        includes = _included_types(params)
        url, result = f"{self.base_url}/{resource_type}", SearchResult()
        query: Mapping[str, str] | None = dict(params or {})
        seen: set[str] = set()
        for page in itertools.count(1):
            what = f"search {resource_type} page {page}"
            response = self._request("GET", url, params=query, token=token, what=what,
                                     deadline=self._reads_deadline())
            _check_entry_count(response.content.count(b'"resource"'), what, self.max_page_entries, "about ")
            bundle = self._json(response, what, expect="Bundle")
            entries = _entries(bundle, what, self.max_page_entries)
            budget.spend(len(entries), what)
            _sort_page(entries, resource_type, includes, what, result)
            if each_page:
                each_page(result)
            next_url = _next_link(bundle)
            if next_url is None:
                return result
            url, query = self._same_server_url(next_url), None  # followed as given: opaque cursors
            if url in seen:
                raise FhirServerError(f"{what}: the next link repeats an earlier page", user_message=INCOMPLETE)
            seen.add(url)
        raise AssertionError("unreachable")  # pragma: no cover

    def _same_server_url(self, link: str) -> str:
        """The absolute `next` URL, if it stays on our server under the base path; else raise."""
        absolute = urljoin(self.base_url + "/", link)
        if not self._is_same_server(urlsplit(absolute)):
            logger.warning("search paging link leaves the FHIR server; not followed")
            raise FhirServerError("paging link points outside the FHIR server", user_message=INCOMPLETE)
        return absolute

    def _is_same_server(self, parts) -> bool:
        base = self._base
        try:
            port, base_port = parts.port, base.port
        except ValueError:
            return False
        base_path = base.path.rstrip("/")
        return (parts.scheme == base.scheme
                and (parts.hostname or "").lower() == (base.hostname or "").lower()
                and (port or _DEFAULT_PORTS.get(parts.scheme)) == (base_port or _DEFAULT_PORTS.get(base.scheme))
                and (parts.path == base_path or parts.path.startswith(base_path + "/"))
                and not parts.username and not parts.password)

    # --- writes --------------------------------------------------------------------------

    def transaction(self, bundle: dict) -> dict:
        """POST a transaction Bundle to the base URL; the transaction-response Bundle. Never retried."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise ValueError("transaction() needs a Bundle of type transaction")
        response = self._write("POST", self.base_url, bundle, "transaction")
        return self._json(response, "transaction", expect="Bundle")

    def create(self, resource: dict, if_none_exist: str | None = None) -> dict:
        """POST one resource (conditionally, with If-None-Exist); the stored resource. Never retried."""
        resource_type = resource.get("resourceType", "")
        _check_type(resource_type)
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
        what = f"create {resource_type}"
        response = self._write("POST", f"{self.base_url}/{resource_type}", resource, what, headers)
        body = self._json(response, what) if response.content else {}
        if body.get("resourceType") == resource_type:
            return body
        ref = parse_reference(response.headers.get("Location") or response.headers.get("Content-Location"))
        if ref is not None and ref.resource_type == resource_type:
            return {"resourceType": resource_type, "id": ref.id}
        raise FhirServerError(f"{what}: the server returned neither the resource nor its Location")

    def delete(self, ref: str) -> None:
        """DELETE "Type/id"; a resource already gone (404/410) counts as deleted. Never retried."""
        resource_type, resource_id = _split_reference(ref)
        url = f"{self.base_url}/{resource_type}/{resource_id}"
        try:
            self._write("DELETE", url, None, f"delete {resource_type}/{resource_id}")
        except FhirServerError as err:
            if err.http_status not in (404, 410):
                raise

    def set_status(self, ref: str, status: str) -> dict:
        """Set the status of a MedicationRequest or CarePlan (read, then PUT with If-Match). Never retried."""
        resource_type, resource_id = _split_reference(ref)
        if resource_type not in UPDATED_TYPES:
            raise ValueError(f"{resource_type} has no status we set; delete it instead")
        url, what = f"{self.base_url}/{resource_type}/{resource_id}", f"{resource_type}/{resource_id}"
        response = self._request("GET", url, token=self._token(), what=f"read {what}", deadline=None)  # a write step
        resource = {**self._json(response, f"read {what}", expect=resource_type), "status": status}
        version = (resource.get("meta") or {}).get("versionId")
        etag = response.headers.get("ETag") or (f'W/"{version}"' if version else None)
        headers = {"If-Match": etag} if etag else {}
        updated = self._write("PUT", url, resource, f"{status} {what}", headers)
        return self._json(updated, f"update {what}") if updated.content else resource

    def _write(self, method: str, url: str, body: dict | None, what: str,
               headers: dict | None = None) -> requests.Response:
        token = self._token()
        self._written.set()  # even a failed write may have landed: stop trusting cached reads
        extra = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"} if body is not None else {}
        return self._request(method, url, body=None if body is None else json.dumps(body),
                             headers={**extra, **(headers or {})}, token=token, what=what, deadline=None)

    # --- HTTP ----------------------------------------------------------------------------

    def _token(self) -> str | None:
        return self._token_provider() if self._token_provider else None

    def _reads_deadline(self) -> float:
        """The one deadline of this page's reads: it starts with the gateway's first read."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.read_deadline
        return self._deadline

    def _request(self, method: str, url: str, *, params: Mapping | None = None, body: str | None = None,
                 headers: Mapping | None = None, token: str | None, what: str,
                 deadline: float | None) -> requests.Response:
        """One logical request with timeouts; GETs retried within `deadline`; the response checked by `_checked`."""
        attempts = 1 + (self.retries if method == "GET" else 0)
        sent = self._headers(method, token, headers)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.http.request(method, url, params=params, data=body, headers=sent,
                                             timeout=self._timeout(deadline, what), allow_redirects=False)
            except (requests.ConnectionError, requests.Timeout) as err:
                if last or _expired(deadline):
                    raise _unavailable(method, what, err, deadline, self.read_deadline) from None
                logger.info("%s: %s, retrying", what, type(err).__name__)
                self._wait(attempt, None, deadline, what)
                continue
            except requests.RequestException as err:
                raise _unavailable(method, what, err, deadline, self.read_deadline) from None
            if response.status_code in RETRY_STATUSES and not last:
                logger.info("%s -> %s, retrying", what, response.status_code)
                self._wait(attempt, response.headers.get("Retry-After"), deadline, what)
                continue
            return self._checked(response, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout(self, deadline: float | None, what: str) -> tuple[float, float]:
        """(connect, read) timeouts, shortened to what is left before the deadline."""
        if deadline is None:
            return self.timeout
        if self._reads_failed.is_set():
            raise FhirUnavailable(f"{what}: not sent, another read of this page failed", user_message=INCOMPLETE)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _past_deadline(what, self.read_deadline)
        return min(self.timeout[0], left), min(self.timeout[1], left)

    def _headers(self, method: str, token: str | None, extra: Mapping | None) -> dict:
        headers = {"Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if method == "GET" and self._written.is_set():
            headers["Cache-Control"] = "no-cache"  # HAPI caches identical searches for 60 s
        headers.update(extra or {})
        return headers

    def _wait(self, attempt: int, retry_after: str | None, deadline: float | None, what: str) -> None:
        """Back off (or wait as Retry-After asks, capped); give up now if that would pass the deadline."""
        delay = _retry_after_seconds(retry_after)
        if delay is None:
            delay = self.backoff * (2 ** attempt)
        delay = min(delay, self.max_retry_wait)
        if deadline is not None and time.monotonic() + delay >= deadline:
            raise _past_deadline(what, self.read_deadline)
        self._sleep(delay)

    @staticmethod
    def _checked(response: requests.Response, what: str) -> requests.Response:
        """THE error mapping: HTTP status -> typed error, OperationOutcome diagnostics kept."""
        status = response.status_code
        logger.info("%s -> %s", what, status)
        if 200 <= status < 300 or status == 304:  # 304: only ever asked for with If-None-Match
            return response
        diagnostics = _diagnostics(response)
        detail = f"{what}: HTTP {status}" + (f": {'; '.join(diagnostics)}" if diagnostics else "")
        if status in (401, 403):
            raise FhirAuthError(detail, http_status=status, diagnostics=diagnostics)
        if status >= 500 or status == 429:
            raise FhirUnavailable(detail, http_status=status, diagnostics=diagnostics)
        raise FhirServerError(detail, http_status=status, diagnostics=diagnostics)

    @staticmethod
    def _json(response: requests.Response, what: str, expect: str | None = None) -> dict:
        try:
            body = response.json()
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder reads
            raise FhirServerError(f"{what}: the response is not JSON", http_status=response.status_code) from None
        if not isinstance(body, dict) or (expect and body.get("resourceType") != expect):
            found = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
            raise FhirServerError(f"{what}: expected {expect or 'a resource'}, got {found}",
                                  http_status=response.status_code)
        return body


class GatewayFactory:
    """Held by the app: one per-issuer document cache and one connection pool for every request's gateway."""

    def __init__(self, settings: Settings):
        self.documents = DocumentCache(ttl=settings.fhir_metadata_ttl)
        self._pool = HTTPAdapter(pool_connections=16, pool_maxsize=128)

    def __call__(self, settings: Settings, base_url: str, token_provider: Callable[[], str] | None) -> FhirGateway:
        """A gateway for one request: its own session (no cookies shared), the app's pool and cache."""
        session = requests.Session()
        session.mount("https://", self._pool)
        session.mount("http://", self._pool)
        return FhirGateway.from_config(settings, base_url, token_provider, session=session, documents=self.documents)


def _unavailable(method: str, what: str, err: requests.RequestException, deadline: float | None,
                 allowed: float) -> FhirUnavailable:
    """A transport failure; for a write that may have reached the server, say so."""
    if _expired(deadline):
        return _past_deadline(what, allowed)
    reached = method != "GET" and not isinstance(err, requests.ConnectTimeout)
    return FhirUnavailable(f"{what}: {type(err).__name__}", user_message=WRITE_UNCERTAIN if reached else None)


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _past_deadline(what: str, allowed: float) -> FhirUnavailable:
    return FhirUnavailable(f"{what}: no answer within the read deadline", user_message=(
        f"the EHR did not send the record within {allowed:g} s (LDN_FHIR_READ_DEADLINE)"))


def _check_type(resource_type: str) -> None:
    if not _RESOURCE_TYPE.match(resource_type or ""):
        raise ValueError(f"not a FHIR resource type: {resource_type!r}")


def _split_reference(ref: str) -> tuple[str, str]:
    parsed = parse_reference(ref)
    if parsed is None or parsed.kind != "relative" or parsed.resource_type is None or parsed.id is None:
        raise ValueError(f"expected a relative reference Type/id, got {ref!r}")
    return parsed.resource_type, parsed.id


def _included_types(params: Mapping[str, str] | None) -> frozenset[str]:
    """The resource types an `_include` may bring in: `<Type>:medication` -> Medication, or its explicit target."""
    parts = str((params or {}).get("_include") or "").split(":")
    if len(parts) == 3:
        return frozenset({parts[2]})
    return frozenset({"Medication"}) if parts[-1] == "medication" else frozenset()


def _entries(bundle: dict, what: str, limit: int) -> list:
    """A page's `entry` list, refused whole when it is not a list or longer than the per-page cap."""
    entries = bundle.get("entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise FhirServerError(f"{what}: entry is {_json_type(entries)}", user_message=(
            f"a {what.split()[1]} search page was unreadable (its entries are {_json_type(entries)}, not a list)"))
    _check_entry_count(len(entries), what, limit)
    return entries


def _check_entry_count(count: int, what: str, limit: int, about: str = "") -> None:
    """Refuse a page over the per-page cap; checked on the raw body first, so a huge page is not even parsed."""
    if count > limit:
        raise FhirServerError(f"{what}: {about}{count} entries", user_message=(
            f"a {what.split()[1]} search page held {about}{count:,} entries, more than the "
            f"{limit:,} allowed per page (LDN_FHIR_MAX_PAGE_ENTRIES)"))


def _sort_page(entries: list, searched: str, includes: frozenset[str], what: str, result: SearchResult) -> None:
    """Every entry of one page becomes a match, an include, a warning, or an unreadable entry with its reason."""
    for number, entry in enumerate(entries, 1):
        problem = _sort_entry(entry, searched, includes, result)
        if problem:
            result.unreadable.append(f"{what}, entry {number}: {problem}")


def _sort_entry(entry: object, searched: str, includes: frozenset[str], result: SearchResult) -> str | None:
    """File one entry into `result`; the reason it is unreadable, or None."""
    if not isinstance(entry, dict):
        return f"the entry is {_json_type(entry)}, not an object"
    resource, search = entry.get("resource"), entry.get("search")
    if not isinstance(resource, dict):
        return f"its resource is {_json_type(resource)}, not an object"
    if search is not None and not isinstance(search, dict):
        return f"its search element is {_json_type(search)}, not an object"
    kind = resource.get("resourceType")
    if not isinstance(kind, str):  # (found by tests/test_fuzz.py: a list here was a TypeError)
        return f"its resourceType is {_json_type(kind)}, not a string"
    name = f"{kind}/{resource.get('id')}"
    mode = (search or {}).get("mode") or _implied_mode(kind, searched, includes)
    if mode == "match" and kind == searched:
        result.matches.append(resource)
    elif mode == "include" and kind in includes:
        result.included[name] = resource
    elif mode == "outcome" and kind == "OperationOutcome":
        return _read_outcome(resource, searched, result)
    elif mode in ("match", "include", "outcome"):
        return f"{name} does not fit a {searched} search as a {mode!r} entry"
    else:
        return f"{name} has search mode {_printable(repr(mode))}, not match, include or outcome"
    return None


def _implied_mode(kind: object, searched: str, includes: frozenset[str]) -> str | None:
    """The mode of an entry that states none, when its type makes it plain; else None (unreadable)."""
    if kind == searched:
        return "match"
    if kind == "OperationOutcome":
        return "outcome"
    return "include" if kind in includes else None


def _read_outcome(outcome: dict, searched: str, result: SearchResult) -> str | None:
    """Warnings and information of an `outcome` entry are kept to show; an error is a problem."""
    issues = outcome.get("issue") or []
    errors = []
    for issue in issues if isinstance(issues, list) else [issues]:
        issue = issue if isinstance(issue, dict) else {}
        text = _printable(issue.get("diagnostics") or (issue.get("details") or {}).get("text")
                          or issue.get("code") or "no details")
        if issue.get("severity") in ("warning", "information"):
            result.warnings.append(f"The EHR noted on the {searched} search: {text}")
        else:
            errors.append(text)
    return f"the server reported an error with the results: {'; '.join(errors)}" if errors else None


def _summarised(problems: list[str], shown: int = 20) -> tuple[str, ...]:
    """At most `shown` problems, then one line counting the rest (every entry still counted)."""
    if len(problems) <= shown:
        return tuple(problems)
    return (*problems[:shown], f"{len(problems) - shown:,} more unreadable search entries")


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "missing"}
    return names.get(type(value), "a number")


def _printable(value: object, limit: int = 200) -> str:
    """A server-supplied value, bounded and on one line, for a message."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else " " for c in text[:limit])
    return text + ("..." if len(str(value)) > limit else "")


def _next_link(bundle: dict) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _diagnostics(response: requests.Response) -> tuple[str, ...]:
    """issue[].diagnostics / issue[].details.text of an OperationOutcome body, if there is one."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return ()
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ()
    found = []
    for issue in body.get("issue") or []:
        if isinstance(issue, dict):
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
            if text:
                found.append(str(text))
    return tuple(found)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
