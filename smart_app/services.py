"""Use cases shared by the CLI and the web app: assess a patient, check an order, sign it. The web calls only this."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from enum import Enum

# Names imported `as` themselves are re-exported (PEP 484) for the web layer, which imports services only.
from .clinical.assess import assess
from .clinical.errors import ClinicalError, InvalidTitration
from .clinical.model import Assessment, OrderPlan, TitrationRequest
from .clinical.rules.r1_titration import DOSE_RANGE_TEXT, build_schedule
from .clinical.rules.r1_titration import MAX_DOSE_MG as MAX_DOSE_MG
from .clinical.rules.r1_titration import MIN_DOSE_MG as MIN_DOSE_MG
from .clinical.rules.r2_opioid_washout import WASHOUT_DEFAULT, validate_washout
from .clinical.rules.r5_contraindications import HOLD_DAYS_TEXT
from .clinical.rules.r6_follow_up import BENEFITS as BENEFITS
from .clinical.rules.r6_follow_up import DECISIONS as DECISIONS
from .clinical.rules.r6_follow_up import REVIEW_WINDOW_TEXT
from .clinical.rules.r6_follow_up import SIDE_EFFECTS as SIDE_EFFECTS
from .clinical.rules.r6_follow_up import TEXT_MAX as TEXT_MAX
from .clinical.rules.r6_follow_up import Review as Review
from .clinical.rules.r6_follow_up import pain_score as pain_score
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
from .fhir.build import (
    PlannedOrder,
    todays_step,
    transaction_bundle,
)
from .fhir.contract import Gateway, parse_reference
from .fhir.parse import PatientBanner, PatientData, patient_banner
from .fhir.plan import find_written_plan as find_written_plan
from .fhir.write import find_care_plan, find_order, place_order, refused_before_commit
from .follow_up import follow_up as follow_up
from .follow_up import may_have_written_plan as may_have_written_plan
from .follow_up import own_order_keys
from .follow_up import record_review as record_review
from .handout import Handout, handout_for
from .open_servers import BANNER as BANNER
from .open_servers import OPEN_LAUNCH as OPEN_LAUNCH
from .open_servers import PatientSearch as PatientSearch
from .open_servers import is_open as is_open
from .open_servers import launch_record as launch_record
from .open_servers import normalize as normalize
from .open_servers import search_patients as search_patients
from .review import full_date as full_date
from .review import long_date as long_date
from .review import page_context as page_context
from .review import source_refs as source_refs
from .review import verdict_of as verdict_of
from .smart.scopes import missing_undo, missing_write

log = logging.getLogger(__name__)
ORDER_KEY = re.compile(r"^[0-9a-f]{32}$")
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
    other_reason: str | None = None  # why LDN for a reason that is not an R3 indication ("Other")
    baseline_pain: int | None = None  # 0-10 NRS, written as an Observation the CarePlan refers to


def check_order(data: PatientData, req: SignRequest, *, as_of: date, washout_days: int = WASHOUT_DEFAULT,
                data_problems: tuple[str, ...] = ()) -> PlannedOrder:
    """Check a clinician's signed choices against the rules; the plan, its key, review window and step texts.

    Nothing is built to be written here: Preview stops at this; Sign and `ldn-app plan` build the Bundle."""
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
    check_other_reason(assessment, req)
    return PlannedOrder.of(OrderPlan(patient=data.patient_id, assessment=assessment, titration=req.titration,
                                     steps=steps, reasons=assessment.reasons, requester=req.requester,
                                     authored_on=as_of, override_reason=req.override_reason,
                                     attestation=req.attestation, other_reason=req.other_reason,
                                     baseline_pain=req.baseline_pain))


def plan_order(data: PatientData, req: SignRequest, *, as_of: date, washout_days: int = WASHOUT_DEFAULT,
               recorded: datetime | None = None, data_problems: tuple[str, ...] = ()) -> tuple[OrderPlan, dict]:
    """`ldn-app plan`: the checked plan and the transaction Bundle that signing it would send."""
    order = check_order(data, req, as_of=as_of, washout_days=washout_days, data_problems=data_problems)
    return order.plan, order_bundle(order, recorded)


def order_bundle(order: PlannedOrder, recorded: datetime | None = None) -> dict:
    """The transaction Bundle that signing `order` sends (`recorded`: its Provenance time, default now).
    Sign builds it as it sends it; `--replay` shows it instead, sending nothing."""
    return transaction_bundle(order, recorded or datetime.now().astimezone())


@dataclass(frozen=True)
class Preview:
    """What Preview shows: the assessment for the chosen start, and the checked order or why it is refused."""

    assessment: Assessment
    order: PlannedOrder | None
    problems: tuple[str, ...] = ()

    @property
    def steps(self) -> tuple:
        return self.order.steps if self.order else ()

    @property
    def review_from(self) -> date | None:
        return self.order.review_from if self.order else None

    @property
    def review_to(self) -> date | None:
        return self.order.review_to if self.order else None

    @property
    def signable(self) -> bool:
        return self.order is not None and not self.problems


def preview_order(data: PatientData, req: SignRequest, *, as_of: date, washout_days: int = WASHOUT_DEFAULT,
                  data_problems: tuple[str, ...] = ()) -> Preview:
    """The checks of an order, nothing built to be written: the plan, or the assessment and what refuses it."""
    try:
        order = check_order(data, req, as_of=as_of, washout_days=washout_days, data_problems=data_problems)
    except (InputError, WriteRefused) as err:
        assessment = assess_data(data, as_of=as_of, washout_days=washout_days, start=req.titration.start,
                                 reasons=req.reasons or None, data_problems=data_problems)
        return Preview(assessment, None, problems_of(err))
    return Preview(order.plan.assessment, order)


def problems_of(err: InputError | WriteRefused) -> tuple[str, ...]:
    """What a refused form shows: each problem, or the error's message."""
    return tuple(getattr(err, "problems", None) or [err.user_message])


