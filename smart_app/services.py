"""Use cases shared by the CLI and the web app: assess a patient, plan an order, place it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum

from .clinical.assess import assess
from .clinical.errors import ClinicalError, InvalidTitration
from .clinical.model import Assessment, OrderPlan, TitrationRequest
from .clinical.rules.r1_titration import DOSE_RANGE_TEXT, build_schedule
from .clinical.rules.r2_opioid_washout import WASHOUT_DEFAULT, validate_washout
from .clinical.rules.r5_contraindications import HOLD_DAYS_TEXT
from .clinical.rules.r6_follow_up import REVIEW_WINDOW_TEXT
from .clinical.signing import NEED_MESSAGES, Refusal, signing_verdict
from .clinical.terminology import Terminology, default_terminology
from .errors import (
    AppError,
    FhirAuthError,
    FhirServerError,
    InputError,
    SigningNotAllowed,
    WriteNotCompleted,
    WriteRefused,
)
from .fhir.build import ORDER_IDENTIFIER_SYSTEM, own_order_key, todays_step, transaction_bundle, written_order
from .fhir.contract import parse_reference, rewrite_references
from .fhir.parse import PatientData
from .smart.scopes import missing_undo, missing_write

log = logging.getLogger(__name__)
# The rules' words the templates show (a context processor passes them as `rule_text`).
RULE_TEXT = {"review_window": REVIEW_WINDOW_TEXT, "hold_days": HOLD_DAYS_TEXT, "dose_range": DOSE_RANGE_TEXT}


@contextmanager
def core_errors() -> Iterator[None]:
    """The one place core errors become app errors: a value the rules refuse is the user's input problem."""
    try:
        yield
    except InvalidTitration as exc:
        raise InputError(list(exc.problems)) from exc
    except ClinicalError as exc:
        raise InputError(str(exc)) from exc


def assess_data(data: PatientData, *, as_of: date, washout_days: int = WASHOUT_DEFAULT, start: date | None = None,
                reasons: tuple[str, ...] | None = None, data_problems: tuple[str, ...] = (),
                terminology: Terminology | None = None) -> Assessment:
    with core_errors():
        return assess(data.patient_id, data.medications, data.conditions, as_of=as_of,
                      terminology=terminology or default_terminology(), washout_days=washout_days, start=start,
                      reasons=reasons, data_problems=(*data.problems, *data_problems))


def check_washout(days: int) -> int:
    """The washout days, when R2 allows them (7-10); InputError otherwise."""
    with core_errors():
        return validate_washout(days)


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
    data = record.patient_data(patient_id)
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
    baseline_pain: int | None = None  # 0-10 NRS, written as an Observation the CarePlan refers to


def plan_order(data: PatientData, req: SignRequest, *, as_of: date, washout_days: int = WASHOUT_DEFAULT,
               recorded: datetime | None = None, data_problems: tuple[str, ...] = ()) -> tuple[OrderPlan, dict]:
    """Check a clinician's signed choices against the rules; return the plan and its transaction Bundle."""
    with core_errors():
        steps = build_schedule(req.titration)
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
                     override_reason=req.override_reason, attestation=req.attestation,
                     baseline_pain=req.baseline_pain)
    return plan, transaction_bundle(plan, recorded or datetime.now().astimezone())


def check_signable(assessment: Assessment, req: SignRequest) -> None:
    """The core's signing policy (clinical.signing), as the app's errors: refused, or input still needed."""
    verdict = signing_verdict(assessment, override_reason=req.override_reason, attestation=req.attestation)
    if isinstance(verdict, Refusal):
        raise WriteRefused("; ".join(verdict.reasons), user_message=f"{verdict.lead} " + " ".join(verdict.reasons))
    if verdict is not None:
        raise InputError(NEED_MESSAGES[verdict])


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


class Outcome(Enum):
    """What is known about a write: the server confirmed it, refused it, or left us without an answer."""

    WRITTEN = "written"
    NOT_WRITTEN = "not-written"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SignOutcome:
    """The outcome of signing one plan, and the words that say it without claiming more than is known."""

    outcome: Outcome
    key: str
    message: str
    details: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()  # what the server holds for this key, as far as we know


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


REFUSED = "The EHR refused the order, so it was not written."
NOT_CONFIRMED = "The EHR did not confirm the order ({why})."
FOUND = " The order was looked up by its key and is in the chart."
NOT_FOUND = (" The order was looked up by its key and is not in the chart now. Signing again is safe: it sends "
             "the same order key, so the EHR can never hold it twice.")
