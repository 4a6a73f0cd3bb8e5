"""Low-dose naltrexone (LDN) decision support: a SMART on FHIR R4 app. `create_app` is the factory."""

from __future__ import annotations

import logging
import secrets

from flask import Flask, g, render_template

from .config import from_environment
from .errors import AppError


def create_app(config: dict | None = None) -> Flask:
    """The app: config (defaults < LDN_* environment < `config`), logging, blueprints, error pages."""
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config.update(from_environment())
    app.config.update(config or {})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    https = str(app.config.get("PUBLIC_BASE_URL", "")).startswith("https://")
    app.config.update(SESSION_COOKIE_SECURE=https, PREFERRED_URL_SCHEME="https" if https else "http")
    logging.getLogger("smart_app").setLevel(str(app.config.get("LOG_LEVEL", "INFO")).upper())

    from .cds import blueprint as cds
    from .fhir.gateway import GatewayFactory
    from .smart import blueprint as smart
    from .web import follow_up, health, open_server, views

    smart.init_app(app)
    app.extensions["gateway_factory"] = factory = GatewayFactory(app.config)  # (config, iss, token_provider)
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
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return render_template("error.html", message=f"The form sent was too large (at most {limit} bytes); "
                                                     "nothing was accepted."), 413

    @app.errorhandler(500)
    def server_error(err):
        """Also what a failure after the view gives (saving the session): the sign outcome, if one is known."""
        cause = getattr(err, "original_exception", None)
        message, status = (cause.user_message, cause.status) if isinstance(cause, AppError) else (
            "Something went wrong.", 500)
        return render_template("error.html", message=message, outcome=g.get("sign_outcome")), status
