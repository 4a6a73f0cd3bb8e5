"""Use cases shared by the CLI and the web app: assess a patient, plan an order, place it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from .clinical.eligibility import assess
from .clinical.model import BLOCKING, Assessment, Decision, OrderPlan, Severity, TitrationRequest
from .clinical.opioids import WASHOUT_DEFAULT
from .clinical.terminology import Terminology, default_terminology
from .clinical.titration import build_schedule
from .errors import AppError, FhirAuthError, FhirServerError, InputError, WriteRefused
from .fhir.build import transaction_bundle
from .fhir.contract import parse_reference, rewrite_references
from .fhir.parse import PatientData, patient_data

log = logging.getLogger(__name__)


def assess_data(data: PatientData, *, as_of: date, washout_days: int = WASHOUT_DEFAULT, start: date | None = None,
                reasons: tuple[str, ...] | None = None, data_problems: tuple[str, ...] = (),
                terminology: Terminology | None = None) -> Assessment:
    return assess(data.patient_id, data.medications, data.conditions, as_of=as_of,
                  terminology=terminology or default_terminology(), washout_days=washout_days, start=start,
                  reasons=reasons, data_problems=(*data.problems, *data_problems))


def unreadable_type_problems(types: Iterable[str]) -> tuple[str, ...]:
    """A data problem per record type the token cannot read in full (R2: never 'eligible' unseen)."""
    return tuple(f"{t}: the EHR did not grant this app a read of every {t} record (not granted, or only "
                 "with a filter), so some may be hidden" for t in types)


def read_patient(gateway, patient_id: str, *, unreadable_types: Iterable[str] = ()
                 ) -> tuple[PatientData, tuple[str, ...]]:
    """What the rules need from the EHR; a failed read, partial grant or unreadable entry is a data problem."""
    granted = unreadable_type_problems(unreadable_types)
    try:
        record = gateway.read_patient_record(patient_id)
    except FhirServerError as exc:
        log.warning("patient record read failed for Patient/%s: %s", patient_id, type(exc).__name__)
        return PatientData(patient_id), (*granted, _read_problem(exc))
    resources = [r for rs in record.resources.values() for r in rs]
    data = patient_data(patient_id, record.patient, resources, record.medications)
    data.warnings = record.warnings
    return data, (*granted, *record.problems)


def fhir_base_problem(gateway) -> str | None:
    """None when the server's CapabilityStatement can be read, else what went wrong (for /readyz)."""
    try:
        gateway.capabilities(refresh=True)  # the server itself, not the app's cached copy
    except AppError as exc:
        log.warning("FHIR base %s not ready: %s", gateway.base_url, type(exc).__name__)
        return exc.detail
    return None


def _read_problem(exc: FhirServerError) -> str:
    """Plain words for a failed read; a refusal (401/403) names the read, hence the record type."""
    if isinstance(exc, FhirAuthError):
        return f"the EHR refused a read ({exc.detail})"
    return "; ".join(exc.diagnostics) if exc.diagnostics else exc.user_message


def assess_patient(gateway, patient_id: str, *, as_of: date, washout_days: int = WASHOUT_DEFAULT,
                   start: date | None = None, reasons: tuple[str, ...] | None = None,
                   unreadable_types: Iterable[str] = ()):
    data, problems = read_patient(gateway, patient_id, unreadable_types=unreadable_types)
    return assess_data(data, as_of=as_of, washout_days=washout_days, start=start, reasons=reasons,
                       data_problems=problems), data


@dataclass(frozen=True)
class SignRequest:
    titration: TitrationRequest
    reasons: tuple[str, ...] = ()
    requester: str | None = None
    override_reason: str | None = None
    attestation: str | None = None


def plan_order(data: PatientData, req: SignRequest, *, as_of: date, washout_days: int = WASHOUT_DEFAULT,
               recorded: datetime | None = None, data_problems: tuple[str, ...] = ()) -> tuple[OrderPlan, dict]:
    """Check a clinician's signed choices against the rules; return the plan and its transaction Bundle."""
    try:
        steps = build_schedule(req.titration)
    except ValueError as exc:
        raise InputError(exc.args[0]) from exc
    problems = []
    if req.titration.start < as_of:
        problems.append(f"The start date {req.titration.start} is in the past.")
    known = {c.resource for c in data.conditions}
    unknown = [r for r in req.reasons if r not in known]
    if unknown:
        problems.append(f"Reason(s) not on this patient's problem list: {', '.join(unknown)}.")
    if problems:
        raise InputError(problems)
    assessment = assess_data(data, as_of=as_of, washout_days=washout_days, start=req.titration.start,
                             reasons=req.reasons or None, data_problems=data_problems)
    check_signable(assessment, req)
    plan = OrderPlan(patient=data.patient_id, assessment=assessment, titration=req.titration, steps=steps,
                     reasons=assessment.reasons, requester=req.requester, authored_on=as_of,
                     override_reason=req.override_reason, attestation=req.attestation)
    return plan, transaction_bundle(plan, recorded or datetime.now().astimezone())


