"""In-process test doubles for the web app: a fake FHIR gateway over the sample patients, and launches
put straight into the app's store (the browser's session cookie included)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Mapping
from itertools import count

from smart_app.errors import FhirServerError
from smart_app.fhir.contract import SEARCHED_TYPES, parse_reference, rewrite_references
from smart_app.fhir.gateway import PatientRecord
from smart_app.samples import load_sample, sample_ids
from smart_app.smart.launches import Launches
from smart_app.smart.store import COOKIE_NAME, new_session_id

FULL_SCOPE = ("launch openid fhirUser patient/Patient.rs patient/Condition.rs patient/MedicationRequest.rs "
              "patient/MedicationStatement.rs patient/MedicationDispense.rs patient/Medication.rs "
              "patient/MedicationRequest.c patient/CarePlan.c patient/Provenance.c")
PRESCRIBER = "https://ehr.example.org/fhir/Practitioner/prac-1"
ISS = "https://ehr.example.org/fhir"


class FakeEhr:
    """Sample patients (dated for SAMPLE_AS_OF) behind the gateway methods the app calls; records writes."""

    def __init__(self):
        self.written: list[tuple[str, str]] = []  # (patient id, "Type/id") per created resource
        self.stored: dict[str, dict] = {}  # "Type/id" -> the created resource (read back by /done)
        self.gateways: list[FakeGateway] = []
        self._ids = count(1)

    def factory(self, _config, iss, token_provider):
        gateway = FakeGateway(self, iss, token_provider)
        self.gateways.append(gateway)
        return gateway

    def written_for(self, patient: str) -> list[str]:
        return [ref for pid, ref in self.written if pid == patient]


class FakeGateway:
    """The `contract.Gateway` interface over a FakeEhr: sample patients to read, writes kept in memory."""

    def __init__(self, ehr: FakeEhr, iss: str, token_provider):
        self.ehr, self.iss, self.token_provider = ehr, iss, token_provider
        self.base_url = iss

    def _token(self) -> None:
        if self.token_provider is not None:
            self.token_provider()

    def assume_written(self) -> None:
        pass

    def capabilities(self, *, refresh: bool = False) -> dict:
        return {"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
                                                                 "interaction": [{"code": "transaction"}]}]}

    def supports_transaction(self) -> bool:
        return True

    def read_patient_record(self, patient_id: str) -> PatientRecord:
        self._token()
        entries = [e["resource"] for e in load_sample(patient_id)["entry"]]
        by_type: dict[str, list[dict]] = {t: [] for t in SEARCHED_TYPES}
        for resource in entries[1:]:
            by_type.setdefault(resource["resourceType"], []).append(resource)
        by_type["MedicationRequest"] += self.search("MedicationRequest", {"patient": patient_id})
        medications = {f"Medication/{m['id']}": m for m in by_type.pop("Medication", [])}
        return PatientRecord(entries[0], by_type, medications)

    def search(self, resource_type: str, params: Mapping[str, str]) -> list[dict]:
        """The app's own lookups: by identifier or tag (system|value), or a patient's resources."""
        found = [r for ref, r in self.ehr.stored.items() if ref.startswith(resource_type + "/")]
        if "identifier" in params:
            system, value = params["identifier"].split("|")
            return [r for r in found if any(i["system"] == system and (not value or i["value"] == value)
                                            for i in r.get("identifier", []))]
        if "_tag" in params:
            system, code = params["_tag"].split("|")
            return [r for r in found if {"system": system, "code": code} in r.get("meta", {}).get("tag", [])]
        mine = [r for r in found if r.get("subject", {}).get("reference") == f"Patient/{params['patient']}"]
        return [r for r in mine if "status" not in params or r.get("status") == params["status"]]

    def search_page(self, resource_type: str, params: Mapping[str, str] | None = None,
                    page_url: str | None = None) -> dict:
        """Patients by id (the open-server search); one page, no links."""
        assert resource_type == "Patient" and page_url is None
        wanted = (params or {}).get("_id")
        found = [load_sample(wanted)["entry"][0]["resource"]] if wanted in sample_ids() else []
        return {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                "entry": [{"resource": r, "search": {"mode": "match"}} for r in found]}

    def read(self, resource_type: str, resource_id: str) -> dict:
        ref = f"{resource_type}/{resource_id}"
        if ref in self.ehr.stored:
            return self.ehr.stored[ref]
        if resource_type != "Patient" or resource_id not in sample_ids():
            raise FhirServerError(f"read {ref}: 404", http_status=404)
        return load_sample(resource_id)["entry"][0]["resource"]

    def transaction(self, bundle: dict) -> dict:
        """Conditional creates (If-None-Exist on an identifier) and updates, urn:uuid references resolved."""
        self._token()
        urns = {e["fullUrl"]: self._ref_for(e) for e in bundle["entry"]}
        response = []
        for entry in bundle["entry"]:
            ref = urns[entry["fullUrl"]]
            if ref not in self.ehr.stored:
                self.ehr.written.append((self._owner(bundle), ref))
            self.ehr.stored[ref] = {**rewrite_references(entry["resource"], urns), "id": ref.split("/")[1]}
            response.append({"response": {"status": "201 Created", "location": f"{ref}/_history/1"}})
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": response}

    def _ref_for(self, entry: dict) -> str:
        """An update's target, an earlier resource a conditional create matches, or a new id."""
        request = entry["request"]
        if request["method"] == "PUT":
            return parse_reference(request["url"]).local
        condition = request.get("ifNoneExist", "")
        if condition.startswith("identifier="):
            same = self.search(request["url"], {"identifier": condition.removeprefix("identifier=")})
            if same:
                return f"{request['url']}/{same[0]['id']}"
        return f"{entry['resource']['resourceType']}/{next(self.ehr._ids)}"

    @staticmethod
    def _owner(bundle: dict) -> str:
        subjects = [e["resource"]["subject"]["reference"] for e in bundle["entry"] if "subject" in e["resource"]]
        return subjects[0].split("/")[-1]

    def create(self, resource: dict, if_none_exist: str | None = None) -> dict:
        raise AssertionError("the fake EHR supports transactions: nothing is created one by one")

    def delete(self, ref: str) -> None:
        raise AssertionError("the fake EHR supports transactions: nothing is undone")

    def set_status(self, ref: str, status: str) -> dict:
        raise AssertionError("the fake EHR supports transactions: no draft is activated")


