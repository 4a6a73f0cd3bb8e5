"""Sample patients (FHIR R4 collection Bundles) with expected outcomes, dated relative to SAMPLE_AS_OF."""

from __future__ import annotations

import copy
import json
import re
from datetime import date, timedelta
from pathlib import Path

SAMPLE_AS_OF = date(2026, 1, 15)
SAMPLES_DIR = Path(__file__).resolve().parent
EXPECTED_FILE = SAMPLES_DIR / "expected" / "expected.json"  # outside the *.json glob of the samples

# A FHIR date, dateTime or instant with a full day: YYYY-MM-DD, optionally Thh:mm[:ss[.fff]][zone].
_DATE_VALUE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?")
# Keys whose values are identities, not times, even if one ever looked like a date.
_NEVER_SHIFTED = frozenset({"id", "code", "reference", "system", "url", "fullUrl", "value", "version"})


# The prescriber `ldn-app load --samples` adds, for LDN_OPEN_REQUESTER=Practitioner/ldn-sample-prescriber.
SAMPLE_PRESCRIBER = {"resourceType": "Practitioner", "id": "ldn-sample-prescriber", "active": True,
                     "name": [{"use": "official", "family": "Sample", "given": ["Robin"], "prefix": ["Dr."]}]}


def sample_ids() -> list[str]:
    """Every sample patient id (= file name without .json), sorted."""
    return sorted(p.stem for p in SAMPLES_DIR.glob("*.json"))


def load_sample(pid: str) -> dict:
    """The Bundle for one sample patient; KeyError for an unknown id."""
    if pid not in sample_ids():
        raise KeyError(f"no sample patient {pid!r}")
    return _read_json(SAMPLES_DIR / f"{pid}.json")


def load_expected() -> dict:
    """Patient id -> {"decision", "rules", "earliest_start_date", "why"} for as_of SAMPLE_AS_OF."""
    return _read_json(EXPECTED_FILE)


def shifted(bundle: dict, days: int) -> dict:
    """A deep copy of `bundle` with every full date / dateTime / instant moved by `days`."""
    return _shift(copy.deepcopy(bundle), timedelta(days=days))


def samples_as_of(today: date) -> dict[str, dict]:
    """Every sample patient's Bundle by id, dates moved so that SAMPLE_AS_OF becomes `today`."""
    days = (today - SAMPLE_AS_OF).days
    return {pid: shifted(load_sample(pid), days) for pid in sample_ids()}


def _read_json(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _shift(node, delta: timedelta):
    if isinstance(node, dict):
        return {k: v if k in _NEVER_SHIFTED else _shift(v, delta) for k, v in node.items()}
    if isinstance(node, list):
        return [_shift(item, delta) for item in node]
    if isinstance(node, str) and _DATE_VALUE.fullmatch(node):
        return _shift_date_string(node, delta)
    return node


def _shift_date_string(value: str, delta: timedelta) -> str:
    """Move the day part; keep the time and zone exactly as written (an impossible day stays as is)."""
    try:
        day = date.fromisoformat(value[:10]) + delta
    except ValueError:
        return value
    return day.isoformat() + value[10:]
