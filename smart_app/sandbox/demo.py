"""`ldn-app demo`: sandbox FHIR server + sandbox EHR + the LDN app on loopback, with one command.

`start_sandbox` is the one code path; `run_demo` wraps it for a terminal and tests reuse it.
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlsplit

import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .ehr import CLINICIAN, CLINICIAN_ID, create_sandbox_app
from .fhir_server import FhirServer, free_port, load_bundles, start_fhir_server

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
APP_CLIENT_ID = "ldn-app"
READ_SCOPES = " ".join(
    ["patient/*.rs", "patient/*.read"]
    + [f"patient/{t}.{p}" for t in ("Patient", "Condition", "MedicationRequest", "MedicationStatement",
                                     "MedicationDispense", "Medication") for p in ("rs", "read")]
)
WRITE_SCOPES = ("patient/*.cruds patient/*.write patient/*.* patient/MedicationRequest.c "
                "patient/MedicationRequest.cu patient/MedicationRequest.write patient/CarePlan.c "
                "patient/CarePlan.cu patient/CarePlan.write patient/Provenance.c patient/Provenance.write")
USER_SCOPES = "user/*.rs user/*.read user/Practitioner.rs user/Practitioner.read"
CONTEXT_SCOPES = "launch launch/patient openid fhirUser online_access"


def default_clients(app_base: str, confidential_secret: str) -> list[dict]:
    """ldn-app (public, everything), ldn-app-readonly (no write scopes), ldn-app-confidential (secret)."""
    redirect_uris = [f"{app_base}/callback"]
    everything = " ".join((CONTEXT_SCOPES, READ_SCOPES, WRITE_SCOPES, USER_SCOPES))
    return [
        {"client_id": APP_CLIENT_ID, "redirect_uris": redirect_uris, "scopes": everything, "auth": "public"},
        {"client_id": "ldn-app-readonly", "redirect_uris": redirect_uris, "auth": "public",
         "scopes": " ".join((CONTEXT_SCOPES, READ_SCOPES, USER_SCOPES))},
        {"client_id": "ldn-app-confidential", "redirect_uris": redirect_uris, "scopes": everything,
         "auth": "client_secret_basic", "client_secret": confidential_secret},
    ]


def sample_bundles(today: date) -> list[dict]:
    """Every sample patient, dates moved so that SAMPLE_AS_OF becomes `today`."""
    from smart_app.samples import SAMPLE_AS_OF, load_sample, sample_ids, shifted

    days = (today - SAMPLE_AS_OF).days
    return [shifted(load_sample(pid), days) for pid in sample_ids()]


class _QuietHandler(WSGIRequestHandler):
    """Request log without query strings (they carry launch ids and authorization codes)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s", self.command, urlsplit(self.path).path, code)


class _LateApp:
    """WSGI app set after the socket is bound, so a port-0 server knows its URL before the app exists."""

    app: Flask | None = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@dataclass
class Sandbox:
    """A running sandbox: URLs for browsers and tests, the Flask apps, and `.stop()`."""

    ehr_url: str
    app_url: str
    fhir: FhirServer
    ehr_app: Flask
    app: Flask | None
    clients: list[dict]
    _stack: ExitStack = field(repr=False)

    @property
    def iss(self) -> str:
        return f"{self.ehr_url}/fhir"

    @property
    def fhir_upstream(self) -> str:
        return self.fhir.base_url

    @property
    def launch_url(self) -> str:
        return f"{self.app_url}/launch"

    @property
    def redirect_uri(self) -> str:
        return f"{self.app_url}/callback"

    def client(self, client_id: str) -> dict:
        return next(c for c in self.clients if c["client_id"] == client_id)

    def stop(self) -> None:
        """Stop the web servers, then the FHIR server. Safe to call twice."""
        self._stack.close()