def check_signable(assessment: Assessment, req: SignRequest) -> None:
    """The core's signing policy (clinical.signing), as the app's errors: refused, or input still needed."""
    verdict = signing_verdict(assessment, override_reason=req.override_reason, attestation=req.attestation)
    if isinstance(verdict, Refusal):
        raise WriteRefused("; ".join(verdict.reasons), user_message=f"{verdict.lead} " + " ".join(verdict.reasons))
    if verdict is not None:
        raise InputError(NEED_MESSAGES[verdict])


def check_other_reason(assessment: Assessment, req: SignRequest) -> None:
    """A reason that is not a qualifying indication (R3) - "Other" on the form - needs the prescriber's words."""
    others = [c.name for c in assessment.conditions if c.resource in req.reasons and "indication" not in c.categories]
    if others and not (req.other_reason or "").strip():
        raise InputError(f"Other reason ({', '.join(others)}) is not a qualifying indication (R3): type why LDN is "
                         "ordered for it.")


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


def sign_order(gateway: Gateway, order: PlannedOrder, permissions, recorded: datetime | None = None) -> SignOutcome:
    """Write one checked order (its Bundle built only now) and say truthfully what happened: written, not
    written, or unknown.

    Unknown (timeout, reset, 5xx, an answer we cannot read) is resolved by looking the order up by
    its key: found active -> written; otherwise it stays unknown, with the same idempotent retry.
    """
    key = order.key
    blockers = write_blockers(gateway, permissions)
    if blockers:
        raise SigningNotAllowed("; ".join(blockers), user_message=" ".join(blockers))
    bundle = order_bundle(order, recorded)
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


def patients_order(gateway: Gateway, key: str, patient_id: str) -> dict:
    """Order `key` as this app wrote it, read back from the EHR; never another patient's (InputError)."""
    order = find_order(gateway, key) if ORDER_KEY.match(key) else None
    if order is None or order["patient"] != patient_id:
        raise InputError("No order with that reference for this patient.")
    return order


def patient_handout(gateway: Gateway, key: str, patient_id: str, prescriber_ref: str | None,
                    may_read: Callable[[str], bool]) -> Handout:
    """The printable handout of this patient's order `key`: prescriber and clinic read only when `may_read`."""
    return handout_for(gateway, patients_order(gateway, key, patient_id), patient_id, prescriber_ref, may_read)


def confirmed_order(gateway: Gateway, key: str, patient_id: str, saved: Mapping) -> tuple[dict, PatientBanner]:
    """The confirmation of order `key`, rebuilt from the EHR (never another patient's), and its patient's banner.

    `saved` is what the signing launch kept (`confirmation_record`): the refs the server confirmed and the banner
    it signed under, which saves a Patient read; without it (another launch) the Patient and CarePlan are read."""
    order = patients_order(gateway, key, patient_id)
    banner = _saved_banner(saved.get("patient"), patient_id) or read_banner(gateway, patient_id)
    refs = (parse_reference(r) for r in saved.get("refs", ()))
    confirmed = {ref.resource_type: ref.text for ref in refs if ref and ref.resource_type}
    if "CarePlan" not in confirmed and order["status"] == "active":  # another launch: ask the server
        care_plan = find_care_plan(gateway, key)
        confirmed.update({"CarePlan": care_plan} if care_plan else {})
    order["refs"] = {**confirmed, **order["refs"]}  # the server's MedicationRequest wins
    return order, banner


def confirmation_record(outcome: SignOutcome, data: PatientData) -> dict:
    """What a signing launch keeps for its confirmation page: the confirmed refs and the patient's banner."""
    return {"refs": list(outcome.refs), "patient": asdict(data.banner)}


def in_chart(order: PlannedOrder, data: PatientData) -> bool:
    """Whether the record already holds this order, active (a resubmit after success: nothing to send)."""
    return order.key in own_order_keys(data)


def _saved_banner(saved: object, patient_id: str) -> PatientBanner | None:
    if not isinstance(saved, dict) or saved.get("id") != patient_id:
        return None
    try:
        return PatientBanner(**saved)
    except TypeError:
        return None


def read_banner(gateway: Gateway, patient_id: str) -> PatientBanner:
    """The patient's banner, read from the EHR (a Patient that cannot be read: named by its id)."""
    try:
        return patient_banner(gateway.read("Patient", patient_id), patient_id)
    except AppError as err:
        log.warning("Patient/%s not readable for the banner: %s", patient_id, type(err).__name__)
        return PatientBanner(patient_id)


def check_patient_exists(gateway: Gateway, patient_id: str) -> None:
    """Refuse (InputError) a patient id the server does not hold; other failures are raised as they are."""
    try:
        gateway.read("Patient", patient_id)
    except FhirServerError as err:
        if err.http_status in (404, 410):
            raise InputError(f"There is no Patient/{patient_id} on this server.") from None
        raise


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


