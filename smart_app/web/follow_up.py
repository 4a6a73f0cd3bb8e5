"""The follow-up pages: the LDN plan this app wrote, where it stands today, and the recorded 8-12 week review."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from flask import Blueprint, redirect, render_template, request, url_for

from ..errors import FhirServerError, InputError, WriteRefused
from ..services import (
    BENEFITS,
    DECISIONS,
    SIDE_EFFECTS,
    TEXT_MAX,
    Review,
    TitrationRequest,
    assess_data,
    find_written_plan,
    follow_up,
    pain_score,
    record_review,
)
from . import views

bp = Blueprint("follow_up", __name__)


@dataclass
class ReviewForm:
    """The review inputs as typed, so a refused form comes back unchanged (oversized text never)."""

    pain: str = ""
    benefit: str = ""
    side_effects: list[str] = field(default_factory=list)
    side_effect_text: str = ""
    decision: str = ""
    stop_reason: str = ""
    start: str = ""
    start_dose: str = "1.5"
    step: str = "1.5"
    interval: str = "14"
    target: str = "4.5"
    supply_days: str = "30"

    problems: list[str] = field(default_factory=list)  # values refused on arrival (too long: never echoed)

    @classmethod
    def from_request(cls) -> ReviewForm:
        f, problems = request.form, list[str]()
        values = {name: views._bounded(problems, label, f.get(name, ""), limit) for name, label, limit in (
            ("pain", "Pain score today", views.VALUE_MAX), ("benefit", "Benefit", views.VALUE_MAX),
            ("side_effect_text", "Other side effects", TEXT_MAX), ("decision", "Decision", views.VALUE_MAX),
            ("stop_reason", "Reason to stop", TEXT_MAX), ("start", "New start date", views.VALUE_MAX),
            ("start_dose", "Start dose", views.VALUE_MAX), ("step", "Increase per step", views.VALUE_MAX),
            ("interval", "Days per step", views.VALUE_MAX), ("target", "Target dose", views.VALUE_MAX),
            ("supply_days", "Supply", views.VALUE_MAX))}
        side_effects = f.getlist("side_effect")
        if len(side_effects) > len(SIDE_EFFECTS) or any(len(v) > views.VALUE_MAX for v in side_effects):
            problems.append("Side effects: choose from the list.")
            side_effects = []
        return cls(**{k: v.strip() for k, v in values.items()}, side_effects=side_effects, problems=problems)

    def review(self) -> Review:
        problems = list(self.problems)
        pain, problem = pain_score(self.pain, "Pain score today")
        problems += [problem] if problem else []
        titration = self._titration(problems) if self.decision == "adjust" else None
        if problems:
            raise InputError(problems)
        return Review(pain, self.benefit, tuple(self.side_effects), self.side_effect_text, self.decision,
                      self.stop_reason, titration)

    def _titration(self, problems: list[str]) -> TitrationRequest | None:
        start = views._parse(problems, "New start date", self.start, date.fromisoformat)
        values = {name: views._parse(problems, label, getattr(self, name), kind) for name, label, kind in (
            ("start_dose", "Start dose", float), ("step", "Step", float), ("interval", "Interval", int),
            ("target", "Target dose", float), ("supply_days", "Supply", int))}
        if None in (start, *values.values()):
            return None
        return TitrationRequest(start=start, start_dose_mg=values["start_dose"], step_mg=values["step"],
                                interval_days=values["interval"], target_mg=values["target"],
                                supply_days=values["supply_days"])


def render_follow_up(ctx, plan, *, form: ReviewForm | None = None, errors=(), status=200):
    data, problems = views._load(ctx)
    assessment = assess_data(data, as_of=views.today(), washout_days=views._washout(), data_problems=problems)
    shown = follow_up(plan, data, assessment, problems, views.today())
    form = form or ReviewForm(start=views.today().isoformat())
    page = render_template("follow_up.html", ctx=ctx, patient=data.banner, shown=shown, form=form,
                           errors=list(errors), blocked=views.signing_blocked(ctx), benefits=BENEFITS,
                           decisions=DECISIONS, side_effects=SIDE_EFFECTS, text_max=TEXT_MAX)
    return page, status


@bp.get("/follow-up")
def show():
    ctx = views.smart_context()
    plan = find_written_plan(views.gateway(), ctx.patient)
    if plan is None:
        return redirect(url_for("web.review", lid=ctx.launch_id, assess=1), code=303)
    return render_follow_up(ctx, plan)


@bp.post("/follow-up/review")
def record():
    ctx = views.smart_context()
    form = ReviewForm.from_request()
    plan = find_written_plan(views.gateway(), ctx.patient)
    if plan is None:
        return redirect(url_for("web.review", lid=ctx.launch_id, assess=1), code=303)
    blocked = views.signing_blocked(ctx)
    if blocked:
        return render_follow_up(ctx, plan, form=form, errors=[blocked], status=403)
    data, problems = views._load(ctx)
    assessment = assess_data(data, as_of=views.today(), washout_days=views._washout(), data_problems=problems)
    try:
        outcome = record_review(views.gateway(), ctx.patient, form.review(), assessment, as_of=views.today(),
                                requester=ctx.prescriber)
    except (InputError, WriteRefused) as err:
        return render_follow_up(ctx, plan, form=form, errors=getattr(err, "problems", [err.user_message]),
                                status=err.status)
    except FhirServerError as err:
        return render_follow_up(ctx, plan, form=form, status=err.status, errors=[
            err.user_message, *err.diagnostics, "If the EHR did not answer, the review may or may not be written: "
            "reload this page to see; recording the same review again is safe (the same review key)."])
    return render_template("review_done.html", ctx=ctx, patient=data.banner, outcome=outcome)
