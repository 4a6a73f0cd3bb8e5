"""Property: any opioid exposure inside the washout window keeps every patient out of 'eligible'."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smart_app.clinical.terminology import MATCH_TERM_CODE, MATCH_TERM_SYSTEM, default_terminology
from smart_app.fhir.parse import patients_from_bundle
from smart_app.samples import SAMPLE_AS_OF, load_sample, sample_ids
from smart_app.services import assess_data

SAFE = {"eligible", "eligible-with-cautions"}
OPIOIDS = default_terminology().valuesets["opioids"]
CODINGS = [{"system": inc["system"], "code": c["code"], "display": c.get("display")}
           for inc in OPIOIDS["compose"]["include"] for c in inc["concept"]]
TERMS = sorted({d["value"] for inc in OPIOIDS["compose"]["include"] for c in inc["concept"]
                for d in c.get("designation", []) if d.get("use", {}).get("code") == MATCH_TERM_CODE
                and d["use"].get("system") == MATCH_TERM_SYSTEM})
CURRENT = {"MedicationStatement": ["active", "intended", "on-hold"],
           "MedicationRequest": ["active", "on-hold", "draft"],
           "MedicationDispense": ["in-progress", "preparation", "on-hold"]}


@st.composite
def medication_concepts(draw):
    """How the drug is named: a coding from the opioid ValueSet, or only a name (brand, salt, combination)."""
    if draw(st.booleans()):
        coding = dict(draw(st.sampled_from(CODINGS)))
        if draw(st.booleans()):
            coding.pop("display", None)
        return {"coding": [coding]}
    term = draw(st.sampled_from(TERMS))
    shape = draw(st.sampled_from(["{} 5 MG Oral Tablet", "{} hydrochloride", "acetaminophen 325 MG / {} 5 MG",
                                  "{}", "{} (patient reported)"]))
    return {"text": shape.format(term.title() if draw(st.booleans()) else term)}


@st.composite
def opioid_exposures(draw, pid: str, washout: int):
    rtype = draw(st.sampled_from(sorted(CURRENT)))
    concept = draw(medication_concepts())
    r = {"resourceType": rtype, "id": "prop-opioid", "subject": {"reference": f"Patient/{pid}"}}
    how = draw(st.sampled_from(["concept", "contained", "reference"]))
    extra = []
    if how == "concept":
        r["medicationCodeableConcept"] = concept
    elif how == "contained":
        r["contained"] = [{"resourceType": "Medication", "id": "m", "code": concept}]
        r["medicationReference"] = {"reference": "#m"}
    else:
        extra = [{"resourceType": "Medication", "id": "prop-med", "code": concept}]
        r["medicationReference"] = {"reference": "Medication/prop-med"}
    last = SAMPLE_AS_OF - timedelta(days=draw(st.integers(0, washout - 1)))
    if draw(st.booleans()):
        r["status"] = draw(st.sampled_from(CURRENT[rtype]))
    else:
        r["status"] = draw(st.sampled_from(["completed", "stopped"]))
    if rtype == "MedicationStatement":
        r["effectivePeriod"] = {"start": (last - timedelta(days=20)).isoformat(), "end": last.isoformat()}
    elif rtype == "MedicationRequest":
        r["intent"] = "order"
        r["authoredOn"] = (last - timedelta(days=30)).isoformat()
        r["dispenseRequest"] = {"validityPeriod": {"start": r["authoredOn"], "end": last.isoformat()}}
    else:
        supply = draw(st.integers(1, 30))
        r["whenHandedOver"] = (last - timedelta(days=supply)).isoformat()
        r["daysSupply"] = {"value": supply, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"}
    return [r, *extra]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_opioid_exposure_inside_the_washout_window_never_leaves_a_patient_eligible(data):
    pid = data.draw(st.sampled_from(sample_ids()))
    washout = data.draw(st.integers(7, 10))
    bundle = load_sample(pid)
    added = data.draw(opioid_exposures(pid, washout))
    bundle["entry"] = bundle["entry"] + [{"resource": r} for r in added]
    a = assess_data(patients_from_bundle(bundle)[pid], as_of=SAMPLE_AS_OF, washout_days=washout)
    assert a.decision.value not in SAFE, (added, [f.text for f in a.findings])
