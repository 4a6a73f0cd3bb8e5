"""`ldn-app due`: patients whose LDN efficacy review (8-12 weeks) is open, overdue or opens soon, for clinic staff."""

from __future__ import annotations

import json
from datetime import date

from .clinical.rules.r6_follow_up import REVIEW_WINDOW_TEXT

EXIT_OK = 0


def register(sub) -> None:
    """Add `due`."""
    from .cli_common import parse_date

    du = sub.add_parser("due", help="list patients whose LDN review window is open or overdue",
                        description="Search the FHIR server for the active LDN CarePlans this app wrote and list "
                                    f"the patients whose efficacy review ({REVIEW_WINDOW_TEXT} after the start) is "
                                    "due, overdue, or opens within DAYS.")
    du.add_argument("--server", required=True, metavar="BASE", help="the FHIR base URL")
    du.add_argument("--within", type=int, default=0, metavar="DAYS",
                    help="also list reviews whose window opens within DAYS (default 0)")
    du.add_argument("--as-of", type=parse_date, default=date.today(), help="the day to check (default today)")
    du.add_argument("--token-file", metavar="F", help="a file holding a bearer access token")
    du.add_argument("--json", action="store_true", help="one JSON array")
    du.set_defaults(func=cmd_due)


def cmd_due(args) -> int:
    from .cli_server import _read_token
    from .config import Settings
    from .errors import InputError
    from .fhir.gateway import FhirGateway
    from .follow_up import due_reviews

    if args.within < 0:
        raise InputError("--within DAYS must be 0 or more")
    token = _read_token(args.token_file) if args.token_file else None
    gateway = FhirGateway.from_config(Settings.from_env(), args.server, (lambda: token) if token else None)
    rows = due_reviews(gateway, as_of=args.as_of, within=args.within)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
        return EXIT_OK
    for r in rows:
        who = f"  {r.name} (born {r.birth_date or 'unknown'})" if r.name else ""
        print(f"{r.patient}  {r.window:<11}  review {r.review[0]} to {r.review[1]}  started {r.start}  "
              f"{r.care_plan}{who}")
    print(f"{len(rows)} patient(s) due as of {args.as_of}" + (f" or within {args.within} days" if args.within else ""))
    return EXIT_OK
