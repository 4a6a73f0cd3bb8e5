"""Issue 8 items 2, 3, 5: liver disease, R3 indications and opioid use disorder in every code system, table-driven."""

from __future__ import annotations

from datetime import date

import pytest

from smart_app.clinical.assess import assess
from smart_app.clinical.model import Coding, Diagnosis, ExposureState, MedicationExposure
from smart_app.clinical.terminology import ICD10CM, RXNORM, SNOMED, default_terminology

AS_OF = date(2026, 1, 15)
FIBRO = Diagnosis("Condition/fibro", (Coding(SNOMED, "203082005", "Fibromyalgia (disorder)"),), None, "active",
                  "confirmed")


def dx(system: str | None, code: str | None, display: str | None = None, *, status="active", text=None,
       rid="Condition/x") -> Diagnosis:
    codings = (Coding(system, code, display),) if code else ()
    return Diagnosis(rid, codings, text, status, "confirmed")


def run(*conditions: Diagnosis, meds=()):
    return assess("p", list(meds), [FIBRO, *conditions], as_of=AS_OF, terminology=default_terminology())


def codes(assessment) -> set[str]:
    return {f.code for f in assessment.findings}


# (system, code, display) -> contraindicated: the liver categories in SNOMED CT and ICD-10-CM.
LIVER_CONTRAINDICATIONS = [
    ("acute hepatitis A", SNOMED, "25102003", None), ("acute hepatitis A", ICD10CM, "B15.9", None),
    ("acute hepatitis B", SNOMED, "76795007", None), ("acute hepatitis B", ICD10CM, "B16.9", None),
    ("acute hepatitis D", SNOMED, "235865005", None), ("acute hepatitis D", ICD10CM, "B17.0", None),
    ("acute hepatitis E", SNOMED, "235867002", None), ("acute hepatitis E", ICD10CM, "B17.2", None),
    ("acute viral hepatitis, unspecified", SNOMED, "57412004", None),
    ("acute viral hepatitis, unspecified", ICD10CM, "B17.9", None),
    ("fulminant hepatitis", SNOMED, "235884008", None), ("fulminant hepatitis", ICD10CM, "K72.00", None),
    ("fulminant hepatitis, by name only", None, None, "Fulminant hepatitis"),
    ("hepatic coma", SNOMED, "72836002", None), ("hepatic coma", ICD10CM, "K72.91", None),
    ("hepatic coma due to hepatitis B", SNOMED, "26206000", None), ("hepatic coma", ICD10CM, "B19.0", None),
    ("hepatic encephalopathy", SNOMED, "13920009", None), ("hepatic encephalopathy", ICD10CM, "K76.82", None),
    ("hepatic failure", SNOMED, "59927004", None), ("hepatic failure", ICD10CM, "K72.10", None),
    ("end-stage liver disease", SNOMED, "708248004", None),
    ("end-stage liver disease, by name only", None, None, "End stage liver disease"),
    ("decompensated cirrhosis", SNOMED, "716203000", None),
    ("ascites in alcoholic cirrhosis", SNOMED, "1082601000119104", None),
    ("ascites in alcoholic cirrhosis", ICD10CM, "K70.31", None),
    ("bleeding esophageal varices", SNOMED, "17709002", None),
    ("bleeding esophageal varices", ICD10CM, "I85.01", None),
    ("hepatorenal syndrome", SNOMED, "51292008", None), ("hepatorenal syndrome", ICD10CM, "K76.7", None),
]


@pytest.mark.parametrize("what, system, code, text", LIVER_CONTRAINDICATIONS)
def test_acute_or_decompensated_liver_disease_is_contraindicated_in_every_code_system(what, system, code, text):
    a = run(dx(system, code, text=text))
    assert a.decision.value == "contraindicated", what
    assert "hepatic-contraindication" in codes(a)


CHRONIC_LIVER = [
    ("chronic hepatitis C", SNOMED, "128302006"), ("chronic hepatitis C", ICD10CM, "B18.2"),
    ("chronic hepatitis B", SNOMED, "61977001"), ("chronic hepatitis B", ICD10CM, "B18.1"),
    ("chronic hepatitis", SNOMED, "76783007"), ("chronic hepatitis", ICD10CM, "K73.9"),
    ("cirrhosis without decompensation", SNOMED, "19943007"), ("cirrhosis", ICD10CM, "K74.60"),
    ("alcoholic cirrhosis without ascites", ICD10CM, "K70.30"),
]


@pytest.mark.parametrize("what, system, code", CHRONIC_LIVER)
def test_chronic_hepatitis_or_cirrhosis_without_decompensation_is_a_caution_with_its_source(what, system, code):
    a = run(dx(system, code))
    assert a.decision.value == "eligible-with-cautions", what
    caution = next(f for f in a.findings if f.code == "liver-caution")
    assert "label" in caution.source