LOOKUP_FAILED = (" The app could not look the order up either, so it may or may not have been written: check the "
                 "chart (order key {key}) before signing again. Signing again is safe: it sends the same order key.")
DRAFT_FOUND = (" The chart holds only a draft of it ({ref}), which is not an active order. Signing again completes "
               "it with the same key.")
NO_TRANSACTION = ("This EHR's FHIR server does not support transactions, so the order would be written in steps; "
                  "the app was not granted what it needs to undo a step that fails ({missing}). Signing is "
                  "refused on this server: ask the EHR team to grant these scopes.")


def write_blockers(gateway, permissions) -> list[str]:
    """Why this launch cannot sign on this server (empty: it can). Checked before anything is sent."""
    missing = missing_write(permissions)
    if missing:
        return ["The EHR did not grant write access to " + ", ".join(missing) + "."]
    if not gateway.supports_transaction():
        undo = missing_undo(permissions)
        if undo:
            return [NO_TRANSACTION.format(missing=", ".join(undo))]
    return []


def sign_order(gateway, bundle: dict, permissions) -> SignOutcome:
    """Write one signed plan and say truthfully what happened: written, not written, or unknown.

    Unknown (timeout, reset, 5xx, an answer we cannot read) is resolved by looking the order up by
    its key: found active -> written; otherwise it stays unknown, with the same idempotent retry.
    """
    key = bundle_key(bundle)
    blockers = write_blockers(gateway, permissions)
    if blockers:
        raise SigningNotAllowed("; ".join(blockers), user_message=" ".join(blockers))
    try:
        result = place_order(gateway, bundle)
    except WriteNotCompleted as err:
        return _not_completed(gateway, key, err)
    except AppError as err:
        if refused_before_commit(err):
            return SignOutcome(Outcome.NOT_WRITTEN, key, REFUSED, _diagnostics(err))
        return look_up_outcome(gateway, key, _why(err))
    log.info("order %s written: %s", key, ", ".join(result.refs.values()))
    return SignOutcome(Outcome.WRITTEN, key, "The EHR confirmed the order.", refs=tuple(result.refs.values()))


def refused_before_commit(err: AppError) -> bool:
    """A 4xx answer (not 408): the server looked at the request and did not commit it."""
    status = getattr(err, "http_status", None)
    return isinstance(status, int) and 400 <= status < 500 and status != 408


def look_up_outcome(gateway, key: str, why: str) -> SignOutcome:
    """After an unanswered write: the order by its key, as the server holds it now."""
    message = NOT_CONFIRMED.format(why=why)
    try:
        order = find_order(gateway, key)
    except AppError as err:
        log.warning("order %s: lookup after an unconfirmed write failed: %s", key, type(err).__name__)
        return SignOutcome(Outcome.UNKNOWN, key, message + LOOKUP_FAILED.format(key=key))
    if order is None:
        return SignOutcome(Outcome.UNKNOWN, key, message + NOT_FOUND)
    ref = order["refs"]["MedicationRequest"]
    if order["status"] == "active":
        return SignOutcome(Outcome.WRITTEN, key, message + FOUND, refs=(ref,))
    return SignOutcome(Outcome.UNKNOWN, key, message + DRAFT_FOUND.format(ref=ref), refs=(ref,))


def _not_completed(gateway, key: str, err: WriteNotCompleted) -> SignOutcome:
    """The sequential write stopped before the order became active, and the undo ran."""
    if not refused_before_commit(err.cause):
        return look_up_outcome(gateway, key, _why(err.cause))
    message = "The EHR refused part of the order, so it was never made active: it was not written."
    if err.left:
        message += (" The app could not remove what it had created (" + ", ".join(err.left) + "): these are "
                    "drafts, not an active order. Signing again completes them with the same key; otherwise "
                    "ask the EHR team to delete them.")
    return SignOutcome(Outcome.NOT_WRITTEN, key, message, _diagnostics(err.cause), refs=err.left)


def _why(err: AppError) -> str:
    status = getattr(err, "http_status", None)
    return f"it answered HTTP {status}" if status else "no usable answer in time"


def _diagnostics(err: AppError) -> tuple[str, ...]:
    return tuple(getattr(err, "diagnostics", ()) or ())


