"""Checks on the FHIR ValueSets that hold every code list the clinical engine uses.

The files live in fhir_profiles/valuesets/ (see docs/CONTRACTS.md, section "ValueSets").
"""

import json
import re
from pathlib import Path

import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.valueset import ValueSet

VALUESET_DIR = Path(__file__).resolve().parents[1] / "fhir_profiles" / "valuesets"

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
KNOWN_SYSTEMS = {RXNORM, ATC, SNOMED, ICD10CM, "http://hl7.org/fhir/sid/ndc"}
PREFIX_SYSTEMS = {ATC, ICD10CM}
DESIGNATION_USE = ("https://fhir.ldn-app.org/CodeSystem/ldn-designation-use", "match-term")

VALUESET_IDS = [
    "opioids",
    "opioid-antidiarrheals",
    "opioid-antagonists",
    "naltrexone-products",
    "ldn-indications",
    "ldn-likely-responders",
    "ldn-unlikely-responders",
    "ldn-recommended-against",
    "ldn-insufficient-evidence",
    "ldn-contraindicated-conditions",
    "ldn-liver-caution",
    "opioid-use-disorder",
    "opioid-use-disorder-remission",
]
MEDICATION_SETS = ["opioids", "opioid-antidiarrheals", "opioid-antagonists", "naltrexone-products"]
CONDITION_SETS = [i for i in VALUESET_IDS if i not in MEDICATION_SETS]

# CLINICAL_RULES R2: every opioid it names must be recognisable by an RxNorm ingredient code.
R2_INGREDIENTS = [
    "morphine", "codeine", "hydrocodone", "oxycodone", "hydromorphone", "oxymorphone",
    "fentanyl", "methadone", "buprenorphine", "tramadol", "tapentadol", "meperidine",
    "levorphanol", "butorphanol", "pentazocine", "nalbuphine", "opium", "dihydrocodeine",
]

# Codes that may legitimately sit in two medication sets. Combination products with an
# opioid (buprenorphine/naloxone, morphine/naltrexone...) are listed only in `opioids`,
# so nothing is expected here today; add (system, code) pairs with a reason if that changes.
DOCUMENTED_MEDICATION_OVERLAPS: set = set()


def load(vid):
    return json.loads((VALUESET_DIR / f"ValueSet-{vid}.json").read_text(encoding="utf-8"))


def concepts(vs, system=None):
    for inc in vs["compose"]["include"]:
        if system is None or inc["system"] == system:
            for c in inc.get("concept", []):
                yield inc["system"], c


def match_terms(concept):
    return [
        d["value"]
        for d in concept.get("designation", [])
        if (d.get("use", {}).get("system"), d.get("use", {}).get("code")) == DESIGNATION_USE
    ]


def covers(vs, system, code):
    """The engine's matching rule: exact code, or listed prefix for ICD-10-CM and ATC."""
    for sys_, c in concepts(vs, system):
        if c["code"] == code:
            return True
        if sys_ in PREFIX_SYSTEMS and code.startswith(c["code"]):
            return True
    return False


@pytest.mark.parametrize("vid", VALUESET_IDS)
def test_each_valueset_file_parses_as_a_fhir_r4_valueset_with_the_contract_identity(vid):
    data = load(vid)
    ValueSet.model_validate(data)
    assert data["id"] == vid
    assert data["url"] == f"https://fhir.ldn-app.org/ValueSet/{vid}"
    assert data["status"] == "active"
    assert data["version"] == "1.0.0"
    assert data["experimental"] is False
    assert data["publisher"] == "LDN app team"
    assert len(data["description"]) > 200
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", data["name"])


@pytest.mark.parametrize("vid", VALUESET_IDS)
def test_each_valueset_has_one_include_per_known_system_with_explicit_concepts(vid):
    includes = load(vid)["compose"]["include"]
    systems = [inc["system"] for inc in includes]
    assert len(systems) == len(set(systems))
    assert set(systems) <= KNOWN_SYSTEMS
    for inc in includes:
        assert inc["concept"], inc["system"]
        codes = [c["code"] for c in inc["concept"]]
        assert len(codes) == len(set(codes)), inc["system"]
        assert all(c.get("display") for c in inc["concept"])
        assert "filter" not in inc and "valueSet" not in inc


@pytest.mark.parametrize("vid", VALUESET_IDS)
def test_every_match_term_uses_the_contract_designation_and_is_lower_case(vid):
    for _, c in concepts(load(vid)):
        for d in c.get("designation", []):
            assert (d["use"]["system"], d["use"]["code"]) == DESIGNATION_USE
            assert d["value"] == d["value"].lower().strip()
            assert len(d["value"]) >= 3, d["value"]


