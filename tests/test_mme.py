"""MME/day (issue 9 item 2): CDC 2022 conversion factors x the daily dose read from strength and sig; else '-'."""

import csv
from pathlib import Path

import pytest

from smart_app.clinical.mme import Dose, Dosing, factors, mme_per_day
from smart_app.fhir.parse import exposure_from

COVERAGE = Path(__file__).parent / "data" / "opioid_ingredient_coverage.csv"
OXY_COMBO = ("acetaminophen 325 MG / oxycodone hydrochloride 5 MG Oral Tablet",
             "oxycodone hydrochloride 5 MG / acetaminophen 325 MG Oral Tablet")


def sig(text: str) -> Dosing:
    return Dosing(texts=(text,))


def test_oxycodone_5_mg_every_6_hours_is_30_mme_per_day():
    result = mme_per_day(["oxycodone hydrochloride 5 MG Oral Tablet"], sig("Take 1 tablet by mouth every 6 hours"))
    assert result.per_day == pytest.approx(30)
    assert result.shown == "30"
    assert "20 mg/day" in result.how and "1.5" in result.how


def test_an_as_needed_sig_gives_the_most_it_allows_and_says_so():
    result = mme_per_day(OXY_COMBO, sig("Take 1 tablet by mouth every 6 hours as needed for pain"))
    assert result.per_day == pytest.approx(30)
    assert result.shown == "up to 30 (as needed)"


def test_a_structured_dosage_is_read_before_the_text():
    dosing = Dosing(doses=(Dose(2, "{tbl}", 2, 1, "d"),), texts=("see instructions",))
    assert mme_per_day(["hydrocodone bitartrate 10 MG / acetaminophen 325 MG Oral Tablet"], dosing).per_day == 40


def test_fentanyl_patch_25_mcg_per_hour_is_60_mme_per_day_whatever_the_change_interval():
    names = ("72 HR fentanyl 0.025 MG/HR Transdermal System", "fentanyl 25 MCG/HR Transdermal System")
    assert mme_per_day(names, sig("Apply 1 patch to the skin every 72 hours")).per_day == pytest.approx(60)


def test_fentanyl_that_is_not_a_patch_has_no_factor_in_the_2022_table():
    result = mme_per_day(["fentanyl 100 MCG Buccal Tablet"], sig("Dissolve 1 tablet in the cheek once daily"))
    assert result.per_day is None and "patches" in result.how


@pytest.mark.parametrize(("daily_mg", "expected"), [(10, 47), (20, 94), (40, 188), (80, 376)])
def test_methadone_uses_the_single_2022_factor_4_7_not_the_2016_dose_bands(daily_mg, expected):
    result = mme_per_day(["methadone hydrochloride 10 MG/ML Oral Solution"],
                         sig(f"Take {daily_mg} mg by mouth once daily"))
    assert result.per_day == pytest.approx(expected)


def test_a_liquid_dose_in_millilitres_uses_the_strength_per_millilitre():
    result = mme_per_day(["methadone hydrochloride 10 MG/ML Oral Solution"], sig("Take 8 mL by mouth once daily"))
    assert result.per_day == pytest.approx(376)


@pytest.mark.parametrize(("names", "dosing", "why"), [
    (["oxycodone hydrochloride 5 MG Oral Tablet"], Dosing(), "no sig"),
    (["oxycodone Oral Tablet"], sig("Take 1 tablet twice daily"), "no strength"),
    (["tramadol hydrochloride 50 MG Oral Tablet"], sig("Take 1-2 tablets every 4-6 hours"), "range"),
    (["tramadol hydrochloride 50 MG Oral Tablet"], sig("Take 1 tablet by mouth"), "no frequency"),
    (["tramadol hydrochloride 50 MG Oral Tablet"], sig("Take as directed"), "no dose amount"),
    (["tramadol hydrochloride 50 MG Oral Tablet"], sig("Take 1 tablet twice daily, 1 tablet every 6 hours"),
     "more than one frequency"),
    (["oxycodone hydrochloride 5 MG Oral Tablet", "oxycodone hydrochloride 10 MG Oral Tablet"],
     sig("Take 1 tablet daily"), "different strengths"),
    (["buprenorphine 8 MG / naloxone 2 MG Sublingual Tablet"], sig("1 tablet daily"), "no opioid with a CDC"),
    (["oxycodone hydrochloride 5 MG Oral Tablet"], Dosing(doses=(Dose(1, "{tbl}", 1, 1, "d"), Dose(2, "{tbl}", 1, 1,
                                                                                                   "d"))), "several"),
    (["oxycodone hydrochloride 5 MG Oral Tablet"], Dosing(doses=(Dose(1, "{tbl}", 1, 6, "h", ranged=True),)), "range"),
    (["oxycodone hydrochloride 1 MG/ML Oral Solution"], sig("Take 1 tablet daily"), "does not match the strength"),
])
def test_missing_or_ambiguous_strength_or_sig_is_not_computable_with_the_reason(names, dosing, why):
    result = mme_per_day(names, dosing)
    assert result.per_day is None
    assert result.shown == "-"
    assert why in result.how


def test_every_factor_names_the_cdc_ingredient_code_the_coverage_table_lists():
    with COVERAGE.open(encoding="utf-8") as f:
        cdc = {r["ingredient"]: r["code"] for r in csv.DictReader(f) if r["source"].startswith("CDC MME")}
    table = factors()
    assert {name: f.rxnorm for name, f in table.items()} == {name: cdc[name] for name in table}
    assert {name: f.factor for name, f in table.items()} == {
        "codeine": 0.15, "fentanyl": 2.4, "hydrocodone": 1.0, "hydromorphone": 5.0, "methadone": 4.7, "morphine": 1.0,
        "oxycodone": 1.5, "oxymorphone": 3.0, "tapentadol": 0.4, "tramadol": 0.2}


def order(**extra) -> dict:
    return {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p"}, "authoredOn": "2026-01-02",
            "medicationCodeableConcept": {"text": "morphine sulfate 15 MG Extended Release Oral Tablet"}, **extra}


def test_the_parser_reads_a_structured_sig_the_supply_and_a_contained_prescriber():
    record = exposure_from(order(
        contained=[{"resourceType": "Practitioner", "id": "dr", "name": [{"given": ["Ada"], "family": "Lovelace"}]}],
        requester={"reference": "#dr"},
        dosageInstruction=[{"text": "1 tab every 12 hours", "doseAndRate": [{"doseQuantity": {"value": 1, "code":
                           "{tbl}"}}], "timing": {"repeat": {"frequency": 1, "period": 12, "periodUnit": "h"}}}],
        dispenseRequest={"expectedSupplyDuration": {"value": 28, "unit": "days", "code": "d"}}), {})
    assert record.dosing.prescriber == "Ada Lovelace" and record.dosing.supply_days == 28
    assert mme_per_day(record.names, record.dosing).per_day == 30  # 15 mg x 2/day x 1.0


def test_a_prescriber_named_only_by_an_unresolved_reference_is_not_named_and_odd_dosage_is_left_out():
    record = exposure_from(order(requester={"reference": "Practitioner/123"},
                                 dosageInstruction=[{"doseAndRate": [{"doseQuantity": {"value": "one"}}],
                                                     "timing": {"repeat": {"period": float("inf")}}}, "junk"]), {})
    assert record.dosing.prescriber is None and record.dosing.prescriber_ref == "Practitioner/123"
    assert record.dosing.doses[0].value is None and record.dosing.doses[0].period is None
    assert mme_per_day(record.names, record.dosing).per_day is None
