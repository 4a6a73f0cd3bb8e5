"""R1 titration: the default protocol, clinician changes, and the values the app must reject."""

from __future__ import annotations

from datetime import date

import pytest

from smart_app.clinical.model import TitrationRequest
from smart_app.clinical.rules.r1_titration import build_schedule, describe_step

START = date(2026, 2, 1)


def test_default_protocol_is_1_5_then_3_then_4_5_mg_every_two_weeks():
    steps = build_schedule(TitrationRequest(start=START))
    assert [(s.dose_mg, s.start.isoformat(), s.end and s.end.isoformat()) for s in steps] == [
        (1.5, "2026-02-01", "2026-02-14"),
        (3.0, "2026-02-15", "2026-02-28"),
        (4.5, "2026-03-01", None),
    ]


def test_clinician_may_start_at_1_mg_and_end_at_4_mg():
    steps = build_schedule(TitrationRequest(start=START, start_dose_mg=1, step_mg=1, interval_days=7, target_mg=4))
    assert [s.dose_mg for s in steps] == [1, 2, 3, 4]
    assert steps[1].start == date(2026, 2, 8)


def test_last_step_is_capped_at_the_target():
    steps = build_schedule(TitrationRequest(start=START, start_dose_mg=1.5, step_mg=2, target_mg=4.5))
    assert [s.dose_mg for s in steps] == [1.5, 3.5, 4.5]


@pytest.mark.parametrize("kwargs, words", [
    ({"start_dose_mg": 5}, "above the LDN maximum"),
    ({"target_mg": 6}, "above the LDN maximum"),
    ({"start_dose_mg": 0.25}, "below the minimum"),
    ({"step_mg": 0}, "must be positive"),
    ({"step_mg": -1}, "must be positive"),
    ({"interval_days": 0}, "must be positive"),
    ({"start_dose_mg": 3, "target_mg": 1.5}, "below the start dose"),
    ({"supply_days": 400}, "Supply"),
])
def test_out_of_range_values_are_rejected_with_a_clear_message(kwargs, words):
    with pytest.raises(ValueError) as err:
        build_schedule(TitrationRequest(start=START, **kwargs))
    assert any(words in p for p in err.value.args[0])


def test_step_text_tells_the_patient_dose_timing_and_dates():
    first = build_schedule(TitrationRequest(start=START))[0]
    assert describe_step(first, START) == "Take 1.5 mg by mouth at bedtime, days 1-14 (2026-02-01 to 2026-02-14)."
