"""The clinician's pages: review, preview, sign, confirmation; and GET /api/assessment. Services only.

Every page belongs to one launch, named by `lid` (query or hidden form field); the launch record
must belong to this browser's server-side session. Every POST is checked in one place
(`check_post`): its launch, CSRF token and patient.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, session, url_for

from ..errors import (
    CsrfError,
    InputError,
    LaunchMismatch,
    SessionExpired,
    SessionStoreUnavailable,
    SigningNotAllowed,
    WriteRefused,
)
from ..services import (
    MAX_DOSE_MG,
    MIN_DOSE_MG,
    OPEN_LAUNCH,
    RULE_TEXT,
    TEXT_MAX,
    Assessment,
    Outcome,
    PatientData,
    Preview,
    SignRequest,
    TitrationRequest,
    assess_data,
    assessment_to_json,
    check_order,
    confirmation_record,
    confirmed_order,
    find_written_plan,
    full_date,
    in_chart,
    long_date,
    may_have_written_plan,
    order_bundle,
    own_orders,
    page_context,
    pain_score,
    patient_handout,
    preview_order,
    problems_of,
    read_patient,
    sign_order,
    source_refs,
    verdict_of,
    write_blockers,
)
from ..smart import oauth
from ..smart.blueprint import current_settings, http, launches

bp = Blueprint("web", __name__)
WROTE = "ldn_wrote"  # session key: a write happened; later reads bypass server caches
_ORDER_LOCKS = tuple(threading.Lock() for _ in range(64))  # striped: bounded memory, per-decision exclusion

def security_headers(response):
    """Framing only by the configured EHR origins; no caching of PHI; no sniffing."""
    ancestors = current_settings().frame_ancestors or "'self'"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        f"form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors {ancestors}")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-store"
    return response


# --- request plumbing ------------------------------------------------------------------------

def today() -> date:
    return current_settings().today()  # the app's clock (tests stop it)


def smart_context() -> oauth.SmartContext:
    """The launch this request names (`lid`), if it is this browser's; else the session has ended."""
    if "smart_ctx" not in g:
        ctx = oauth.current_context(launches(), request.values.get("lid"))
        if ctx is None:
            raise SessionExpired("no launch of this browser matches lid")
        g.smart_ctx = ctx
    return g.smart_ctx


def gateway():
    """The one FHIR gateway of this request, made by the app's `gateway_factory` (tests replace it)."""
    if "gateway" not in g:
        ctx = smart_context()
        provider = None if ctx.launch_mode == OPEN_LAUNCH else oauth.token_provider(
            current_settings(), launches(), ctx.launch_id, http())
        g.gateway = current_app.extensions["gateway_factory"](current_settings(), ctx.iss, provider)
        if session.get(WROTE):
            g.gateway.assume_written()
    return g.gateway


@bp.before_app_request
def check_post() -> None:
    """Every POST, in one place: its launch is this browser's, its CSRF token is that launch's, and
    the patient it names is that launch's patient. Otherwise refused before any view runs.
    CDS Hooks calls are not browser POSTs: the EHR's signed JWT authenticates them (smart_app/cds)."""
    if request.method != "POST" or request.blueprint == "cds":
        return
    form = request.form
    claimed = form.get("patient_label") or f"Patient/{form.get('patient') or '(none named)'}"
    ctx = oauth.current_context(launches(), form.get("lid"))
    if ctx is None:
        raise LaunchMismatch("POST names no launch of this browser", user_message=(
            f"Refused - nothing was written. This form is for {claimed}, but its launch is not open in this "
            "browser (it ended, or it belongs to another browser). Launch the app again from the patient's chart."))
    if not secrets.compare_digest(form.get("csrf_token", "").encode(), ctx.csrf.encode()):
        raise CsrfError("CSRF token missing or wrong")
    g.smart_ctx = ctx
    if form.get("patient") != ctx.patient:
        raise LaunchMismatch("POST patient differs from its launch's patient", user_message=(
            f"Refused - nothing was written. This form names {claimed}, but its launch is for "
            f"{launched_patient_label(ctx)}. Reload the page of the patient you mean to treat."))


