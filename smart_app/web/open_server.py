"""Open-server pages: `/launch?iss=<LDN_OPEN_SERVERS base>` lands on a patient search; a pick opens the review."""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request, url_for

from ..errors import AppError, InputError, LaunchError
from ..services import (
    BANNER,
    OPEN_LAUNCH,
    PatientSearch,
    check_patient_exists,
    is_open,
    launch_record,
    normalize,
    search_patients,
)
from ..smart.blueprint import current_settings, open_review, owned_launches
from ..smart.store import new_session_id

bp = Blueprint("open", __name__, url_prefix="/open")
CURSOR_SECONDS = 600  # a results page's previous/next links stay usable this long


@bp.app_context_processor
def _banner():
    """The open-server banner, on every page of an open-server search or launch."""
    ctx = g.get("smart_ctx")
    shown = g.get("open_server") or (ctx is not None and ctx.launch_mode == OPEN_LAUNCH)
    return {"open_server_banner": BANNER if shown else None}


def _open_iss() -> str:
    iss = request.args.get("iss", "")
    if not is_open(current_settings(), iss):
        raise LaunchError("iss is not on OPEN_SERVERS", user_message="This EHR is not registered with the app.")
    g.open_server = True
    return normalize(iss)


def _gateway(iss: str):
    return current_app.extensions["gateway_factory"](current_settings(), iss, None)


@bp.get("/patients")
def patients():
    """Search form and one page of results, paged with the server's own links (kept server-side)."""
    iss = _open_iss()
    search = PatientSearch.from_args(request.args)
    try:
        search.check()
    except InputError as err:
        return _page(iss, search, None, err.problems, 400)
    try:
        page = search_patients(_gateway(iss), search, _cursor_url(iss, request.args.get("page")))
    except AppError as err:
        current_app.logger.warning("open server patient search failed: %s", err.detail)
        return _page(iss, search, None, [err.user_message], err.status)
    return _page(iss, search, page, [], 200)


@bp.get("/review")
def review():
    """A picked patient: a launch context of its own (no token), then the normal review page."""
    iss = _open_iss()
    patient = request.args.get("patient", "")
    PatientSearch(patient_id=patient).check()
    check_patient_exists(_gateway(iss), patient)
    launch_id = owned_launches().create(launch_record(current_settings(), iss, patient))
    current_app.logger.info("open-server launch for %s (patient %s)", iss, patient)
    return open_review(launch_id)


def _cursor_url(iss: str, cursor: str | None) -> str | None:
    if not cursor:
        return None
    saved = current_app.extensions["smart.store"].get("opencursor:" + cursor)
    if not saved or saved.get("iss") != iss:
        raise InputError("These search results have expired. Please search again.")
    return saved["url"]


def _cursor(iss: str, url: str | None) -> str | None:
    if not url:
        return None
    cursor = new_session_id()
    current_app.extensions["smart.store"].set("opencursor:" + cursor, {"iss": iss, "url": url}, CURSOR_SECONDS)
    return cursor


def _page(iss: str, search: PatientSearch, page, errors: list[str], status: int):
    links = {}
    if page is not None:
        for label, url in (("previous", page.previous_url), ("next", page.next_url)):
            cursor = _cursor(iss, url)
            if cursor:
                links[label] = url_for("open.patients", iss=iss, name=search.name or None,
                                       birthdate=search.birth_date or None, id=search.patient_id or None, page=cursor)
    html = render_template("open_patients.html", iss=iss, search=search, page=page, errors=errors, links=links)
    return html, status
