"""`ldn-app demo`: sandbox FHIR server + sandbox EHR + the LDN app on loopback, with one command.

`start_sandbox` is the one code path; `run_demo` wraps it for a terminal and tests reuse it.
`create_replay_app` is the app of `--replay`: no server at all, recorded FHIR responses instead.
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlsplit

import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ..fhir.gateway import FHIR_JSON
from ..fhir.load import load_bundles
from ..fhir.replay import Recording, ReplayAdapter, ReplayGatewayFactory
from ..samples import SAMPLE_PRESCRIBER, samples_as_of
from .ehr import CLINICIAN, create_sandbox_app
from .fhir_server import FhirServer, FhirServerError, free_port, start_fhir_server

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
                "patient/CarePlan.cu patient/CarePlan.write patient/Provenance.c patient/Provenance.write "
                "patient/MedicationRequest.cud patient/CarePlan.cd patient/Provenance.cd "
                "patient/CarePlan.rus patient/Observation.crd patient/Provenance.s "
                "patient/CarePlan.read patient/Observation.read patient/Observation.write patient/Provenance.read")
USER_SCOPES = ("user/*.rs user/*.read user/Practitioner.rs user/Practitioner.read user/Practitioner.r "
               "user/Organization.r user/Organization.read")
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


class _QuietHandler(WSGIRequestHandler):
    """Request log without query strings (they carry launch ids and authorization codes)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s", self.command, urlsplit(self.path).path, code)


class _LateApp:
    """WSGI app set after the socket is bound, so a port-0 server knows its URL before the app exists."""

    app: Flask | None = None

    def __call__(self, environ, start_response):
        assert self.app is not None, "set before the server takes requests"
        return self.app(environ, start_response)


@dataclass
class Sandbox:
    """A running sandbox: URLs for browsers and tests, the Flask apps, and `.stop()`.

    `ehr_url` is the public URL (where browsers and the app reach the sandbox EHR); `listen_url` is
    where it listens. `fhir` is None when the sandbox sits in front of a server it did not start."""

    ehr_url: str
    listen_url: str
    app_url: str
    fhir_upstream: str
    fhir: FhirServer | None
    ehr_app: Flask
    app: Flask | None
    clients: list[dict]
    _stack: ExitStack = field(repr=False)

    @property
    def iss(self) -> str:
        return f"{self.ehr_url}/fhir"

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
                  fhir_upstream: str | None = None, public_url: str | None = None, app_url: str | None = None,
                  with_app: bool = True, samples: bool = True, bundles: Iterable[dict] = (),
                  extra_clients: Iterable[dict] = (), access_token_lifetime: int = 300,
                  app_config: dict | None = None, today: date | None = None,
                  fhir_proxy: Callable[[str], str] | None = None) -> Sandbox:
    """Start the sandbox EHR (and the app) on loopback, in front of a new sekmet or `fhir_upstream`.

    Port 0 = any free port. `public_url`: where browsers reach the sandbox EHR (default: where it
    listens). `app_url`: an app already running there; none is started. `samples`: load the sample
    patients (dates moved to `today`) and the sandbox clinician. `fhir_proxy(upstream) -> url` puts
    something between the EHR and the FHIR server (tests: a fault proxy)."""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the sandbox has no real authentication: serve it on {LOOPBACK_HOSTS[0]} only")
    with ExitStack() as stack:
        last = stack.enter_context(ExitStack())  # the FHIR server stops after the web servers
        ehr_web = _bind(stack, host, ehr_port, "ehr")
        public = (public_url or ehr_web.url).rstrip("/")
        app_web = _bind(stack, host, app_port, "app") if with_app and not app_url else None
        app_url = (app_url or (app_web.url if app_web else f"http://{host}:{app_port or free_port()}")).rstrip("/")
        fhir = None
        if fhir_upstream is None:
            # sekmet writes `next` links, fullUrls and Locations under the proxy's public base
            fhir = start_fhir_server(fhir_port, public_base_url=public)
            last.callback(fhir.stop)
            upstream = fhir.base_url
        else:
            upstream = _answering(fhir_upstream.rstrip("/"))
        data = [*(samples_as_of(today or date.today()).values() if samples else ()), *bundles]
        if fhir or data:  # a server we did not start is written to only when asked
            _load(upstream, data)

        clients = [*default_clients(app_url, secrets.token_urlsafe(24)), *extra_clients]
        ehr_app = create_sandbox_app(fhir_proxy(upstream) if fhir_proxy else upstream, public, clients,
                                     f"{app_url}/launch", access_token_lifetime=access_token_lifetime,
                                     upstream_link_base=fhir.public_base_url if fhir else None,
                                     cds_services_url=f"{app_url}/cds-services")
        ehr_web.start(ehr_app)
        cds = {"CDS_CLIENTS": f"{public}|{public}/cds/jwks"}  # the sandbox signs its CDS Hooks calls
        app = _start_app(app_web, app_url, f"{public}/fhir", {**cds, **(app_config or {})}) if app_web else None
        sandbox = Sandbox(public, ehr_web.url, app_url, upstream, fhir, ehr_app, app, clients, stack.pop_all())
    log.info("sandbox EHR on %s (public %s), FHIR upstream %s, app %s", sandbox.listen_url, sandbox.ehr_url,
             upstream, sandbox.app_url)
    return sandbox