def launched_patient_label(ctx: oauth.SmartContext) -> str:
    """Name and birth date of the launch's patient, read from the EHR (its id when unreadable)."""
    data, problems = _load(ctx)
    return data.banner.label if not problems else f"Patient/{ctx.patient}"


@bp.app_context_processor
def _template_helpers():
    return {"anchor": lambda ref: "r-" + ref.replace("/", "-"), "long_date": long_date,
            "full_date": full_date, "source_refs": source_refs, "rule_text": RULE_TEXT}


# --- the form --------------------------------------------------------------------------------

@dataclass(frozen=True)
class NumberField:
    """One numeric input: the HTML form's min/max/step and the server's check come from here."""

    name: str
    label: str
    kind: type
    low: float
    high: float
    step: float

    def parse(self, raw: str, problems: list[str]):
        value = _parse(problems, self.label, raw, self.kind)
        if value is None:
            return None
        if not math.isfinite(value) or not self.low <= value <= self.high:
            problems.append(f"{self.label}: {raw.strip()} is outside the form's limits ({self.low:g} to "
                            f"{self.high:g}).")
            return None
        if abs(value / self.step - round(value / self.step)) > 1e-9:
            problems.append(f"{self.label}: {raw.strip()} is not a multiple of {self.step:g}.")
            return None
        return value


NUMBER_FIELDS = (
    NumberField("start_dose", "Start dose", float, MIN_DOSE_MG, MAX_DOSE_MG, 0.25),
    NumberField("step", "Increase per step", float, 0.25, MAX_DOSE_MG - MIN_DOSE_MG, 0.25),
    NumberField("interval", "Days per step", int, 1, 60, 1),
    NumberField("target", "Target dose", float, MIN_DOSE_MG, MAX_DOSE_MG, 0.25),
)
LIMITS = {f.name: f for f in NUMBER_FIELDS}
SUPPLY_CHOICES = ("30", "60", "90")
START_HORIZON_DAYS = 365  # a start further ahead is a typing error (and would outlive the compounded supply)
VALUE_MAX = 64  # any other single value (numbers, dates, references)
MAX_REASONS = 20


@dataclass
class OrderForm:
    """The clinician's inputs, kept as typed so a rejected form comes back unchanged (oversized values never)."""

    start: str = ""
    start_dose: str = "1.5"
    step: str = "1.5"
    interval: str = "14"
    target: str = "4.5"
    supply_days: str = "30"
    reasons: list[str] = field(default_factory=list)
    override_reason: str = ""
    other_reason: str = ""
    attest: bool = False
    attestation: str = ""
    baseline_pain: str = ""
    problems: list[str] = field(default_factory=list)  # values refused on arrival (too long)

    @classmethod
    def from_request(cls) -> OrderForm:
        f, problems = request.form, list[str]()
        values = {name: _bounded(problems, label, f.get(name, ""), limit) for name, label, limit in (
            ("start", "Start date", VALUE_MAX), ("start_dose", "Start dose", VALUE_MAX),
            ("step", "Increase per step", VALUE_MAX), ("interval", "Days per step", VALUE_MAX),
            ("target", "Target dose", VALUE_MAX), ("supply_days", "Supply", VALUE_MAX),
            ("baseline_pain", "Baseline pain score", VALUE_MAX), ("override_reason", "Reason to proceed", TEXT_MAX),
            ("other_reason", "Why LDN for this condition", TEXT_MAX), ("attestation", "Attestation note", TEXT_MAX))}
        reasons = f.getlist("reason")
        if len(reasons) > MAX_REASONS or any(len(r) > VALUE_MAX for r in reasons):
            problems.append(f"Reason for the order: at most {MAX_REASONS} conditions may be chosen.")
            reasons = []
        return cls(**{k: v.strip() for k, v in values.items()}, reasons=reasons, attest=f.get("attest") == "yes",
                   problems=problems)

    def sign_request(self, requester: str | None) -> SignRequest:
        problems = list(self.problems)
        start = self._start(problems)
        values = {f.name: f.parse(getattr(self, f.name), problems) for f in NUMBER_FIELDS}
        if self.supply_days not in SUPPLY_CHOICES:
            problems.append(f"Supply: choose {', '.join(SUPPLY_CHOICES)} days.")
        baseline, problem = pain_score(self.baseline_pain, "Baseline pain score")
        problems += [problem] if problem else []
        if problems or start is None:  # (no start is a problem above)
            raise InputError(problems)
        attestation = (self.attestation or "Clinician attests the unreadable or unclassified data were checked "
                       "and are not opioid exposure.") if self.attest else None
        titration = TitrationRequest(start=start, start_dose_mg=values["start_dose"], step_mg=values["step"],
                                     interval_days=values["interval"], target_mg=values["target"],
                                     supply_days=int(self.supply_days))
        return SignRequest(titration=titration, reasons=tuple(self.reasons), requester=requester,
                           override_reason=self.override_reason or None, attestation=attestation,
                           other_reason=self.other_reason or None, baseline_pain=baseline)

    def _start(self, problems: list[str]) -> date | None:
        start = _parse(problems, "Start date", self.start, date.fromisoformat)
        low, high = start_range()
        if start is not None and not low <= start <= high:
            problems.append(f"Start date: {start} is outside {low} to {high}.")
            return None
        return start


