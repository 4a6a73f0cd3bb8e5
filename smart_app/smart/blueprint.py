"""Flask routes of the SMART launch: /launch, /callback, /logout, /.well-known/jwks.json; and init_app."""

from __future__ import annotations

from urllib.parse import urlencode

import requests
from flask import Blueprint, Flask, current_app, g, jsonify, redirect, render_template, request, session, url_for

from smart_app.config import Settings, SettingsError
from smart_app.errors import AppError
from smart_app.open_servers import is_open, normalize
from smart_app.smart import oauth
from smart_app.smart.launches import Launches
from smart_app.smart.store import ServerSideSession, ServerSideSessionInterface, make_store, new_session_id

bp = Blueprint("smart", __name__)
OWNER = "bid"  # flask.session key: this browser's owner id (launch records name it)
LAUNCH_IDS = "launch_ids"  # flask.session key: this browser's launch ids (deleted at /logout)
MAX_LAUNCH_IDS = 20


def init_app(app: Flask) -> None:
    """Back `flask.session` with the server-side store named by SESSION_STORE."""
    settings: Settings = app.extensions["settings"]
    try:
        oauth.public_jwks(settings)  # an unusable key stops the start, not the first token request
    except AppError as err:
        raise SettingsError(f"LDN_PRIVATE_KEY_FILE={settings.private_key_file!r}: {err.detail}") from None
    store = make_store(settings)
    app.extensions["smart.store"] = store
    app.session_interface = ServerSideSessionInterface(store)
    app.before_request(_store_reachable)
    app.teardown_appcontext(_close_http)


def _store_reachable() -> None:
    """A store failure while opening the session becomes the store's own page, not a bare 500."""
    error = getattr(session, "store_error", None)
    if error is not None:
        raise error


def http() -> requests.Session:
    """The outbound HTTP session of this request (closed at teardown)."""
    if "smart_http" not in g:
        g.smart_http = requests.Session()
    return g.smart_http


def _close_http(_exc: BaseException | None) -> None:
    client = g.pop("smart_http", None)
    if client is not None:
        client.close()


def current_settings() -> Settings:
    """The Settings of the app handling this request (built by create_app)."""
    return current_app.extensions["settings"]


def launches() -> Launches:
    """This browser's launches (owner None before its first /launch: it holds none)."""
    return _launches(session.get(OWNER))


def _launches(owner: str | None) -> Launches:
    return Launches(current_app.extensions["smart.store"], owner, current_settings())


@bp.get("/launch")
def launch():
    """EHR launch (iss + launch) or standalone launch (iss, or DEFAULT_ISS). A session (and cookie)
    is created only once the iss is allowed and the pending launch fits under the cap."""
    settings = current_settings()
    iss = request.args.get("iss") or settings.default_iss or None
    if iss and not request.args.get("launch") and is_open(settings, iss):  # no SMART: pick a patient
        return _no_store(redirect(url_for("open.patients", iss=normalize(iss))))
    owner = session.get(OWNER) or new_session_id()
    mine = _launches(owner)
    url = oauth.begin_launch(settings, iss, request.args.get("launch"), mine, http(),
                             current_app.extensions.get("fhir.documents"))
    session[OWNER] = owner
    return _no_store(redirect(url))


@bp.get("/callback")
def callback():
    """The authorization server's redirect: code exchange, a new launch, then a fresh session id."""
    context = oauth.complete_launch(current_settings(), request.args, launches(), http())
    response = open_review(context.launch_id)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def open_review(launch_id: str):
    """Remember a completed launch in this browser's session (new session id) and go to its review page."""
    session[LAUNCH_IDS] = [*session.get(LAUNCH_IDS, []), launch_id][-MAX_LAUNCH_IDS:]
    assert isinstance(session, ServerSideSession), "init_app installs the server-side session"
    session.regenerate()  # logged in now: new id, the pre-login id is dropped (fixation)
    return _no_store(redirect("/?" + urlencode({"lid": launch_id})))


def owned_launches() -> Launches:
    """This browser's launches, giving the browser its owner id first if it has none yet."""
    session[OWNER] = session.get(OWNER) or new_session_id()
    return _launches(session[OWNER])


@bp.post("/logout")
def logout():
    """Delete this browser's server-side session and its launches (tokens included)."""
    mine = launches()
    for launch_id in session.get(LAUNCH_IDS, []):
        mine.delete(launch_id)
    session.clear()
    return _no_store(current_app.make_response(
        render_template("error.html", title="Signed out", message="You are signed out of the LDN app. "
                        "Launch it again from the EHR to continue.")))


@bp.get("/.well-known/jwks.json")
def jwks():
    """Our public key(s) for private_key_jwt client authentication."""
    response = jsonify(oauth.public_jwks(current_settings()))
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.errorhandler(AppError)
def launch_failed(err: AppError):
    """A safe page: the error's user message only (no detail, no stack trace, no token)."""
    current_app.logger.warning("SMART %s: %s", type(err).__name__, err.detail)
    return _no_store(current_app.make_response((render_template("error.html", message=err.user_message),
                                                err.status)))


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response
