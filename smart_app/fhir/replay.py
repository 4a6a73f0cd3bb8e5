"""Recorded FHIR exchanges (`ldn-app record`, the `responses` file format) answered by a requests transport adapter.

The adapter is mounted on the gateway's own session only, so nothing else (token endpoints, discovery)
ever sees it, and it holds no state but an append-only log: safe under Flask's threaded server.
A request is answered by the first recorded exchange with the same method and URL (query parameters in
any order) whose `request_headers` (our one addition to the format, optional) the request carries. A
Patient search that was not recorded is answered from the recorded Patient reads (by `_id`, `name`,
`birthdate`), so an open-server launch can list them. Anything else is answered 404 with an
OperationOutcome saying "not in the recording: GET <url>". Unless `writes` is set, a request that is not
a GET is never looked up: it is refused (405) - replaying writes nothing.
"""

from __future__ import annotations

import io
import json
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import requests
import yaml
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from ..config import Settings
from ..errors import UnreadableInput
from .documents import DocumentCache
from .gateway import FhirGateway

FHIR_JSON = "application/fhir+json"
PATIENT_SEARCH_PARAMS = frozenset({"_id", "name", "birthdate", "_count"})
LOG_LENGTH = 10_000  # requests remembered for `received` (tests read it; a long replay session forgets the oldest)


@dataclass(frozen=True)
class Exchange:
    """One recorded answer and the request it answers."""

    method: str
    url: str
    status: int
    body: str
    content_type: str = FHIR_JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    request_headers: Mapping[str, str] = field(default_factory=dict)

    def answers(self, headers: Mapping[str, str]) -> bool:
        """Whether a request with `headers` (case-insensitive) carries every header this exchange asks for."""
        return all(headers.get(name) == value for name, value in self.request_headers.items())


def request_key(method: str, url: str) -> tuple:
    """Method, scheme, host, path and the query parameters in any order: what identifies a request."""
    parts = urlsplit(url)
    return (method.upper(), parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"),
            tuple(sorted(parse_qsl(parts.query, keep_blank_values=True))))


def base_of(url: str) -> str | None:
    """The FHIR base of a `<base>/metadata` URL, else None."""
    path = url.split("?", 1)[0].rstrip("/")
    return path[: -len("/metadata")] if path.endswith("/metadata") else None


class Recording:
    """The exchanges of one or more recorded files, indexed by request."""

    def __init__(self, exchanges: Iterable[Exchange]):
        self.exchanges = tuple(exchanges)
        self._index: dict[tuple, list[Exchange]] = {}
        for exchange in self.exchanges:
            self._index.setdefault(request_key(exchange.method, exchange.url), []).append(exchange)
        self.bases = tuple(dict.fromkeys(b for e in self.exchanges if (b := base_of(e.url))))

    @classmethod
    def from_files(cls, paths: Iterable[str]) -> Recording:
        """Every file's exchanges, in order; UnreadableInput naming a file that is not a recording with a base."""
        exchanges = []
        for path in paths:
            found = read_file(path)
            if not any(base_of(e.url) for e in found):
                raise UnreadableInput(f"{path}: the recording has no /metadata request to take its FHIR base from")
            exchanges.extend(found)
        return cls(exchanges)

    def answer(self, method: str, url: str, headers: Mapping[str, str]) -> Exchange | None:
        """The recorded answer to this request, a Patient search made from the recorded Patients, or None."""
        recorded = self._index.get(request_key(method, url), ())
        found = next((e for e in recorded if e.answers(headers)), None)
        if found is None and method.upper() == "GET":
            return self._patient_search(url)
        return found

    def patients(self, base: str) -> list[dict]:
        """The Patients read (GET <base>/Patient/<id>, 200) in the recording, once each."""
        found: dict[str, dict] = {}
        for e in self.exchanges:
            head, _, patient_id = e.url.partition(f"{base}/Patient/")
            if head == "" and e.method.upper() == "GET" and e.status == 200 and "/" not in patient_id:
                resource = _json_object(e.body)
                if resource.get("resourceType") == "Patient":
                    found.setdefault(patient_id, resource)
        return list(found.values())

    def _patient_search(self, url: str) -> Exchange | None:
        path, _, query = url.partition("?")
        base = next((b for b in self.bases if path.rstrip("/") == f"{b}/Patient"), None)
        params = dict(parse_qsl(query, keep_blank_values=True))
        if base is None or not set(params) <= PATIENT_SEARCH_PARAMS:
            return None
        matches = [p for p in self.patients(base) if _patient_matches(p, params)]
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                  "link": [{"relation": "self", "url": url}],
                  "entry": [{"fullUrl": f"{base}/Patient/{p['id']}", "resource": p, "search": {"mode": "match"}}
                            for p in matches]}
        return Exchange("GET", url, 200, json.dumps(bundle))


