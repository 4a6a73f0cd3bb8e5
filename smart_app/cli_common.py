"""What every `ldn-app` command module shares: exit codes, date arguments, reading JSON files."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from .errors import UnreadableInput

EXIT_OK, EXIT_REFUSED, EXIT_UNREADABLE = 0, 1, 2


def parse_date(value: str) -> date:
    """An argparse type: YYYY-MM-DD."""
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from exc


def read_json_file(path: str):
    """A JSON document from a file; UnreadableInput naming the file and the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UnreadableInput(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableInput(f"{path}: not JSON ({exc})") from exc
    except RecursionError:  # the decoder's nesting limit (the interpreter's recursion limit, ~1,000 levels)
        raise UnreadableInput(f"{path}: JSON nested too deeply to read") from None
