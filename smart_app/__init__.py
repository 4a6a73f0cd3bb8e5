"""Low-dose naltrexone (LDN) decision support: a SMART on FHIR R4 app. `create_app` is the factory."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from datetime import date

from flask import Flask, g, render_template

from .config import Settings, setting_names
from .errors import AppError

TEST_DAY = "TODAY"  # create_app({"TODAY": "2025-01-31"}): the app's clock stopped on that day (tests)


def create_app(config: Mapping | None = None, *, clock: Callable[[], float] | None = None) -> Flask:
    """The app: Settings (defaults < LDN_* environment < `config`, checked here: a bad value raises
    SettingsError naming its variable), the clock, logging, blueprints, error pages. Keys of `config`
    that are not settings go to Flask's config (TESTING...)."""
    settings = Settings.from_env(os.environ, config, clock)
    if config and config.get(TEST_DAY):
        settings = settings.frozen_at(date.fromisoformat(str(config[TEST_DAY])))
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config.update({k: v for k, v in (config or {}).items() if k != TEST_DAY and k not in setting_names()})
    app.config.update(SECRET_KEY=settings.secret_key or secrets.token_hex(32), SESSION_COOKIE_SECURE=settings.https,
                      PREFERRED_URL_SCHEME="https" if settings.https else "http",
                      MAX_CONTENT_LENGTH=settings.max_content_length)
    app.extensions["settings"] = settings
    logging.getLogger("smart_app").setLevel(settings.log_level.upper())

    from .cds import blueprint as cds
    from .fhir.gateway import GatewayFactory
    from .smart import blueprint as smart
    from .web import follow_up, health, open_server, views

    smart.init_app(app)
    app.extensions["gateway_factory"] = factory = GatewayFactory(settings)  # (settings, iss, token_provider)
    app.extensions["fhir.documents"] = factory.documents  # per-issuer discovery + CapabilityStatement cache
    cds.init_app(app)
    app.register_blueprint(smart.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(follow_up.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(cds.bp)
    app.register_blueprint(open_server.bp)
    _error_pages(app)
    app.after_request(views.security_headers)
    return app


def _error_pages(app: Flask) -> None:
    @app.errorhandler(AppError)
    def app_error(err: AppError):
        app.logger.warning("%s: %s", type(err).__name__, err.detail)
        return render_template("error.html", message=err.user_message, outcome=g.get("sign_outcome")), err.status

    @app.errorhandler(404)
    def not_found(_err):
        return render_template("error.html", message="There is no such page."), 404

    @app.errorhandler(405)
    def not_allowed(_err):
        return render_template("error.html", message="That action is not available here."), 405

    @app.errorhandler(413)
    def too_large(_err):
        limit = app.config["MAX_CONTENT_LENGTH"]
        return render_template("error.html", message=f"The form sent was too large (at most {limit} bytes); "
                                                     "nothing was accepted."), 413

    @app.errorhandler(500)
    def server_error(err):
        """Also what a failure after the view gives (saving the session): the sign outcome, if one is known."""
        cause = getattr(err, "original_exception", None)
        message, status = (cause.user_message, cause.status) if isinstance(cause, AppError) else (
            "Something went wrong.", 500)
        return render_template("error.html", message=message, outcome=g.get("sign_outcome")), status