def browser_owner(app, client) -> str:
    """The owner id of `client`'s server-side session, creating the session (and cookie) if needed."""
    store = app.extensions["smart.store"]
    cookie = client.get_cookie(COOKIE_NAME)
    data = store.get("session:" + cookie.value) if cookie else None
    if data is None:
        sid, data = new_session_id(), {"bid": new_session_id(), "created": app.extensions["settings"].clock(),
                                       "launch_ids": []}
        store.set("session:" + sid, data, 1800)
        client.set_cookie(COOKIE_NAME, sid)
    return data["bid"]


def launch(app, client, patient: str, *, fhir_user: str | None = PRESCRIBER, scope: str = FULL_SCOPE) -> str:
    """A completed launch of `patient` in `client`'s browser; returns its launch id."""
    context = {"iss": ISS, "launch_mode": "ehr", "config": {"token_endpoint": "https://ehr.example.org/token"},
               "access_token": "at-" + new_session_id(), "refresh_token": None, "expires_at": time.time() + 3600,
               "scope": scope, "patient": patient, "encounter": None, "need_patient_banner": True,
               "fhir_user": fhir_user, "sub": "user-1"}
    launches = Launches(app.extensions["smart.store"], browser_owner(app, client), app.extensions["settings"])
    return launches.create(context)


def form_fields(page: str, form_id: str) -> list[tuple[str, str]]:
    """The fields a browser would submit from form `form_id` (checked boxes, selected options)."""
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', page, re.S).group(0)
    fields = []
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        kind = re.search(r'type="([^"]+)"', tag)
        if not name or (kind and kind.group(1) == "checkbox" and "checked" not in tag):
            continue
        fields.append((name.group(1), html.unescape(value.group(1)) if value else ""))
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        fields.append((name, re.search(r'<option value="([^"]+)"[^>]*selected', body).group(1)))
    return fields