def _patient_matches(patient: dict, params: Mapping[str, str]) -> bool:
    """FHIR's Patient `_id` (exact), `birthdate` (the day) and `name` (starts any name part, any case)."""
    if "_id" in params and patient.get("id") != params["_id"]:
        return False
    if "birthdate" in params and patient.get("birthDate") != params["birthdate"]:
        return False
    wanted = params.get("name", "").casefold()
    return not wanted or any(part.casefold().startswith(wanted) for part in _name_parts(patient))


def _name_parts(patient: dict) -> list[str]:
    parts = []
    for name in patient.get("name") or ():
        if isinstance(name, dict):
            parts += [v for v in (name.get("text"), name.get("family"), *(name.get("given") or ()))
                      if isinstance(v, str)]
    return [word for part in parts for word in (part, *part.split())]


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def read_file(path: str) -> list[Exchange]:
    """The exchanges of one recorded file, in order; UnreadableInput naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        return [_exchange(item["response"]) for item in data["responses"]]
    except OSError as exc:
        raise UnreadableInput(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise UnreadableInput(f"{path}: not a recorded-responses file ({type(exc).__name__})") from exc


def _exchange(item: dict) -> Exchange:
    body = item.get("body") or ""
    if not isinstance(body, str) or not isinstance(item["url"], str):
        raise TypeError("body and url must be text")
    return Exchange(str(item["method"]).upper(), item["url"], int(item["status"]), body,
                    str(item.get("content_type") or FHIR_JSON), _headers(item.get("headers")),
                    _headers(item.get("request_headers")))


def _headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError("headers must be a mapping")
    return {str(k): str(v) for k, v in value.items()}


def outcome(status: int, code: str, text: str) -> Exchange:
    """An error answer: an OperationOutcome whose diagnostics the app shows."""
    body = {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    return Exchange("", "", status, json.dumps(body))


class ReplayAdapter(BaseAdapter):
    """A requests transport that answers from a Recording and never opens a connection."""

    def __init__(self, recording: Recording, *, writes: bool = False):
        super().__init__()
        self.recording, self.writes = recording, writes
        self._log: deque[tuple[str, str]] = deque(maxlen=LOG_LENGTH)
        self._lock = threading.Lock()

    @property
    def received(self) -> list[tuple[str, str]]:
        """(method, url) of every request this transport received, oldest first."""
        with self._lock:
            return list(self._log)

    def send(self, request: requests.PreparedRequest, stream=False, timeout=None, verify=True, cert=None,
             proxies=None) -> requests.Response:
        method, url = str(request.method).upper(), str(request.url)
        with self._lock:
            self._log.append((method, url))
        if method != "GET" and not self.writes:
            exchange = outcome(405, "not-supported", f"replay writes nothing: {method} {url} was not sent")
        else:
            exchange = self.recording.answer(method, url, request.headers) or outcome(
                404, "not-found", f"not in the recording: {method} {url}")
        return _response(request, exchange)

    def close(self) -> None:
        """Nothing to release: no connection was ever opened."""


def _response(request: requests.PreparedRequest, exchange: Exchange) -> requests.Response:
    response = requests.Response()
    response.status_code = exchange.status
    response.reason = _reason(exchange.status)
    response.headers = CaseInsensitiveDict({**exchange.headers, "Content-Type": exchange.content_type})
    response.raw = io.BytesIO(exchange.body.encode("utf-8"))
    response.encoding = "utf-8"
    response.url, response.request = str(request.url), request
    return response


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def replay_session(adapter: ReplayAdapter) -> requests.Session:
    """A session whose every request goes to `adapter` (nothing reaches the network)."""
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)
    return session


class ReplayGatewayFactory:
    """The app's `gateway_factory` in replay mode: every gateway answers from the recording."""

    def __init__(self, adapter: ReplayAdapter, documents: DocumentCache):
        self.adapter, self.documents = adapter, documents

    def __call__(self, settings: Settings, base_url: str, token_provider) -> FhirGateway:
        return FhirGateway.from_config(settings, base_url, token_provider, session=replay_session(self.adapter),
                                       documents=self.documents)
