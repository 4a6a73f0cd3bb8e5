"""CLI commands that talk to a live FHIR server: `ldn-app load`, `ldn-app record`, and `ldn-app assess --server`."""

from __future__ import annotations

import sys
from datetime import date

EXIT_OK, EXIT_REFUSED = 0, 1


def register(sub) -> None:
    """Add `load`."""
    lo = sub.add_parser("load", help="load patients from Bundle files into a FHIR server (idempotent)",
                        description="Load FHIR Bundles (collection, searchset or transaction) into a FHIR R4 server: "
                                    "one transaction per patient, each resource PUT by its type and id, so a second "
                                    "run creates nothing. Every file is read and checked before anything is sent.")
    lo.add_argument("files", nargs="*", metavar="FILE")
    lo.add_argument("--server", required=True, metavar="BASE", help="the FHIR base URL")
    lo.add_argument("--samples", action="store_true",
                    help="also load the built-in sample patients (dates moved so that they are current today) and "
                         "their prescriber, Practitioner/ldn-sample-prescriber")
    lo.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                    help="first wait up to this long for the server's /metadata to answer (a server still starting)")
    lo.set_defaults(func=cmd_load)
    rec = sub.add_parser("record", help="save every HTTP exchange of reading one patient, for replay without a server",
                         description="Read one patient from a FHIR server exactly as the app does and save every "
                                     "exchange (method, URL, status, headers, body) in the `responses` library's "
                                     "recorded-file format (YAML); prints the assessment.")
    rec.add_argument("--server", required=True, metavar="BASE")
    rec.add_argument("--patient", required=True, metavar="ID")
    rec.add_argument("--out", required=True, metavar="FILE")
    rec.add_argument("--token-file", metavar="F", help="a file holding a bearer access token")
    rec.set_defaults(func=cmd_record, files=[], as_of=None, washout_days=10, json=True)


def cmd_load(args) -> int:
    from .cli_common import read_json_file
    from .errors import InputError
    from .fhir.load import LoadError, load_each
    from .samples import SAMPLE_PRESCRIBER, samples_as_of

    if not args.files and not args.samples:
        raise InputError("give Bundle FILEs to load, or --samples")
    bundles = {path: read_json_file(path) for path in args.files}
    if args.samples:
        bundles["sample prescriber"] = {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": SAMPLE_PRESCRIBER}]}
        bundles.update({f"sample {pid}": b for pid, b in samples_as_of(date.today()).items()})
    created = updated = 0
    if args.wait and not wait_for_server(args.server, args.wait):
        print(f"ldn-app: {args.server}/metadata did not answer within {args.wait:g} s", file=sys.stderr)
        return EXIT_REFUSED
    try:
        for result in load_each(args.server, bundles):
            print(f"{result.first}: {result.created} created, {result.updated} updated", flush=True)
            created, updated = created + result.created, updated + result.updated
    except LoadError as exc:
        print(f"ldn-app: {exc}. The transactions listed above were loaded; the rest were not sent.", file=sys.stderr)
        return EXIT_REFUSED
    print(f"done: {created} resources created, {updated} updated")
    return EXIT_OK


def assess_on_server(args, session=None):
    """The assessment of `args.patient` read from `args.server`, as the web app reads it."""
    from .config import Settings
    from .errors import InputError
    from .fhir.gateway import FhirGateway
    from .services import assess_patient

    if not (args.server and args.patient) or args.files:
        raise InputError("--server and --patient go together, without FILEs")
    token = _read_token(args.token_file) if args.token_file else None
    gateway = FhirGateway.from_config(Settings.from_env(), args.server, (lambda: token) if token else None,
                                      session=session)
    assessment, _ = assess_patient(gateway, args.patient, as_of=args.as_of, washout_days=args.washout_days)
    return assessment


def _read_token(path: str) -> str:
    from pathlib import Path

    from .errors import UnreadableInput

    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInput(f"{path}: the token file cannot be read") from exc
    if not token or any(ch.isspace() for ch in token):
        raise UnreadableInput(f"{path}: does not hold one bearer token")
    return token


def wait_for_server(base: str, seconds: float, poll: float = 2.0) -> bool:
    """True once `base`/metadata answers 200, False after `seconds`."""
    import time

    import requests

    deadline = time.monotonic() + seconds
    while True:
        try:
            if requests.get(f"{base.rstrip('/')}/metadata", timeout=min(10.0, seconds)).status_code == 200:
                return True
        except requests.RequestException:
            pass  # not up yet
        if time.monotonic() + poll > deadline:
            return False
        time.sleep(poll)


def cmd_record(args) -> int:
    """`assess --server` under the `responses` recorder; the file is written only after a complete read."""
    import json
    from datetime import date as day

    from responses._recorder import Recorder  # the library's recorder (its format replays with _add_from_file)

    from .services import assessment_to_json

    args.as_of = args.as_of or day.today()
    recorder = Recorder()
    with recorder:
        assessment = assess_on_server(args)
        recorder.dump_to_file(args.out, registered=recorder.get_registry().registered)
    print(json.dumps(assessment_to_json(assessment)))
    return EXIT_OK


def replay_base(path: str) -> str:
    """The FHIR base a recording was made against (its first /metadata request)."""
    from .fhir.replay import Recording

    return Recording.from_files([path]).bases[0]
