"""Open-server mode (LDN_OPEN_SERVERS): FHIR test servers with no authorization, opened by patient search.

A deliberate opt-in for trying the app on public test data (e.g. the public HAPI server): there is no
SMART launch, so the clinician picks a patient, and the launch context is made here instead of from a
token response. Such servers must never hold real patient data; every page says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from .config import Settings
from .errors import InputError
from .fhir.parse import display_name
from .smart.scopes import CONTACT_SCOPES, READ_TYPES, UNDO_NEEDS, WRITE_TYPES

OPEN_LAUNCH = "open"
PAGE_SIZE = 20
BANNER = "This FHIR server has no authorization and must not hold real patient data."
NO_REQUESTER = ("this FHIR server has no authorization, so nobody is signed in to prescribe: the app's "
                "operator must set LDN_OPEN_REQUESTER to the Practitioner who signs orders")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
MAX_NAME_LENGTH = 100


def normalize(base: str) -> str:
    return base.strip().rstrip("/")


def is_open(settings: Settings, iss: str | None) -> bool:
    return bool(iss) and normalize(str(iss)) in settings.open_servers


@dataclass(frozen=True)
class PatientSearch:
    """What the clinician typed: any of name, birth date, id (none: every patient, page by page)."""

    name: str = ""
    birth_date: str = ""
    patient_id: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> PatientSearch:
        """As typed (call `check` before searching)."""
        return cls(args.get("name", "").strip(), args.get("birthdate", "").strip(), args.get("id", "").strip())

    def check(self) -> None:
        problems = []
        if len(self.name) > MAX_NAME_LENGTH:
            problems.append(f"Name: at most {MAX_NAME_LENGTH} characters.")
        if self.birth_date:
            try:
                date.fromisoformat(self.birth_date)
            except ValueError:
                problems.append(f"Birth date: '{self.birth_date}' is not a date (YYYY-MM-DD).")
        if self.patient_id and not _FHIR_ID.fullmatch(self.patient_id):
            problems.append("Id: letters, digits, '-' and '.' only (at most 64).")
        if problems:
            raise InputError(problems)

    def params(self) -> dict[str, str]:
        params = {"_count": str(PAGE_SIZE)}
        for key, value in (("name", self.name), ("birthdate", self.birth_date), ("_id", self.patient_id)):
            if value:
                params[key] = value
        return params


@dataclass(frozen=True)
class PatientRow:
    id: str
    name: str
    birth_date: str
    gender: str


@dataclass(frozen=True)
class PatientPage:
    """One page of results, the server's total when it sent one (HAPI often does not), and its links."""

    patients: list[PatientRow]
    total: int | None
    next_url: str | None
    previous_url: str | None


def search_patients(gateway, search: PatientSearch | None = None, page_url: str | None = None) -> PatientPage:
    """The first page for `search`, or the page at `page_url` (a link of an earlier page)."""
    bundle = gateway.search_page("Patient", (search or PatientSearch()).params(), page_url)
    rows = [_row(e["resource"]) for e in bundle.get("entry") or ()
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == "Patient" and isinstance(e["resource"].get("id"), str)
            and (e.get("search") or {}).get("mode", "match") == "match"]
    total = bundle.get("total")
    return PatientPage(rows, total if isinstance(total, int) else None, _link(bundle, "next"),
                       _link(bundle, "previous") or _link(bundle, "prev"))


def _link(bundle: dict, relation: str) -> str | None:
    for link in bundle.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == relation and isinstance(link.get("url"), str):
            return link["url"]
    return None


def _row(patient: dict) -> PatientRow:
    birth, gender = patient.get("birthDate"), patient.get("gender")
    return PatientRow(patient["id"], display_name(patient), birth if isinstance(birth, str) else "",
                      gender if isinstance(gender, str) else "")


def launch_record(settings: Settings, iss: str, patient_id: str) -> dict:
    """The launch context of an open server: what a SMART token response would have told us.

    Nothing is granted or refused by such a server, so the app may read and write every type it uses;
    the prescriber is LDN_OPEN_REQUESTER (None: signing is disabled, saying why)."""
    now = settings.clock()
    scope = " ".join([*(f"patient/{t}.rs" for t in READ_TYPES),
                      *(f"patient/{t}.c{UNDO_NEEDS.get(t, '')}" for t in WRITE_TYPES),  # undo: no transaction
                      *CONTACT_SCOPES[True]])
    return {"iss": normalize(iss), "launch_mode": OPEN_LAUNCH, "patient": patient_id, "encounter": None,
            "scope": scope, "fhir_user": settings.open_requester or None,
            "need_patient_banner": True, "expires_at": now + settings.max_seconds}