def start_range() -> tuple[date, date]:
    """The start dates the form accepts: today to a year ahead."""
    return today(), today() + timedelta(days=START_HORIZON_DAYS)


def _bounded(problems: list[str], label: str, raw: str, limit: int) -> str:
    """The value, or "" (never echoed back) with a problem naming the field when it is too long."""
    if len(raw) > limit:
        problems.append(f"{label}: at most {limit} characters (got {len(raw)}).")
        return ""
    return raw


def _parse(problems: list[str], label: str, raw: str, kind):
    try:
        return kind(raw.strip())
    except (ValueError, AttributeError, OverflowError):
        problems.append(f"{label}: '{raw}' is not a valid {'number' if kind in (int, float) else 'date'}.")
        return None


def default_form(assessment: Assessment) -> OrderForm:
    start = max(today(), assessment.earliest_start_date or today())
    return OrderForm(start=start.isoformat(), reasons=list(assessment.reasons))


# --- pages -----------------------------------------------------------------------------------

def _load(ctx) -> tuple[PatientData, tuple[str, ...]]:
    return read_patient(gateway(), ctx.patient, unreadable_types=ctx.missing_read)


def _washout() -> int:
    return current_settings().washout_days


def render_review(ctx, data, problems, *, form: OrderForm | None = None, preview: Preview | None = None, errors=(),
                  status=200, outcome=None):
    current = assess_data(data, as_of=today(), washout_days=_washout(), data_problems=problems)
    form = form or default_form(current)
    blocked = signing_blocked(ctx)
    shown = page_context(current, data.medications, today(), chosen=form.reasons, drug=request.args.get("drug"),
                         override=form.override_reason, attest=form.attest)
    if preview:
        shown |= {"preview_verdict": verdict_of(preview.assessment),
                  "preview_start": preview.assessment.start_date}
    page = render_template(
        "review.html", ctx=ctx, patient=data.banner, ehr_warnings=data.warnings, assessment=current,
        form=form, preview=preview, errors=list(errors), blocked=blocked, can_write=not blocked, today=today(),
        outcome=outcome, own_orders=own_orders(gateway(), data, today()), limits=LIMITS,
        supply_choices=SUPPLY_CHOICES, start_range=start_range(), text_max=TEXT_MAX,
        **shown)
    return page, status


def signing_blocked(ctx: oauth.SmartContext) -> str | None:
    """Why this launch may not sign (no write grant, no undo on a server without transactions, no known
    prescriber), or None."""
    blockers = write_blockers(gateway(), ctx.permissions)
    if blockers:
        return "Signing is disabled: " + " ".join(blockers)
    if ctx.prescriber_problem:
        return f"Signing is disabled: {ctx.prescriber_problem}. Signing needs a prescriber identified by the EHR."
    return None


def opens_on_follow_up(ctx, data) -> bool:
    """Issue 12: a launch for a patient with an active LDN plan this app wrote opens on that plan - unless
    this launch wrote it (it stays on the review page with the order's confirmation) or asks for the assessment."""
    if request.args.get("assess") or not may_have_written_plan(data):
        return False
    plan = find_written_plan(gateway(), ctx.patient)
    if plan is None:
        return False
    try:
        return launches().order(ctx.launch_id, plan.key) is None
    except SessionStoreUnavailable:
        return True