def test_the_designation_use_codesystem_defines_match_term_and_is_complete():
    data = json.loads((VALUESET_DIR / "CodeSystem-ldn-designation-use.json").read_text())
    CodeSystem.model_validate(data)
    assert data["url"] == DESIGNATION_USE[0]
    assert data["content"] == "complete"
    assert [c["code"] for c in data["concept"]] == [DESIGNATION_USE[1]]


@pytest.mark.parametrize("ingredient", R2_INGREDIENTS)
def test_every_opioid_named_in_rule_r2_has_an_rxnorm_ingredient_code_and_a_match_term(ingredient):
    hits = [c for _, c in concepts(load("opioids"), RXNORM) if c["display"].lower() == ingredient]
    assert len(hits) == 1, f"no RxNorm ingredient concept for {ingredient}"
    assert hits[0]["code"].isdigit()
    assert ingredient in match_terms(hits[0])


def test_opioid_ingredient_codes_match_the_cdc_mme_conversion_table():
    # Ingredient codes published in the CDC MME CodeSystem (cqframework/opioid-mme-r4).
    expected = {
        "codeine": "2670", "fentanyl": "4337", "hydrocodone": "5489", "hydromorphone": "3423",
        "methadone": "6813", "morphine": "7052", "oxycodone": "7804", "oxymorphone": "7814",
        "tapentadol": "787390", "tramadol": "10689", "buprenorphine": "1819", "opium": "7676",
    }
    by_name = {c["display"].lower(): c["code"] for _, c in concepts(load("opioids"), RXNORM)}
    for name, code in expected.items():
        assert by_name[name] == code, name


@pytest.mark.parametrize("term", [
    "oxycontin", "percocet", "vicodin", "norco", "duragesic", "suboxone", "subutex", "ultram",
    "nucynta", "dilaudid", "ms contin", "demerol", "tylenol with codeine", "paregoric", "opana",
    "methadose", "butrans", "sublocade", "talwin", "stadol", "nubain", "synalgos", "apadaz",
])
def test_common_opioid_brand_names_are_match_terms_of_the_opioid_set(term):
    all_terms = {t for _, c in concepts(load("opioids")) for t in match_terms(c)}
    assert term in all_terms


def test_no_code_appears_in_two_medication_sets_except_documented_ones():
    seen = {}
    overlaps = set()
    for vid in MEDICATION_SETS:
        for system, c in concepts(load(vid)):
            key = (system, c["code"])
            if key in seen and seen[key] != vid:
                overlaps.add(key)
            seen.setdefault(key, vid)
    assert overlaps <= DOCUMENTED_MEDICATION_OVERLAPS, sorted(overlaps - DOCUMENTED_MEDICATION_OVERLAPS)


def test_no_atc_prefix_in_one_medication_set_sweeps_in_a_code_of_another():
    sets = {vid: load(vid) for vid in MEDICATION_SETS}
    for vid, vs in sets.items():
        for other, ovs in sets.items():
            if other == vid:
                continue
            for _, c in concepts(ovs, ATC):
                assert not covers(vs, ATC, c["code"]), f"{vid} covers {c['code']} of {other}"


def test_no_match_term_is_shared_between_two_medication_sets():
    owner = {}
    for vid in MEDICATION_SETS:
        for _, c in concepts(load(vid)):
            for t in match_terms(c):
                assert owner.setdefault(t, vid) == vid, f"{t!r} in {owner[t]} and {vid}"


def test_match_terms_that_would_match_innocently_are_not_used():
    forbidden = {"oxy", "ms", "morph", "codone", "done", "opi", "bup", "dol", "ldn-"}
    for vid in VALUESET_IDS:
        for _, c in concepts(load(vid)):
            assert not forbidden & set(match_terms(c)), vid


def test_naltrexone_ingredient_7243_is_in_naltrexone_products_and_in_no_other_set():
    assert covers(load("naltrexone-products"), RXNORM, "7243")
    for vid in VALUESET_IDS:
        if vid != "naltrexone-products":
            assert not covers(load(vid), RXNORM, "7243"), vid


def test_naltrexone_products_cover_oral_tablets_injectable_and_naltrexone_bupropion():
    vs = load("naltrexone-products")
    for code in ["1483744", "637213", "1551468"]:
        assert covers(vs, RXNORM, code)
    assert covers(vs, ATC, "N07BB04") and covers(vs, ATC, "A08AA62")
    terms = {t for _, c in concepts(vs) for t in match_terms(c)}
    assert {"naltrexone", "vivitrol", "contrave", "low dose naltrexone", "ldn"} <= terms


