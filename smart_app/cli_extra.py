"""CLI commands that need the web app, the sandbox or the validator (imported lazily)."""

from __future__ import annotations

EXIT_OK, EXIT_INVALID = 0, 1


def register(sub) -> None:
    """Add `validate` (and, as they land, `serve` and `demo`)."""
    _add_validate(sub)


def _add_validate(sub) -> None:
    v = sub.add_parser("validate", help="check resources or Bundles against R4 and the LDN profiles",
                       description="Validate FHIR JSON (a resource or a Bundle) against base R4 and the LDN "
                                   "profiles in fhir_profiles/. Prints each problem with its element path. "
                                   "Exit 0 when all are valid, 1 when not, 2 when a file cannot be read.")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument("--resolve", action="append", metavar="BUNDLE", default=[],
                   help="a Bundle (e.g. the patient's record) whose resources references may resolve to, "
                        "so the reason Conditions are checked against the ValueSet (repeatable)")
    v.set_defaults(func=cmd_validate)


def _read_json(path: str):
    from .cli_common import read_json_file
    from .errors import UnreadableInput

    document = read_json_file(path)
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise UnreadableInput(f"{path}: not a FHIR resource (no resourceType)")
    return document


def cmd_validate(args) -> int:
    from .fhir.validate import resolver_for, validate

    # read every file first: an unreadable one exits 2 before anything is printed
    documents = {path: _read_json(path) for path in args.files}
    resolver = resolver_for(*(_read_json(path) for path in args.resolve))
    invalid = False
    for path, document in documents.items():
        problems = validate(document, resolver)
        kind = document["resourceType"]
        if problems:
            invalid = True
            print(f"{path}: {kind}: INVALID ({len(problems)} problem{'s' if len(problems) != 1 else ''})")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"{path}: {kind}: valid")
    return EXIT_INVALID if invalid else EXIT_OK
