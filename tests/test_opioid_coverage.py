"""Issue 8 item 4: each CDC MME table, ATC N02A and recently approved ingredient: covered, or left out with a reason."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from smart_app.clinical.classify import classify
from smart_app.clinical.model import Coding, ExposureState, MedClass, MedicationExposure
from smart_app.clinical.terminology import ATC, RXNORM, default_terminology

TABLE = Path(__file__).parent / "data" / "opioid_ingredient_coverage.csv"
ROWS = list(csv.DictReader(TABLE.open(encoding="utf-8")))
SYSTEMS = {"RxNorm": RXNORM, "ATC": ATC}


def classified(codings=(), names=()) -> MedClass:
    med = MedicationExposure("MedicationRequest/m", tuple(codings), tuple(names), "active", ExposureState.CURRENT)
    return classify(med, default_terminology()).category


def row_id(row) -> str:
    return f"{row['source'].split(' (')[0]}:{row['ingredient']}"


def test_the_coverage_table_lists_the_cdc_table_and_atc_n02a_and_states_a_reason_for_each_omission():
    sources = {r["source"].split(" (")[0] for r in ROWS}
    assert {"CDC MME conversion table", "WHO ATC N02A", "recently approved"} <= sources
    assert sum(r["source"].startswith("CDC") for r in ROWS) == 18
    assert all(r["covered"] in {"yes", "no"} for r in ROWS)
    assert all(r["reason"].strip() for r in ROWS if r["covered"] == "no")


@pytest.mark.parametrize("row", [r for r in ROWS if r["covered"] == "yes"], ids=row_id)
def test_every_covered_ingredient_is_classified_as_an_opioid_by_its_code(row):
    assert classified([Coding(SYSTEMS[row["system"]], row["code"])]) is MedClass.OPIOID


@pytest.mark.parametrize("row", [r for r in ROWS if r["covered"] == "no"], ids=row_id)
def test_every_ingredient_left_out_is_really_not_classified_as_an_opioid(row):
    codings = [Coding(SYSTEMS[row["system"]], row["code"])] if row["system"] in SYSTEMS else []
    assert classified(codings, [row["ingredient"]]) is not MedClass.OPIOID


@pytest.mark.parametrize("name", [
    "Olinvyk 1 mg/mL injection", "oliceridine", "Targiniq ER 10 mg/5 mg", "Troxyca ER 10 mg/1.2 mg",
    "Talwin NX", "Suboxone 8 mg-2 mg film", "Zubsolv 5.7/1.4", "Bunavail", "Embeda 20 mg/0.8 mg",
    "levomethadyl acetate", "Zydone 7.5/400",
])
def test_recent_ingredients_and_opioid_antagonist_combination_brands_are_opioids_by_name(name):
    assert classified(names=[name]) is MedClass.OPIOID