def check_signable(assessment: Assessment, req: SignRequest) -> None:
    """What each decision requires before anything is written (R2, R4, R5)."""
    if not assessment.can_sign:
        blocking = [f for f in assessment.findings if f.severity in BLOCKING]
        reasons = [f"{f.rule}: {f.text}" for f in blocking]
        lead = ("Not yet - opioid washout: cannot be signed for this start date."
                if all(f.severity is Severity.WAIT for f in blocking) else "Contraindicated - cannot be signed.")
        raise WriteRefused("; ".join(reasons), user_message=f"{lead} " + " ".join(reasons))
    if assessment.decision is Decision.NOT_RECOMMENDED and not (req.override_reason or "").strip():
        raise InputError("LDN is recommended against for the chosen reason (R4): type the reason to proceed.")
    if assessment.decision is Decision.CANNOT_DETERMINE and not (req.attestation or "").strip():
        raise InputError("The assessment could not determine everything (cannot-determine): confirm the "
                         "attestation that you checked the unreadable or unclassified data.")
    if not assessment.reasons:
        raise InputError("Choose the condition this order is for (the reason for the order).")


def iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def assessment_to_json(a: Assessment) -> dict:
    """The documented JSON shape (docs/CONTRACTS.md): CLI `assess --json` and GET /api/assessment."""
    return {
        "patient": a.patient,
        "as_of": iso(a.as_of),
        "start_date": iso(a.start_date),
        "decision": a.decision.value,
        "earliest_start_date": iso(a.earliest_start_date),
        "washout_days": a.washout_days,
        "findings": [{"rule": f.rule, "source": f.source, "severity": f.severity.value, "text": f.text,
                      "resources": list(f.resources), "code": f.code} for f in a.findings],
        "medications": [{"resource": m.resource, "name": m.name, "classification": m.classification.value,
                         "evidence": m.evidence, "status": m.status, "state": m.state.value,
                         "last_exposure": iso(m.last_exposure), "date_problem": m.date_problem}
                        for m in a.medications],
        "conditions": [{"resource": c.resource, "name": c.name, "categories": list(c.categories),
                        "counts": c.counts, "clinical_status": c.clinical_status,
                        "verification_status": c.verification_status} for c in a.conditions],
        "indications": list(a.indications),
        "reasons": list(a.reasons),
    }


__all__ = ["AppError", "SignRequest", "assess_data", "assess_patient", "assessment_to_json", "plan_order"]


@dataclass(frozen=True)
class WriteResult:
    """What the EHR stored for one signed plan: "Type/id" per resource type."""

    refs: dict

    @property
    def medication_request(self) -> str | None:
        return self.refs.get("MedicationRequest")

    @property
    def care_plan(self) -> str | None:
        return self.refs.get("CarePlan")


def _ref_from_location(location: str | None) -> str | None:
    ref = parse_reference(location)
    return ref.local if ref else None


def place_order(gateway, bundle: dict) -> WriteResult:
    """Write the transaction; without transaction support, create in order and undo on failure."""
    if gateway.supports_transaction():
        response = gateway.transaction(bundle)
        refs = {}
        for sent, got in zip(bundle["entry"], response.get("entry") or [], strict=False):
            ref = _ref_from_location((got.get("response") or {}).get("location"))
            if ref is None and isinstance(got.get("resource"), dict):
                ref = f"{got['resource']['resourceType']}/{got['resource'].get('id')}"
            refs[sent["resource"]["resourceType"]] = ref
        if not refs.get("MedicationRequest") or not refs.get("CarePlan"):
            raise FhirServerError("transaction response without MedicationRequest/CarePlan locations")
        return WriteResult(refs)
    return _place_sequentially(gateway, bundle)


def _place_sequentially(gateway, bundle: dict) -> WriteResult:
    """Conditional creates one by one; on a failure after the first, remove what was created."""
    created: list[str] = []
    urns: dict[str, str] = {}
    try:
        for entry in bundle["entry"]:
            resource = rewrite_references(entry["resource"], urns)
            stored = gateway.create(resource, if_none_exist=entry["request"].get("ifNoneExist"))
            ref = f"{stored['resourceType']}/{stored['id']}"
            urns[entry["fullUrl"]] = ref
            created.append(ref)
    except AppError:
        _undo(gateway, created)
        raise
    return WriteResult({parse_reference(ref).resource_type: ref for ref in created})


def _undo(gateway, created: list[str]) -> None:
    for ref in reversed(created):
        try:
            if parse_reference(ref).resource_type in ("MedicationRequest", "CarePlan"):
                gateway.mark_entered_in_error(ref)
            else:
                gateway.delete(ref)
        except AppError:
            log.error("could not undo %s after a failed sequential write; it needs manual review", ref)
