"""`ldn-app serve` (production WSGI server, env config) and `ldn-app demo` (the sandbox EHR)."""

from __future__ import annotations

import argparse
import logging
from urllib.parse import urlsplit

from .config import Settings, SettingsError

REPLAY_HELP = ("run the app on recorded FHIR responses (`ldn-app record` files), no server: /launch opens a "
               "patient search of the recorded patients; Sign shows the Bundle it would send and writes nothing")


def add_commands(sub) -> None:
    s = sub.add_parser("serve", help="run the app alone under waitress, configured by LDN_* environment variables")
    s.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a deployed server listens on its interface
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--threads", type=int, default=8)
    s.add_argument("--replay", nargs="+", metavar="FILE", help=REPLAY_HELP)
    s.set_defaults(func=cmd_serve)
    d = sub.add_parser("demo", help="start a sandbox EHR (real FHIR server + SMART auth) and the app on loopback")
    d.add_argument("--app-port", type=int, default=8000)
    d.add_argument("--ehr-port", type=int, default=8001)
    d.add_argument("--fhir-port", type=int, default=8002)
    d.add_argument("--fhir-upstream", type=_http_url, metavar="URL",
                   help="put the sandbox in front of this existing FHIR R4 base instead of starting sekmet")
    d.add_argument("--load-samples", action="store_true",
                   help="with --fhir-upstream: load the sample patients there (as `ldn-app load` does)")
    d.add_argument("--public-url", type=_http_url, metavar="URL",
                   help="base URL where browsers and the app reach the sandbox EHR (iss = URL/fhir)")
    d.add_argument("--app-url", type=_http_url, metavar="URL",
                   help="an app already running at this URL (launch URL/launch, redirect URL/callback); "
                        "the demo does not start one")
    d.add_argument("--replay", nargs="+", metavar="FILE",
                   help=REPLAY_HELP + "; only the app is started, on --app-port")
    d.set_defaults(func=cmd_demo)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"not an http(s) base URL: {value!r}")
    return value.rstrip("/")


def cmd_serve(args) -> int:
    from waitress import serve

    try:
        settings = Settings.from_env()
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        app = _replay_app(args.replay) if args.replay else _configured_app(settings)
    except SettingsError as err:
        raise SystemExit(f"ldn-app serve: {err}") from None
    serve(app, host=args.host, port=args.port, threads=args.threads, ident="ldn-app")
    return 0


def _configured_app(settings: Settings):
    from . import create_app

    app = create_app()
    if not settings.allowed_issuers and not settings.open_servers:
        raise SystemExit("ldn-app serve: set LDN_ALLOWED_ISSUERS (the FHIR base URLs allowed to launch the app), "
                         "or LDN_OPEN_SERVERS (test servers without authorization)")
    log = logging.getLogger(__name__)
    if not settings.secret_key:
        log.warning("LDN_SECRET_KEY unset: a random key is used (fine for one instance)")
    if settings.open_servers:
        log.warning("LDN_OPEN_SERVERS: %s have no authorization; they must not hold real patient data",
                    ", ".join(settings.open_servers))
    return app


def _replay_app(paths: list[str]):
    """`serve --replay`: the app on recorded files; LDN_* settings apply, the FHIR ones are the recordings'."""
    from .sandbox.demo import create_replay_app

    app = create_replay_app(paths)
    logging.getLogger(__name__).warning("replaying %s (FHIR bases %s): nothing is written", ", ".join(paths),
                                        ", ".join(app.extensions["settings"].open_servers))
    return app


def cmd_demo(args) -> int:
    from .fhir.load import LoadError
    from .sandbox.demo import run_demo
    from .sandbox.fhir_server import FhirServerError

    if args.replay:
        from .sandbox.demo import run_replay_demo

        if args.fhir_upstream or args.load_samples or args.public_url or args.app_url:
            raise SystemExit("ldn-app demo: --replay runs the app alone on the recordings; it takes no other "
                             "server options")
        run_replay_demo(args.replay, port=args.app_port)
        return 0
    if args.load_samples and not args.fhir_upstream:
        raise SystemExit("ldn-app demo: --load-samples needs --fhir-upstream (the demo's own server always has them)")
    try:
        run_demo(app_port=args.app_port, ehr_port=args.ehr_port, fhir_port=args.fhir_port,
                 fhir_upstream=args.fhir_upstream, samples=args.load_samples or not args.fhir_upstream,
                 public_url=args.public_url, app_url=args.app_url)
    except (LoadError, FhirServerError) as exc:
        raise SystemExit(f"ldn-app demo: {exc}") from exc
    return 0