@dataclass
class _Web:
    """A bound werkzeug server whose app is set later and which serves from a daemon thread."""

    server: BaseWSGIServer
    late: _LateApp
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    def start(self, app: Flask) -> None:
        self.late.app = app
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(5)
        self.server.server_close()


def _bind(stack: ExitStack, host: str, port: int, name: str) -> _Web:
    late = _LateApp()
    server = make_server(host, port, late, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"sandbox-{name}", daemon=True)
    web = _Web(server, late, thread)
    stack.callback(web.stop)
    return web


def start_sandbox(host: str = "127.0.0.1", app_port: int = 0, ehr_port: int = 0, fhir_port: int = 0, *,
                  with_app: bool = True, samples: bool = True, bundles: Iterable[dict] = (),
                  extra_clients: Iterable[dict] = (), access_token_lifetime: int = 300,
                  app_config: dict | None = None, today: date | None = None) -> Sandbox:
    """Start sekmet, load data, start the sandbox EHR (and the app) on loopback. Port 0 = any free port."""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the sandbox has no real authentication: serve it on {LOOPBACK_HOSTS[0]} only")
    with ExitStack() as stack:
        last = stack.enter_context(ExitStack())  # the FHIR server stops after the web servers
        ehr_web = _bind(stack, host, ehr_port, "ehr")
        app_web = _bind(stack, host, app_port, "app") if with_app else None
        app_url = app_web.url if app_web else f"http://{host}:{app_port or free_port()}"
        # sekmet writes `next` links, fullUrls and Locations under the proxy's public base
        fhir = start_fhir_server(fhir_port, public_base_url=ehr_web.url)
        last.callback(fhir.stop)
        _ensure_clinician(fhir.base_url)
        load_bundles(fhir.base_url, [*(sample_bundles(today or date.today()) if samples else ()), *bundles])

        clients = [*default_clients(app_url, secrets.token_urlsafe(24)), *extra_clients]
        ehr_app = create_sandbox_app(fhir.base_url, ehr_web.url, clients, f"{app_url}/launch",
                                     access_token_lifetime=access_token_lifetime)
        ehr_web.start(ehr_app)
        app = None
        if app_web:
            from smart_app import create_app

            app = create_app({"ALLOWED_ISSUERS": f"{ehr_web.url}/fhir", "CLIENT_ID": APP_CLIENT_ID,
                              "PUBLIC_BASE_URL": app_url, "SECRET_KEY": secrets.token_hex(32),
                              **(app_config or {})})
            app_web.start(app)
        sandbox = Sandbox(ehr_web.url, app_url, fhir, ehr_app, app, clients, stack.pop_all())
    log.info("sandbox EHR on %s, FHIR upstream %s, app %s", sandbox.ehr_url, fhir.base_url, sandbox.app_url)
    return sandbox


def _ensure_clinician(fhir_base: str) -> None:
    """The signed-in sandbox user, Practitioner/sandbox-clinician, exists on the FHIR server."""
    if requests.get(f"{fhir_base}/Practitioner/{CLINICIAN_ID}", timeout=10).status_code == 404:
        entry = {"fullUrl": f"Practitioner/{CLINICIAN_ID}", "resource": CLINICIAN}
        load_bundles(fhir_base, [{"resourceType": "Bundle", "type": "collection", "entry": [entry]}])


def run_demo(host: str = "127.0.0.1", app_port: int = 8000, ehr_port: int = 8001,
             fhir_port: int = 8002) -> None:
    """Run everything until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    sandbox = start_sandbox(host, app_port, ehr_port, fhir_port)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"Open {sandbox.ehr_url}/ to launch the LDN app from the sandbox EHR")
        print(f"  FHIR base (iss): {sandbox.iss}   app: {sandbox.app_url}   sekmet: {sandbox.fhir_upstream}")
        print("  Pick a patient and press 'EHR launch', or use 'Standalone launch'. Ctrl-C stops everything.")
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sandbox.stop()
        print("Sandbox stopped.")