@bp.get("/")
def review():
    ctx = smart_context()
    data, problems = _load(ctx)
    if opens_on_follow_up(ctx, data):
        return redirect(url_for("follow_up.show", lid=ctx.launch_id), code=303)
    return render_review(ctx, data, problems)


@bp.post("/preview")
def preview():
    """The checks of the order only: the plan (steps, review window) or why it is refused; nothing built to write."""
    ctx = smart_context()
    data, problems = _load(ctx)
    form = OrderForm.from_request()
    try:
        req = form.sign_request(ctx.prescriber)
    except InputError as err:
        return render_review(ctx, data, problems, form=form, errors=err.problems, status=400)
    shown = preview_order(data, req, as_of=today(), washout_days=_washout(), data_problems=problems)
    return render_review(ctx, data, problems, form=form, preview=shown)


def _lock_for(key: str) -> threading.Lock:
    return _ORDER_LOCKS[int(key[:8], 16) % len(_ORDER_LOCKS)]


@bp.post("/sign")
def sign():
    """Sign: written -> the confirmation; not written / unknown -> the form again, saying which."""
    ctx = smart_context()
    form = OrderForm.from_request()
    data, problems = _load(ctx)
    blocked = signing_blocked(ctx)
    if blocked:
        return render_review(ctx, data, problems, form=form, status=SigningNotAllowed.status, errors=[blocked])
    try:
        order = check_order(data, form.sign_request(ctx.prescriber), as_of=today(), washout_days=_washout(),
                            data_problems=problems)
    except (InputError, WriteRefused) as err:
        return render_review(ctx, data, problems, form=form, errors=problems_of(err), status=err.status)
    if in_chart(order, data):  # a resubmit after success: nothing to send
        return redirect(url_for("web.done", key=order.key, lid=ctx.launch_id), code=303)
    if current_app.config.get("REPLAY"):  # `--replay`: show what would be sent; there is no server to write to
        return render_template("replay_sign.html", ctx=ctx, patient=data.banner, key=order.key,
                               bundle_json=json.dumps(order_bundle(order), indent=2, ensure_ascii=False))
    with _lock_for(order.key):  # a double click waits here; the conditional create makes its resend a no-op
        outcome = sign_order(gateway(), order, ctx.permissions)
    g.sign_outcome = outcome  # error pages still tell the outcome if the session store fails from here on
    session[WROTE] = True
    if outcome.outcome is Outcome.WRITTEN:
        launches().save_order(ctx.launch_id, order.key, confirmation_record(outcome, data))
        return redirect(url_for("web.done", key=order.key, lid=ctx.launch_id), code=303)
    status = 409 if outcome.outcome is Outcome.NOT_WRITTEN else 502
    return render_review(ctx, data, problems, form=form, preview=Preview(order.plan.assessment, order),
                         outcome=outcome, status=status)


@bp.get("/handout/<key>")
def handout(key: str):
    """The printable patient handout of an order this launch's patient has (read back like the confirmation)."""
    ctx = smart_context()
    shown = patient_handout(gateway(), key, ctx.patient, ctx.prescriber,
                            lambda resource_type: ctx.permissions.allows(resource_type, "r"))
    return render_template("handout.html", h=shown, ctx=ctx)


@bp.get("/done/<key>")
def done(key: str):
    """The confirmation, rebuilt from the EHR by the order key (the launch only adds the refs it saw confirmed)."""
    ctx = smart_context()
    try:
        saved = launches().order(ctx.launch_id, key) or {}
    except SessionStoreUnavailable:
        saved = {}
    order, banner = confirmed_order(gateway(), key, ctx.patient, saved)
    return render_template("done.html", order=order, patient=banner, ctx=ctx)


@bp.get("/api/assessment")
def api_assessment():
    ctx = smart_context()
    data, problems = _load(ctx)
    return jsonify(assessment_to_json(assess_data(data, as_of=today(), washout_days=_washout(),
                                                  data_problems=problems)))