def bundle_key(bundle: dict) -> str:
    """The order key carried by the bundle's MedicationRequest."""
    orders = (e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MedicationRequest")
    keys = (own_order_key(order) for order in orders)
    return next(key for key in keys if key)


def find_order(gateway, key: str) -> dict | None:
    """The order this app wrote under `key`, read back from the server (no session needed), or None.

    The MedicationRequest is the commit marker: a transaction writes it with its CarePlan or not at
    all, and the sequential write makes it active only after its CarePlan exists.
    """
    found = gateway.search("MedicationRequest", {"identifier": f"{ORDER_IDENTIFIER_SYSTEM}|{key}"})
    ours = [r for r in found if own_order_key(r) == key]  # a server may ignore the identifier parameter
    return written_order(ours[0]) if ours else None


def find_care_plan(gateway, key: str) -> str | None:
    """The reference of the CarePlan this app wrote with the order `key` (same identifier), or None."""
    found = gateway.search("CarePlan", {"identifier": f"{ORDER_IDENTIFIER_SYSTEM}|{key}"})
    ours = [r for r in found if own_order_key(r) == key and r.get("id")]
    return f"CarePlan/{ours[0]['id']}" if ours else None


def own_order_keys(data: PatientData) -> set[str]:
    """Keys of the active orders this app wrote for the patient (recognised by our identifier system)."""
    return {m.own_order_key for m in data.medications if m.own_order_key and m.status == "active"}


def own_orders(gateway, data: PatientData, today: date) -> list[dict]:
    """This app's earlier orders in the chart, read back by key, with the step that covers `today`."""
    keys = sorted({m.own_order_key for m in data.medications if m.own_order_key and m.status in ("active", "draft")})
    found = []
    for key in keys:
        try:
            order = find_order(gateway, key)
        except AppError as err:
            log.warning("own order %s could not be read back: %s", key, type(err).__name__)
            continue
        if order is not None:
            found.append({**order, "today": todays_step(order, today)})
    return found


def _ref_from_location(location: str | None) -> str | None:
    ref = parse_reference(location)
    return ref.local if ref else None


def place_order(gateway, bundle: dict) -> WriteResult:
    """Write the transaction; without transaction support, create in order (see `_place_sequentially`)."""
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
    """Conditional creates one by one, the MedicationRequest as a draft; activating it is the last step.

    Order: MedicationRequest (status draft), CarePlan, Provenance, then PUT the MedicationRequest to
    active. So an active MedicationRequest always has its CarePlan: before the last step nothing is an
    active order, and the last step either lands (written) or not (the draft stays a draft). A failure
    before the last step deletes what was created (newest first); what cannot be deleted is reported
    by `WriteNotCompleted.left` and is still only a draft. Conditional creates make a retry resume: the
    same key finds the draft and the CarePlan and completes them. Needs update on MedicationRequest and
    delete on all three (smart.scopes.UNDO_NEEDS); `write_blockers` refuses to sign without them.
    """
    created: list[str] = []
    by_type: dict[str, str] = {}
    urns: dict[str, str] = {}
    mr_ref, mr_status = None, None
    try:
        for entry in bundle["entry"]:
            stored = _create_step(gateway, entry, urns)
            ref = f"{stored['resourceType']}/{stored['id']}"
            urns[entry["fullUrl"]] = ref
            created.append(ref)
            by_type[stored["resourceType"]] = ref
            if stored["resourceType"] == "MedicationRequest":
                mr_ref, mr_status = ref, stored.get("status")
    except FhirServerError as err:  # an order already active (a retry) is never undone
        raise WriteNotCompleted(err, () if mr_status == "active" else _undo(gateway, created)) from err
    if mr_status != "active":
        try:
            gateway.set_status(mr_ref, "active")
        except FhirServerError as err:  # unanswered: it may be active now, so nothing is deleted
            raise WriteNotCompleted(err, _undo(gateway, created) if refused_before_commit(err) else ()) from err
    return WriteResult(by_type)


def _create_step(gateway, entry: dict, urns: dict[str, str]) -> dict:
    resource = rewrite_references(entry["resource"], urns)
    if resource["resourceType"] == "MedicationRequest":
        resource["status"] = "draft"
    stored = gateway.create(resource, if_none_exist=entry["request"].get("ifNoneExist"))
    status = stored.get("status")
    if stored["resourceType"] == "MedicationRequest" and status not in (None, "draft", "active"):
        raise FhirServerError(f"an earlier order with this key is {status}", http_status=409, diagnostics=(
            f"An earlier order with this key is {status} in the chart; change the plan to sign a new one.",))
    return stored


def _undo(gateway, created: list[str]) -> tuple[str, ...]:
    """Delete what a failed sequential write created, newest first; the refs that could not be deleted."""
    left = []
    for ref in reversed(created):
        try:
            gateway.delete(ref)
        except AppError as err:
            log.error("could not undo %s after a failed sequential write (%s); it is a draft, needs review",
                      ref, type(err).__name__)
            left.append(ref)
    return tuple(left)