def test_cirrhosis_with_ascites_is_contraindicated_not_merely_a_caution():
    a = run(dx(SNOMED, "19943007", rid="Condition/c"), dx(SNOMED, "1082601000119104", rid="Condition/a"))
    assert a.decision.value == "contraindicated"


def test_a_resolved_acute_hepatitis_no_longer_contraindicates():
    assert run(dx(SNOMED, "76795007", status="resolved")).decision.value == "eligible"


INDICATIONS = [
    ("diabetic neuropathy (Synthea)", SNOMED, "368581000119106"), ("diabetic neuropathy", SNOMED, "230572002"),
    ("diabetic polyneuropathy", SNOMED, "49455004"), ("painful diabetic neuropathy", SNOMED, "193184006"),
    ("polyneuropathy due to type 2 diabetes", SNOMED, "713706002"),
    ("diabetic polyneuropathy", ICD10CM, "E11.42"),
    ("postherpetic neuralgia", SNOMED, "2177002"), ("postherpetic neuralgia", ICD10CM, "B02.29"),
    ("postherpetic polyneuropathy", SNOMED, "76462000"), ("postherpetic polyneuropathy", ICD10CM, "B02.23"),
    ("central pain syndrome", ICD10CM, "G89.0"), ("central post-stroke pain", SNOMED, "277286006"),
    ("phantom limb pain", SNOMED, "5771000119106"), ("phantom limb pain", ICD10CM, "G54.6"),
    ("atypical facial pain", SNOMED, "71303008"), ("atypical facial pain", ICD10CM, "G50.1"),
    ("CRPS type I", SNOMED, "734947007"), ("CRPS type I", ICD10CM, "G90.511"),
    ("CRPS type II", SNOMED, "408751001"), ("CRPS type II (causalgia)", ICD10CM, "G56.41"),
]


@pytest.mark.parametrize("what, system, code", INDICATIONS)
def test_r3_indications_are_recognised_in_snomed_ct_and_icd10cm(what, system, code):
    a = assess("p", [], [dx(system, code, rid="Condition/i")], as_of=AS_OF, terminology=default_terminology())
    assert a.indications == ("Condition/i",), what
    assert a.decision.value == "eligible"


@pytest.mark.parametrize("text", ["Central pain syndrome", "Phantom limb pain", "Postherpetic neuralgia",
                                  "Atypical facial pain"])
def test_r3_indications_are_recognised_by_name_alone(text):
    a = assess("p", [], [dx(None, None, text=text, rid="Condition/i")], as_of=AS_OF,
               terminology=default_terminology())
    assert a.indications == ("Condition/i",)


@pytest.mark.parametrize("system, code, display", [
    (SNOMED, "5602001", "Opioid abuse (disorder)"), (SNOMED, "75544000", "Opioid dependence (disorder)"),
    (ICD10CM, "F11.20", "Opioid dependence, uncomplicated"), (ICD10CM, "F11.10", "Opioid abuse, uncomplicated"),
    (None, None, None),
])
def test_active_opioid_use_disorder_without_remission_is_cannot_determine(system, code, display):
    condition = dx(system, code, display, text=None if code else "Opioid use disorder, severe")
    a = run(condition)
    assert a.decision.value == "cannot-determine"
    finding = next(f for f in a.findings if f.code == "opioid-use-disorder-active")
    assert "never appears in a medication list" in finding.text and "attest" in finding.text


@pytest.mark.parametrize("system, code, status", [
    (ICD10CM, "F11.21", "active"), (ICD10CM, "F11.11", "active"), (ICD10CM, "F11.91", "active"),
    (SNOMED, "191821007", "active"), (SNOMED, "191914006", "active"),
    (SNOMED, "75544000", "remission"), (ICD10CM, "F11.20", "resolved"),
])
def test_opioid_use_disorder_in_remission_is_a_caution(system, code, status):
    a = run(dx(system, code, status=status))
    assert a.decision.value == "eligible-with-cautions"
    assert "opioid-use-disorder-remission" in codes(a)


def current(code: str, name: str) -> MedicationExposure:
    return MedicationExposure("MedicationRequest/m", (Coding(RXNORM, code, name),), (name,), "active",
                              ExposureState.CURRENT)


@pytest.mark.parametrize("code, name", [("6813", "methadone"), ("1819", "buprenorphine"),
                                        ("351267", "buprenorphine 8 MG / naloxone 2 MG Sublingual Tablet")])
def test_methadone_or_buprenorphine_reads_not_for_opioid_therapy_and_never_says_stop(code, name):
    a = run(meds=[current(code, name)])
    text = next(f.text for f in a.findings if f.code == "opioid-current")
    assert a.decision.value == "contraindicated"
    assert "LDN is not for patients who need opioid therapy (004)" in text
    assert "must be stopped" not in text and "opioid-free" not in text


def test_an_oxycodone_order_still_says_the_opioid_must_be_stopped_before_ldn():
    text = next(f.text for f in run(meds=[current("7804", "oxycodone")]).findings if f.code == "opioid-current")
    assert "must be stopped" in text
