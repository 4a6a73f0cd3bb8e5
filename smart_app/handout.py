"""The patient handout for a signed order: plain words, dates written out, no FHIR ids (R1, R5, R6)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from .errors import AppError
from .fhir.contract import CONTACT_READ_TYPES, parse_reference
from .review import full_date

log = logging.getLogger(__name__)

SIDE_EFFECTS = ("vivid dreams (the most common)", "headache", "trouble sleeping", "a fast heartbeat", "drowsiness",
                "dizziness", "feeling sick (nausea) or an upset stomach")  # R6 (000, 001, 004)
WITHDRAWAL_SIGNS = ("sweating or chills", "shaking", "stomach cramps, vomiting or diarrhoea", "a runny nose or "
                    "watery eyes", "goosebumps", "feeling anxious, restless or irritable")  # opioid withdrawal


@dataclass(frozen=True)
class Contact:
    """Whom the patient calls: a name and the ways to reach them (None when the EHR gave none)."""

    name: str | None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    address: str | None = None


@dataclass(frozen=True)
class HandoutStep:
    dose: str  # "1.5 mg"
    start: str  # "Tuesday 20 January 2026"
    end: str | None  # None: from then on


@dataclass(frozen=True)
class Handout:
    patient_name: str
    birth_date: str
    start: str
    steps: tuple[HandoutStep, ...]
    review_from: str
    review_to: str
    supply_days: int | None
    prescriber: Contact
    clinic: Contact
    side_effects: tuple[str, ...] = SIDE_EFFECTS
    withdrawal_signs: tuple[str, ...] = WITHDRAWAL_SIGNS


def person_name(resource: dict | None) -> str | None:
    for name in (resource or {}).get("name") or []:
        if name.get("text"):
            return name["text"]
        parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
        return " ".join(p for p in parts if p).strip() or None
    return None


def contact_of(resource: dict | None) -> Contact:
    """Name, phones, emails and first address of a Practitioner or Organization (R4 shapes)."""
    if not resource:
        return Contact(None)
    telecom = [t for t in resource.get("telecom") or [] if t.get("value")]
    name = resource.get("name") if isinstance(resource.get("name"), str) else person_name(resource)
    address = next((a.get("text") or ", ".join([*(a.get("line") or []), *(v for v in (a.get("city"),
                    a.get("postalCode")) if v)]) for a in resource.get("address") or []), None)
    return Contact(name, tuple(t["value"] for t in telecom if t.get("system") == "phone"),
                   tuple(t["value"] for t in telecom if t.get("system") == "email"), address or None)


def read_contact(gateway, ref: str | None, may_read) -> dict | None:
    """The Practitioner or Organization named, read once when the grant allows it (`may_read(type)`); None when
    not granted or unreadable (the handout then leaves a line to write in)."""
    parsed = parse_reference(ref) if ref else None
    if parsed is None or parsed.id is None or parsed.resource_type not in CONTACT_READ_TYPES or not may_read(
            parsed.resource_type):
        return None
    return _read(gateway, parsed.resource_type, parsed.id)


def _read(gateway, resource_type: str, resource_id: str) -> dict | None:
    try:
        return gateway.read(resource_type, resource_id)
    except AppError as exc:
        log.info("%s not readable for the handout: %s", resource_type, type(exc).__name__)
        return None


def clinic_ref(patient: dict | None) -> str | None:
    return ((patient or {}).get("managingOrganization") or {}).get("reference")


def handout_for(gateway, order: dict, patient_id: str, prescriber_ref: str | None, may_read) -> Handout:
    """Read the patient, the order's prescriber (else `prescriber_ref`) and the patient's clinic (each when granted
    and readable) and word the handout."""
    patient = _read(gateway, "Patient", patient_id)
    prescriber = read_contact(gateway, order.get("requester") or prescriber_ref, may_read)
    return build_handout(order, patient, prescriber, read_contact(gateway, clinic_ref(patient), may_read))


def build_handout(order: dict, patient: dict | None, prescriber: dict | None, clinic: dict | None) -> Handout:
    """The handout for one saved order summary (web.views._order_summary) and the contacts read for it."""
    birth = (patient or {}).get("birthDate")
    steps = tuple(HandoutStep(f"{s['dose']:g} mg" if isinstance(s.get("dose"), int | float) else "as on the label",
                              _written(s.get("start")), _written(s["end"]) if s.get("end") else None)
                  for s in order["steps"])
    return Handout(plain_name(patient) or "(name not recorded)", _written(birth), _written(order.get("start")), steps,
                   _written(order.get("review_from")), _written(order.get("review_to")), order.get("supply_days"),
                   contact_of(prescriber), contact_of(clinic))


def plain_name(patient: dict | None) -> str | None:
    """A patient's name as written to them: text, else given and family (no prefix)."""
    for name in (patient or {}).get("name") or []:
        return name.get("text") or " ".join([*(name.get("given") or []), name.get("family") or ""]).strip() or None
    return None


def _written(iso: str | None) -> str:
    """'Tuesday 17 November 2026'; a partial or missing date as written, or 'not recorded'."""
    try:
        return full_date(date.fromisoformat(iso[:10])) if iso and len(iso) >= 10 else (iso or "not recorded")
    except ValueError:
        return iso or "not recorded"
