"""Flask routes of the SMART launch: /launch, /callback, /.well-known/jwks.json; and init_app."""

from __future__ import annotations

import requests
from flask import Blueprint, Flask, current_app, g, jsonify, redirect, render_template, request, session

from smart_app.errors import AppError
from smart_app.smart import oauth
from smart_app.smart.store import ServerSideSessionInterface, make_store

bp = Blueprint("smart", __name__)


def init_app(app: Flask) -> None:
    """Back `flask.session` with the server-side store named by SESSION_STORE."""
    store = make_store(app.config)
    app.extensions["smart.store"] = store
    app.session_interface = ServerSideSessionInterface(store)
    app.teardown_appcontext(_close_http)


def http() -> requests.Session:
    """The outbound HTTP session of this request (closed at teardown)."""
    if "smart_http" not in g:
        g.smart_http = requests.Session()
    return g.smart_http


def _close_http(_exc: BaseException | None) -> None:
    client = g.pop("smart_http", None)
    if client is not None:
        client.close()


@bp.get("/launch")
def launch():
    """EHR launch (iss + launch) or standalone launch (iss, or DEFAULT_ISS)."""
    iss = request.args.get("iss") or current_app.config.get("DEFAULT_ISS") or None
    url = oauth.begin_launch(current_app.config, iss, request.args.get("launch"), session, http())
    return _no_store(redirect(url))


@bp.get("/callback")
def callback():
    """The authorization server's redirect: code exchange, then a fresh session id."""
    oauth.complete_launch(current_app.config, request.args, session, http())
    session.regenerate()  # logged in now: new id, the pre-login id is dropped (fixation)
    response = _no_store(redirect("/"))
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/.well-known/jwks.json")
def jwks():
    """Our public key(s) for private_key_jwt client authentication."""
    response = jsonify(oauth.public_jwks(current_app.config))
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
