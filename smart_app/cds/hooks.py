"""The two CDS services (order-select, order-sign): discovery, the record from prefetch or the gateway, decisions.

Framework-free: `answer` takes the parsed call and a gateway factory and returns card dicts.
The clinical decisions come from `services.assess_data` (the app's own rules); this module only
chooses which draft order to assess and what to tell the EHR about it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date

from ..clinical.classify import classify
from ..clinical.model import ExposureState, MedClass
from ..clinical.terminology import Terminology, default_terminology
from ..errors import InputError
from ..fhir.contract import FHIR_ID, MEDICATION_USE_TYPES, index_keys
from ..fhir.parse import PatientData, exposure_from, patient_data
from ..services import assess_data, read_patient
from . import cards

log = logging.getLogger(__name__)

MEDICATION_SEARCH = "{type}?patient={{{{context.patientId}}}}&_include={type}:medication"
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "medicationRequests": MEDICATION_SEARCH.format(type="MedicationRequest"),
    "medicationStatements": MEDICATION_SEARCH.format(type="MedicationStatement"),
    "medicationDispenses": MEDICATION_SEARCH.format(type="MedicationDispense"),
}
PREFETCH_TYPES = {"conditions": "Condition", "medicationRequests": "MedicationRequest",
                  "medicationStatements": "MedicationStatement", "medicationDispenses": "MedicationDispense"}
SERVICES = {
    "ldn-order-select": {
        "hook": "order-select",
        "title": "Low-dose naltrexone and opioids (order select)",
        "description": "When naltrexone (any product, including low-dose naltrexone) is selected for a patient "
                       "with opioid exposure, or an opioid for a patient taking naltrexone, says so at once: "
                       "rules R2 and R5, with the earliest safe date and a link to the LDN app.",
    },
    "ldn-order-sign": {
        "hook": "order-sign",
        "title": "Low-dose naltrexone and opioids (order sign)",
        "description": "Before naltrexone (any product) or an opioid is signed: checks the patient's opioid "
                       "exposure (R2), contraindications and naltrexone already taken (R5); suggests removing a "
                       "naltrexone draft that must not be signed.",
    },
}


def discovery() -> dict:
    """The discovery response (GET /cds-services); also published as fhir_profiles/cds-services.json."""
    return {"services": [{**service, "id": service_id, "prefetch": dict(PREFETCH)}
                         for service_id, service in SERVICES.items()]}


@dataclass(frozen=True)
class HookCall:
    """One validated service call."""

    service: str
    patient_id: str
    drafts: tuple[dict, ...]  # every medication order in draftOrders
    selected: tuple[dict, ...]  # the ones to decide on (order-select: `selections`; order-sign: all)
    draft_medications: dict[str, dict]  # Medications in the draftOrders Bundle, by reference
    prefetch: dict = field(default_factory=dict)
    fhir_server: str | None = None
    access_token: str | None = None


def parse_call(service_id: str, body: object) -> HookCall:
    """The request body as a HookCall; InputError naming each problem."""
    if not isinstance(body, dict):
        raise InputError("The request body must be a JSON object.")
    hook, context = body.get("hook"), body.get("context")
    problems = [] if hook == SERVICES[service_id]["hook"] else [f"hook must be {SERVICES[service_id]['hook']}"]
    context = context if isinstance(context, dict) else {}
    patient_id = context.get("patientId")
    if not isinstance(patient_id, str) or not FHIR_ID.fullmatch(patient_id):
        problems.append("context.patientId must be a FHIR id")
    bundle = context.get("draftOrders")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        problems.append("context.draftOrders must be a FHIR Bundle")
    prefetch = body.get("prefetch", {})
    if not isinstance(prefetch, dict):
        problems.append("prefetch must be an object")
    if problems or not isinstance(bundle, dict) or not isinstance(patient_id, str):  # (each is a problem above)
        raise InputError(problems)
    drafts, medications = _draft_resources(bundle)
    return HookCall(service_id, patient_id, drafts, _selected(drafts, context.get("selections")), medications,
                    prefetch, _text(body.get("fhirServer")), _text((body.get("fhirAuthorization") or {})
                                                                   .get("access_token")))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _draft_resources(bundle: dict) -> tuple[tuple[dict, ...], dict[str, dict]]:
    drafts, medications = [], {}
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") in MEDICATION_USE_TYPES:
            drafts.append(resource)
        elif resource.get("resourceType") == "Medication":
            medications.update(dict.fromkeys(index_keys(resource, entry.get("fullUrl")), resource))
    return tuple(drafts), medications


def _selected(drafts: tuple[dict, ...], selections: object) -> tuple[dict, ...]:
    """order-select focuses on the newly selected orders; without `selections`, every draft."""
    if not isinstance(selections, list) or not selections:
        return drafts
    wanted = {s for s in selections if isinstance(s, str)}
    return tuple(d for d in drafts if _ref(d) in wanted)


def _ref(resource: dict) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id', '?')}"


# --- the patient's record ------------------------------------------------------------------------

@dataclass
class Record:
    """What the rules read, and what could not be read (plain words, for the card)."""

    data: PatientData
    problems: tuple[str, ...] = ()


def record_from_prefetch(patient_id: str, prefetch: dict) -> tuple[Record | None, list[str]]:
    """The record when every prefetch key was satisfied; else None and the keys that were not."""
    missing = [key for key in PREFETCH if key not in prefetch or not _usable(key, prefetch[key])]
    if missing:
        return None, missing
    resources, medications = [], {}
    for key, resource_type in PREFETCH_TYPES.items():
        for entry in (prefetch[key] or {}).get("entry") or ():
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            if resource.get("resourceType") == resource_type:
                resources.append(resource)
            elif resource.get("resourceType") == "Medication":
                medications.update(dict.fromkeys(index_keys(resource, entry.get("fullUrl")), resource))
    patient = prefetch["patient"] if isinstance(prefetch["patient"], dict) else None
    return Record(patient_data(patient_id, patient, resources, medications)), []


def _usable(key: str, value: object) -> bool:
    """null = no data (allowed); a search must be one complete searchset page (no `next` link)."""
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    if key == "patient":
        return value.get("resourceType") == "Patient"
    links = [link for link in value.get("link") or () if isinstance(link, dict) and link.get("relation") == "next"]
    return value.get("resourceType") == "Bundle" and not links


def read_record(call: HookCall, allowed: Callable[[str], bool], gateway_for: Callable[[str, str], object]) -> Record:
    """Prefetch when complete; otherwise the whole record through the gateway, if the EHR allows us."""
    record, missing = record_from_prefetch(call.patient_id, call.prefetch)
    if record is not None:
        return record
    why = f"the EHR sent no usable prefetch for {', '.join(missing)}"
    if not call.fhir_server or not call.access_token:
        return Record(PatientData(call.patient_id), (f"{why} and no FHIR server access (fhirAuthorization)",))
    if not allowed(call.fhir_server):
        log.warning("CDS call names a fhirServer that is not on ALLOWED_ISSUERS; nothing read")
        return Record(PatientData(call.patient_id), (f"{why} and its fhirServer is not on this app's allowlist",))
    data, problems = read_patient(gateway_for(call.fhir_server, call.access_token), call.patient_id)
    return Record(data, problems)


# --- decisions -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    as_of: date
    washout_days: int
    base_url: str  # PUBLIC_BASE_URL: the SMART launch link and the rules page
    terminology: Terminology | None = None


def answer(call: HookCall, settings: Settings, read: Callable[[HookCall], Record]) -> list[dict]:
    """Cards for the selected drafts. The record is read only when a naltrexone or opioid draft needs it."""
    terminology = settings.terminology or default_terminology()
    relevant = [(draft, cls) for draft in call.selected
                if (cls := classify(exposure_from(draft, call.draft_medications), terminology).category)
                in (MedClass.NALTREXONE, MedClass.OPIOID)]
    if not relevant:
        return []
    record = read(call)
    out = []
    for draft, cls in relevant:
        decide = naltrexone_card if cls is MedClass.NALTREXONE else opioid_card
        card = decide(call, draft, record, replace(settings, terminology=terminology))
        if card:
            out.append(card)
    return out


def naltrexone_card(call: HookCall, draft: dict, record: Record, settings: Settings) -> dict:
    """The app's assessment of the patient, with the session's other draft orders counted as current."""
    draft_refs = {_ref(d) for d in call.drafts}
    others = [exposure_from(d, call.draft_medications) for d in call.drafts if d is not draft]
    kept = [m for m in record.data.medications if m.resource not in draft_refs]
    data = replace(record.data, medications=kept + others)
    assessment = assess_data(data, as_of=settings.as_of, washout_days=settings.washout_days,
                             data_problems=record.problems, terminology=settings.terminology)
    drug = exposure_from(draft, call.draft_medications)
    return cards.naltrexone(assessment, _ref(draft), drug.name, settings.base_url)


def opioid_card(call: HookCall, draft: dict, record: Record, settings: Settings) -> dict | None:
    """A warning when the patient takes naltrexone (or we could not tell); nothing otherwise."""
    draft_refs = {_ref(d) for d in call.drafts}
    data = replace(record.data, medications=[m for m in record.data.medications if m.resource not in draft_refs])
    assessment = assess_data(data, as_of=settings.as_of, washout_days=settings.washout_days,
                             data_problems=record.problems, terminology=settings.terminology)
    naltrexone = [m for m in assessment.medications if m.classification is MedClass.NALTREXONE]
    current = [m for m in naltrexone if m.state is ExposureState.CURRENT]
    unsure = [m for m in naltrexone if m.state is ExposureState.UNKNOWN]
    opioid = exposure_from(draft, call.draft_medications).name
    if current:
        return cards.opioid_on_naltrexone(assessment, opioid, current, settings.base_url)
    if record.problems or unsure:
        return cards.opioid_unknown_naltrexone(assessment, opioid, unsure, settings.base_url)
    return None