def test_opioid_antagonist_combinations_are_classified_as_opioids_not_antagonists():
    # buprenorphine/naloxone film and tablet, Suboxone, pentazocine/naloxone
    for code in ["1010600", "351266", "1010603", "312289"]:
        assert covers(load("opioids"), RXNORM, code)
        assert not covers(load("opioid-antagonists"), RXNORM, code)
    assert covers(load("opioid-antagonists"), RXNORM, "7242")


def test_opioid_set_does_not_sweep_in_non_opioids_through_atc_groups():
    vs = load("opioids")
    # lofexidine (N07BC04), dextromethorphan (R05DA09), noscapine (R05DA07), loperamide (A07DA03)
    for code in ["N07BC04", "R05DA09", "R05DA07", "A07DA03", "A07DA01"]:
        assert not covers(vs, ATC, code), code
    for code in ["N02AA01", "N02AX02", "N02AJ06", "N07BC02", "N07BC51", "R05DA04", "A07DA02"]:
        assert covers(vs, ATC, code), code


def test_antidiarrheals_cover_loperamide_diphenoxylate_and_difenoxin_but_not_opium():
    vs = load("opioid-antidiarrheals")
    for code in ["A07DA01", "A07DA03", "A07DA04"]:
        assert covers(vs, ATC, code)
    assert not covers(vs, ATC, "A07DA02")
    terms = {t for _, c in concepts(vs) for t in match_terms(c)}
    assert {"loperamide", "imodium", "diphenoxylate", "lomotil", "difenoxin", "motofen"} <= terms


@pytest.mark.parametrize("vid,code", [
    ("ldn-indications", "M79.7"),
    ("ldn-indications", "G90.50"),
    ("ldn-indications", "G56.41"),
    ("ldn-indications", "E11.42"),
    ("ldn-indications", "M54.50"),
    ("ldn-likely-responders", "G90.511"),
    ("ldn-likely-responders", "M79.2"),
    ("ldn-unlikely-responders", "M47.816"),
    ("ldn-recommended-against", "K50.90"),
    ("ldn-insufficient-evidence", "G35"),
    ("ldn-insufficient-evidence", "G35.B1"),
    ("ldn-contraindicated-conditions", "K72.00"),
    ("ldn-contraindicated-conditions", "K70.31"),
    ("ldn-contraindicated-conditions", "B17.10"),
    ("ldn-contraindicated-conditions", "I85.11"),
    ("ldn-contraindicated-conditions", "K76.82"),
    ("opioid-use-disorder", "F11.20"),
])
def test_condition_sets_cover_the_icd10cm_codes_their_rule_names(vid, code):
    assert covers(load(vid), ICD10CM, code)


@pytest.mark.parametrize("code", ["K74.60", "K74.69", "K70.30", "K74", "R18.8", "B18.2"])
def test_compensated_cirrhosis_and_chronic_hepatitis_are_not_contraindications(code):
    assert not covers(load("ldn-contraindicated-conditions"), ICD10CM, code)


@pytest.mark.parametrize("code", ["E11.43", "G89.4", "H57.10", "M47.816", "K50.90"])
def test_indications_do_not_include_codes_outside_rule_r3(code):
    assert not covers(load("ldn-indications"), ICD10CM, code)


def test_likely_responders_are_a_subset_of_the_indications():
    ind = load("ldn-indications")
    for system, c in concepts(load("ldn-likely-responders")):
        assert covers(ind, system, c["code"]), c["code"]


@pytest.mark.parametrize("vid,snomed", [
    ("ldn-indications", "203082005"),
    ("ldn-likely-responders", "128200000"),
    ("ldn-unlikely-responders", "75320002"),
    ("ldn-recommended-against", "34000006"),
    ("ldn-insufficient-evidence", "24700007"),
    ("opioid-use-disorder", "5602001"),
    ("opioid-use-disorder", "75544000"),
])
def test_condition_sets_carry_their_snomed_concept(vid, snomed):
    assert covers(load(vid), SNOMED, snomed)


@pytest.mark.parametrize("vid,term", [
    ("ldn-indications", "fibromyalgia"),
    ("ldn-indications", "complex regional pain syndrome"),
    ("ldn-indications", "low back pain"),
    ("ldn-indications", "neuropathic corneal pain"),
    ("ldn-unlikely-responders", "spondylosis"),
    ("ldn-recommended-against", "crohn's disease"),
    ("ldn-insufficient-evidence", "multiple sclerosis"),
    ("ldn-contraindicated-conditions", "hepatic failure"),
    ("ldn-contraindicated-conditions", "acute hepatitis"),
    ("opioid-use-disorder", "opioid use disorder"),
])
def test_condition_sets_carry_name_match_terms(vid, term):
    terms = {t for _, c in concepts(load(vid)) for t in match_terms(c)}
    assert term in terms
