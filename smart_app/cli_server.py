"""CLI commands that talk to a live FHIR server: `ldn-app load`."""

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
                    help="also load the built-in sample patients, dates moved so that they are current today")
    lo.set_defaults(func=cmd_load)


def cmd_load(args) -> int:
    from .cli import read_json_file
    from .errors import InputError
    from .fhir.load import LoadError, load_each
    from .samples import samples_as_of

    if not args.files and not args.samples:
        raise InputError("give Bundle FILEs to load, or --samples")
    bundles = {path: read_json_file(path) for path in args.files}
    if args.samples:
        bundles.update({f"sample {pid}": b for pid, b in samples_as_of(date.today()).items()})
    created = updated = 0
    try:
        for result in load_each(args.server, bundles):
            print(f"{result.first}: {result.created} created, {result.updated} updated", flush=True)
            created, updated = created + result.created, updated + result.updated
    except LoadError as exc:
        print(f"ldn-app: {exc}. The transactions listed above were loaded; the rest were not sent.", file=sys.stderr)
        return EXIT_REFUSED
    print(f"done: {created} resources created, {updated} updated")
    return EXIT_OK
