"""The `ldn-app` command line over the same services the web app uses."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from .cli_common import EXIT_OK, EXIT_REFUSED, EXIT_UNREADABLE, parse_date, read_json_file
from .clinical.model import Assessment, TitrationRequest
from .errors import AppError, InputError, UnreadableInput, WriteRefused
from .fhir.parse import PatientData, patients_from_bundle
from .services import SignRequest, assess_data, assessment_to_json, check_washout, plan_order


def read_bundle_file(path: str) -> dict[str, PatientData]:
    return patients_from_bundle(read_json_file(path), source=path)


def print_assessment(a: Assessment, out) -> None:
    when = a.earliest_start_date.isoformat() if a.earliest_start_date else "-"
    print(f"Patient {a.patient}: {a.decision.value.upper()} (as of {a.as_of}, first dose {a.start_date}, "
          f"earliest safe start {when}, washout {a.washout_days} days)", file=out)
    for f in a.findings:
        refs = f" [{', '.join(f.resources)}]" if f.resources else ""
        print(f"  {f.rule} {f.severity.value} (source {f.source}): {f.text}{refs}", file=out)
    for m in a.medications:
        last = m.last_exposure.isoformat() if m.last_exposure else "-"
        print(f"  med {m.resource}: {m.name} | {m.classification.value} | {m.state.value} | last {last}", file=out)


def cmd_assess(args) -> int:
    """Every patient of every file (or the one on --server); an unreadable file gets one line, exit 2, and the
    other files are still assessed."""
    check_washout(args.washout_days)
    if args.server or args.patient:
        from .cli_server import assess_on_server

        _print(assess_on_server(args), args)
        return EXIT_OK
    if not args.files:
        raise InputError("give Bundle FILEs, or --server BASE --patient ID")
    status = EXIT_OK
    for path in args.files:
        try:
            patients = read_bundle_file(path)
        except UnreadableInput as exc:
            print(f"ldn-app: {exc.detail}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        for data in patients.values():
            _print(assess_data(data, as_of=args.as_of, washout_days=args.washout_days), args)
    return status


def _print(a: Assessment, args) -> None:
    if args.json:
        print(json.dumps(assessment_to_json(a)))
    else:
        print_assessment(a, sys.stdout)


def cmd_plan(args) -> int:
    patients = read_bundle_file(args.file)
    if args.patient not in patients:
        raise UnreadableInput(f"{args.file}: no Patient with id {args.patient!r} (has: {', '.join(patients)})")
    titration = TitrationRequest(start=args.start, start_dose_mg=args.start_dose, step_mg=args.step,
                                 interval_days=args.interval, target_mg=args.target, supply_days=args.supply_days)
    req = SignRequest(titration=titration, reasons=tuple(args.reason or ()), requester=args.requester,
                      override_reason=args.override_reason, attestation=args.attest, other_reason=args.other_reason)
    plan, bundle = plan_order(patients[args.patient], req, as_of=args.as_of, washout_days=args.washout_days)
    if args.json:
        print(json.dumps(bundle, indent=2))
    else:
        print_assessment(plan.assessment, sys.stdout)
        for step in bundle["entry"][0]["resource"]["dosageInstruction"]:
            print(f"  step {step['sequence']}: {step['text']}")
        print(json.dumps(bundle, indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ldn-app", description="Low-dose naltrexone decision support (SMART on FHIR)")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assess", help="assess every patient in FHIR Bundle files, or one patient on a FHIR server")
    a.add_argument("files", nargs="*", metavar="FILE")
    a.add_argument("--server", metavar="BASE", help="read the patient from this FHIR base instead of files")
    a.add_argument("--patient", metavar="ID", help="with --server: the Patient id")
    a.add_argument("--token-file", metavar="F", help="with --server: a file holding a bearer access token")
    a.add_argument("--as-of", type=parse_date, default=date.today(), help="assessment date (default today)")
    a.add_argument("--washout-days", type=int, default=10, help="opioid-free days needed, 7-10 (default 10)")
    a.add_argument("--json", action="store_true", help="one JSON object per patient per line")
    a.set_defaults(func=cmd_assess)

    pl = sub.add_parser("plan", help="print the transaction Bundle an order would write")
    pl.add_argument("file", metavar="FILE")
    pl.add_argument("--patient", required=True)
    pl.add_argument("--start", type=parse_date, required=True, help="first dose date")
    pl.add_argument("--as-of", type=parse_date, default=date.today())
    pl.add_argument("--washout-days", type=int, default=10)
    pl.add_argument("--start-dose", type=float, default=1.5, help="mg (default 1.5)")
    pl.add_argument("--step", type=float, default=1.5, help="mg per step (default 1.5)")
    pl.add_argument("--interval", type=int, default=14, help="days per step (default 14)")
    pl.add_argument("--target", type=float, default=4.5, help="mg (default and maximum 4.5)")
    pl.add_argument("--supply-days", type=int, default=30)
    pl.add_argument("--reason", action="append", help="Condition/ID the order is for (repeatable)")
    pl.add_argument("--requester", help="Practitioner/ID of the prescriber")
    pl.add_argument("--override-reason", help="required when the decision is not-recommended (R4)")
    pl.add_argument("--other-reason", help="required when a --reason is not a qualifying indication (R3)")
    pl.add_argument("--attest", help="required when the decision is cannot-determine")
    pl.add_argument("--json", action="store_true", help="print only the Bundle")
    pl.set_defaults(func=cmd_plan)
    _add_optional_commands(sub)
    return p


def _add_optional_commands(sub) -> None:
    """Commands whose modules live elsewhere (validator, web app, sandbox)."""
    from . import cli_due, cli_extra, cli_server, serve

    serve.add_commands(sub)
    cli_extra.register(sub)
    cli_server.register(sub)
    cli_due.register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UnreadableInput as exc:
        print(f"ldn-app: {exc.detail}", file=sys.stderr)
        return EXIT_UNREADABLE
    except WriteRefused as exc:
        print(f"ldn-app: refused: {exc.detail}", file=sys.stderr)
        return EXIT_REFUSED
    except InputError as exc:
        print("ldn-app: refused: " + " ".join(exc.problems), file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as exc:  # not from the core: services turn its errors into InputError
        print(f"ldn-app: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except AppError as exc:
        print(f"ldn-app: {exc.user_message}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