def _answering(fhir_base: str) -> str:
    """`fhir_base`, once its /metadata answers; FhirServerError otherwise."""
    try:
        status = requests.get(f"{fhir_base}/metadata", headers={"Accept": FHIR_JSON}, timeout=30).status_code
    except requests.RequestException as exc:
        raise FhirServerError(f"no FHIR server answers at {fhir_base} ({type(exc).__name__})") from exc
    if status != 200:
        raise FhirServerError(f"{fhir_base}/metadata answered {status}: is this a FHIR base URL?")
    return fhir_base


def _start_app(web: _Web, app_url: str, issuer: str, app_config: dict | None) -> Flask:
    from smart_app import create_app

    app = create_app({"ALLOWED_ISSUERS": issuer, "CLIENT_ID": APP_CLIENT_ID, "PUBLIC_BASE_URL": app_url,
                      "SECRET_KEY": secrets.token_hex(32), **(app_config or {})})
    web.start(app)
    return app


def _load(fhir_base: str, bundles: list[dict]) -> None:
    """The sandbox clinician (the signed-in user) and `bundles`, one idempotent transaction per patient."""
    clinician = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": CLINICIAN}]}
    load_bundles(fhir_base, {"sandbox clinician": clinician,
                             **{f"sandbox Bundle {i + 1}": bundle for i, bundle in enumerate(bundles)}})


def create_replay_app(paths: Iterable[str], config: dict | None = None) -> Flask:
    """The whole app on recorded files: each recording's FHIR base is an open server answered from them.

    `/launch` opens the patient search of the first base; Sign shows the Bundle it would send and
    sends nothing (REPLAY). The requester is LDN_OPEN_REQUESTER, else the sample prescriber."""
    from smart_app import create_app
    from smart_app.config import Settings

    recording = Recording.from_files(paths)
    requester = Settings.from_env().open_requester or f"Practitioner/{SAMPLE_PRESCRIBER['id']}"
    app = create_app({"ALLOWED_ISSUERS": "", "OPEN_SERVERS": ",".join(recording.bases),
                      "DEFAULT_ISS": recording.bases[0], "OPEN_REQUESTER": requester, "REPLAY": True,
                      **(config or {})})
    adapter = ReplayAdapter(recording)
    app.extensions["fhir.replay"] = adapter
    app.extensions["gateway_factory"] = ReplayGatewayFactory(adapter, app.extensions["fhir.documents"])
    return app


def run_replay_demo(paths: Iterable[str], host: str = "127.0.0.1", port: int = 8000,
                    config: dict | None = None) -> None:
    """`ldn-app demo --replay`: the replay app on loopback until Ctrl-C or SIGTERM."""
    with ExitStack() as stack:
        web = _bind(stack, host, port, "replay")
        app = create_replay_app(paths, {"PUBLIC_BASE_URL": web.url, "SECRET_KEY": secrets.token_hex(32),
                                        **(config or {})})
        web.start(app)
        _wait_for_signal(f"Open {web.url}/launch to pick a recorded patient (FHIR bases replayed: "
                         f"{', '.join(app.extensions['settings'].open_servers)}). Nothing is written anywhere. "
                         "Ctrl-C stops.")
    print("Replay stopped.", flush=True)


def _wait_for_signal(banner: str) -> None:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(banner, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(host: str = "127.0.0.1", app_port: int = 8000, ehr_port: int = 8001, fhir_port: int = 8002,
             **options) -> None:
    """Run everything until Ctrl-C or SIGTERM; `options` go to `start_sandbox`."""
    sandbox = start_sandbox(host, app_port, ehr_port, fhir_port, **options)
    try:
        _wait_for_signal(_banner(sandbox))
    finally:
        sandbox.stop()
        print("Sandbox stopped.", flush=True)


def _banner(sandbox: Sandbox) -> str:
    lines = [f"Open {sandbox.ehr_url}/ to launch the LDN app from the sandbox EHR",
             f"  FHIR base (iss): {sandbox.iss}   app: {sandbox.app_url}   FHIR server: {sandbox.fhir_upstream}"]
    if sandbox.listen_url != sandbox.ehr_url:
        lines.append(f"  The sandbox EHR listens on {sandbox.listen_url}; browsers reach it at {sandbox.ehr_url}")
    if sandbox.app is None:
        lines.append(f"  The app is not started here: run it with LDN_ALLOWED_ISSUERS={sandbox.iss} "
                     f"LDN_CLIENT_ID={APP_CLIENT_ID} LDN_PUBLIC_BASE_URL={sandbox.app_url}")
    lines.append("  Pick a patient and press 'EHR launch', or use 'Standalone launch'. Ctrl-C stops everything.")
    return "\n".join(lines)
